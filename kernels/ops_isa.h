/* The per-ISA kernels behind ops.h, and the drivers that split calls over threads.
 *
 * Each ISA level has one table of kernels (ops_ref.c: scalar, ops_avx2.c, ops_avx512.c);
 * ops.c picks the active level's table once and runs it through the drivers below, which
 * own the OpenMP work split. Tests and the benchmark call the drivers with a table of their
 * choice to run exactly one ISA's kernels. */
#ifndef IFN_OPS_ISA_H
#define IFN_OPS_ISA_H

#include <stdbool.h>

#include "isa.h"
#include "ops.h"

/* One attention work item: n_q query heads that share one KV head, over the rows one token
 * sees. Rows are read only where visible (r < n_rows and, with a mask, mask[r] != 0). */
typedef struct {
    const void *k, *v;  /* this KV head's vector in row 0 */
    ifn_kv_type type;
    size_t row_stride;  /* elements */
    int n_rows;
    const uint8_t *mask; /* NULL or [n_rows] */
    int head_dim;
    float scale;        /* 1/sqrt(head_dim) */
} ops_attn_item;

typedef struct {
    ifn_isa isa;
    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
    /* Rotates x [n_heads][head_dim] by the table of ops_rope_table. */
    void (*rope)(float *x, int n_heads, int head_dim, const float *cs, ifn_rope_layout layout);
    void (*softmax)(float *x, int n);
    void (*silu_mul)(float *gate, const float *up, int n);
    void (*layernorm)(float *out, const float *x, const float *w, const float *b, int n, float eps);
    void (*gelu_tanh)(float *x, int n);
    void (*kv_store)(void *dst, const float *src, int n, ifn_kv_type type);
    void (*kv_load)(float *dst, const void *src, int n, ifn_kv_type type);
    /* attend handles head_dim iff attend_supports(head_dim); the driver falls back to the
     * next lower ISA's table otherwise (scalar supports all). out and q are [n_q][head_dim]. */
    bool (*attend_supports)(int head_dim);
    void (*attend)(float *out, const float *q, int n_q, const ops_attn_item *it);
} ops_kernels;

extern const ops_kernels ops_kernels_scalar; /* ops_ref.c */
extern const ops_kernels ops_kernels_avx2;   /* ops_avx2.c */
extern const ops_kernels ops_kernels_avx512; /* ops_avx512.c */

/* The table of exactly level isa (AMX uses the AVX-512 table), whether or not this machine
 * can run it: the caller checks ifn_isa_best(). */
const ops_kernels *ops_kernels_for(ifn_isa isa);

/* The table of ifn_isa_active(), decided at the first call (scalar if INFERNODE_ISA is bad;
 * gemm_run reports that error). */
const ops_kernels *ops_kernels_active(void);

/* RoPE table for one position (head_dim <= IFN_OPS_HEAD_DIM_MAX), cs[2 * head_dim]: C = cs, S = cs + head_dim, such that
 * x'[d] = x[d] * C[d] + x[partner(d)] * S[d], partner = d ^ 1 (INTERLEAVED) or d +- head_dim/2
 * (HALVES); S is -sin on the first of a pair and +sin on the second. cos and sin of the angle
 * are computed in double and rounded once, as ifn_rope_ref does. */
void ops_rope_table(float *cs, int head_dim, double pos, const ifn_rope_spec *rs);

/* The drivers: what the ifn_* functions of ops.h do, with the kernels of k. */
void ops_rmsnorm_rows(const ops_kernels *k, float *out, const float *x, const float *w, int n_rows, int n, float eps);
void ops_rope_rows(const ops_kernels *k, float *x, int n_rows, size_t row_stride, int n_heads, int head_dim,
                   double pos0, const ifn_rope_spec *rs);
void ops_rope_kv(const ops_kernels *k, void *x, ifn_kv_type type, int n_rows, size_t row_stride, int n_heads,
                 int head_dim, double delta, const ifn_rope_spec *rs);
void ops_silu_mul(const ops_kernels *k, float *gate, const float *up, int n);
void ops_layernorm_rows(const ops_kernels *k, float *out, const float *x, const float *w, const float *b, int n_rows,
                        int n, float eps);
void ops_gelu(const ops_kernels *k, float *x, int n, ifn_gelu_kind kind);
void ops_attention(const ops_kernels *k, float *out, const float *q, int n_tokens, const ifn_attn_heads *heads,
                   const ifn_kv_rows *kv, const uint8_t *mask);

#endif
