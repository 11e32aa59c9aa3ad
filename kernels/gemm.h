/* y = x W^T for packed weights: activation preparation, kernel choice, threads.
 *
 * Kernels are chosen per call from the active ISA (see isa.h), the weight's kind and recipe,
 * and the number of activation rows m (few rows stream weights; many rows reuse them). Each
 * ISA's file offers its kernels through a lookup that refuses what it cannot do (its
 * supports() gate); the choice then falls back to the next lower ISA, down to the scalar
 * reference, which supports everything. */
#ifndef IFN_GEMM_H
#define IFN_GEMM_H

#include <stdint.h>

#include "isa.h"
#include "qweight.h"
#include "status.h"

/* Activations prepared once per call for the weight's recipe, shared by all threads. */
typedef struct {
    int m;
    int64_t k_pad;
    const float *f32;   /* F32:  [m][k_pad] zero-padded */
    const uint16_t *bf16; /* A16: [m][k_pad] bf16, zero-padded */
    const int8_t *q;    /* A8:   [m][k_pad] int8, zero-padded */
    const float *scale; /* A8:   [m][n_groups] activation scales, per row and weight group */
    const int32_t *gsum; /* A8:  [m][n_groups] sum of q over each weight group */
} gemm_act;

/* A kernel computes y[i][n] (row stride ldy) for all m rows i and for the weight rows n of
 * row blocks [rb0, rb1); rows n >= n_out are not written. */
typedef void (*gemm_kernel_fn)(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0,
                               int64_t rb1);

typedef struct {
    gemm_kernel_fn fn;
    const char *name; /* e.g. "avx512-vnni w4a8 gemv" */
    ifn_isa isa;
} gemm_kernel;

/* Per-caller scratch for prepared activations; grows as needed. Not thread-safe: one per
 * thread of control (one per sequence step driver). */
typedef struct gemm_scratch gemm_scratch;
ifn_status gemm_scratch_create(gemm_scratch **out);
void gemm_scratch_destroy(gemm_scratch *s);
/* Grows the scratch for gemm_run of up to m rows on w now, with its pages resident, so that
 * later calls allocate nothing and memory stays flat while serving. */
ifn_status gemm_scratch_reserve(gemm_scratch *s, int m, const ifn_qweight *w);

/* y [m][n_out] = x [m][n_inputs] . W^T with the best kernel for the active ISA. */
ifn_status gemm_run(float *y, const float *x, int m, const ifn_qweight *w, gemm_scratch *s);

/* y[j] [m][w[j]->n_out] = x [m][n_inputs] . w[j]^T for n_w weights on the same input (Q, K and
 * V; gate and up). When the weights share a recipe (compute, n_in, k_pad, group, static
 * activation scale, no act-order), x is prepared once for all of them, and one parallel
 * region runs them all, each thread taking its share of every weight's row blocks with no
 * barrier in between; otherwise it is gemm_run on each. The same y as gemm_run on each. */
ifn_status gemm_run_many(float *const *y, const float *x, int m, const ifn_qweight *const *w, int n_w, gemm_scratch *s);

/* The same with the kernel of exactly `isa` (IFN_ERR_UNSUPPORTED if that ISA has none for
 * this weight and m, or the machine lacks it). For tests and the benchmark. */
ifn_status gemm_run_isa(float *y, const float *x, int m, const ifn_qweight *w, gemm_scratch *s, ifn_isa isa);

/* The same with exactly kernel k (from a gemm_lookup_* for w and m), without asking whether the
 * machine can run it: the caller vouches for that. For tests that run kernels under emulation. */
ifn_status gemm_run_kernel(float *y, const float *x, int m, const ifn_qweight *w, gemm_scratch *s, const gemm_kernel *k);

/* The kernel gemm_run would use at isa for (w, m), falling back to lower ISAs; never fails
 * (the scalar reference supports everything). */
gemm_kernel gemm_choose(const ifn_qweight *w, int m, ifn_isa isa);

/* Per-ISA lookups (gemm_ref.c, gemm_avx2.c, gemm_avx512*.c, gemm_amx.c). Each returns false
 * if it has no kernel for (w, m). */
bool gemm_lookup_scalar(const ifn_qweight *w, int m, gemm_kernel *out);
bool gemm_lookup_avx2(const ifn_qweight *w, int m, gemm_kernel *out);
bool gemm_lookup_avx512(const ifn_qweight *w, int m, gemm_kernel *out);
bool gemm_lookup_amx(const ifn_qweight *w, int m, gemm_kernel *out);

/* Quantizes one weight group's span x[n] of an activation row to q[n]: with static_scale > 0
 * that scale, else max|x|/127; q = round-to-nearest-even(x / scale) clamped to [-127, 127]
 * (NaN to -127). Writes the scale and returns the sum of q. The AVX-512 one (used when the
 * kernel's ISA is AVX-512 or AMX) gives exactly the scalar reference's bytes. */
int32_t gemm_quantize_group_ref(const float *x, int64_t n, float static_scale, int8_t *q, float *scale);
int32_t gemm_quantize_group_avx512(const float *x, int64_t n, float static_scale, int8_t *q, float *scale);

#endif
