/* Element-wise and row operations of the transformer: RMSNorm, LayerNorm, RoPE, softmax,
 * SiLU·mul, GELU, bias rows and attention over a KV cache stored as fp32, fp16 or bf16.
 *
 * Every function here runs the kernels of the active ISA (isa.h; chosen once, at the first
 * call, from ifn_isa_active()) and splits large calls over OpenMP threads; a call made from
 * inside a parallel region runs on the calling thread only. The *_ref functions are the
 * scalar references the SIMD kernels are tested against (tests/kernels/test_ops.c), and are
 * themselves tested against NumPy (tests/kernels/test_ops_ref.py). All float buffers are
 * fp32 and row-major; shapes are in the comments. */
#ifndef IFN_OPS_H
#define IFN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* How the two values that one RoPE rotation acts on are paired within a head:
 *  INTERLEAVED: (2i, 2i+1)              - GGUF "llama" files, llama2.c checkpoints
 *  HALVES:      (i, i + head_dim / 2)   - Hugging Face checkpoints ("NeoX" style) */
typedef enum { IFN_ROPE_INTERLEAVED, IFN_ROPE_HALVES } ifn_rope_layout;

const char *ifn_rope_layout_name(ifn_rope_layout l);

/* Element type of the KV cache. fp16 and bf16 are stored rounded to nearest even (the
 * conversions of dtype.h) and widened to fp32 exactly when read. */
typedef enum { IFN_KV_F32 = 0, IFN_KV_F16, IFN_KV_BF16, IFN_KV_COUNT } ifn_kv_type;

/* "f32", "f16", "bf16". */
const char *ifn_kv_type_name(ifn_kv_type t);

/* Bytes of one element: 4, 2, 2. */
size_t ifn_kv_type_size(ifn_kv_type t);

/* Heads wider than this run the scalar reference (every model we know has head_dim <= 256). */
#define IFN_OPS_HEAD_DIM_MAX 256

/* ---- RMSNorm ---------------------------------------------------------------------------- */

/* out[n] = x[n] / sqrt(mean(x^2) + eps) * w[n]. out may alias x. */
void ifn_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* The same for each of n_rows rows: out[n_rows][n], x[n_rows][n]. out may alias x. */
void ifn_rmsnorm_rows(float *out, const float *x, const float *w, int n_rows, int n, float eps);

/* ---- LayerNorm --------------------------------------------------------------------------- */

/* For each of n_rows rows: out[n] = (x[n] - mean) / sqrt(var + eps) * w[n] + b[n], var the mean
 * of the squared deviations (GPT-2 / GPT-BigCode). b NULL: no bias. out may alias x. */
void ifn_layernorm_rows(float *out, const float *x, const float *w, const float *b, int n_rows, int n, float eps);

/* ---- RoPE ------------------------------------------------------------------------------- */

/* How a model stretches its rotations beyond the context it was trained for (docs/formats.md,
 * "RoPE scaling"). Every variant only changes pair i's frequency; YaRN also scales cos and sin
 * by attn_factor, which the forward pass applies as attn_factor^2 on the attention scores (so
 * that a rotation stays a rotation: the KV ring's shift turns cached keys by -d exactly). */
typedef enum {
    IFN_ROPE_SCALING_NONE,
    IFN_ROPE_SCALING_LINEAR, /* every frequency / factor */
    IFN_ROPE_SCALING_LLAMA3, /* Llama 3.1: low frequencies / factor, high kept, a smooth band between */
    IFN_ROPE_SCALING_YARN,   /* ramp between / factor and kept over beta_slow..beta_fast rotations */
} ifn_rope_scaling_kind;

typedef struct {
    ifn_rope_scaling_kind kind;
    float factor;                            /* LINEAR, LLAMA3, YARN: > 0 */
    int orig_ctx;                            /* LLAMA3, YARN: the original training context */
    float low_freq_factor, high_freq_factor; /* LLAMA3 */
    float beta_fast, beta_slow;              /* YARN */
    float attn_factor;                       /* YARN: cos and sin scale; 1 otherwise */
} ifn_rope_scaling;

/* "none", "linear", "llama3", "yarn". */
const char *ifn_rope_scaling_name(ifn_rope_scaling_kind k);

/* freq[head_dim / 2]: pair i's angle per position under scaling sc (NULL: none), from the base
 * frequencies theta^(-2i / head_dim) / pair_div[i] (pair_div NULL: all 1; GGUF's rope_freqs
 * tensor). In double, the formulas of Hugging Face transformers' _compute_*_parameters. */
void ifn_rope_freqs(double *freq, int head_dim, float theta, const ifn_rope_scaling *sc, const float *pair_div);

/* What every rotation of a model needs: the pair layout and the frequencies. */
typedef struct {
    ifn_rope_layout layout;
    float theta;        /* used when freq is NULL */
    const double *freq; /* [head_dim / 2] pair i turns by pos * freq[i]; NULL: theta^(-2i / head_dim) */
} ifn_rope_spec;

/* Rotates x [n_heads][head_dim] in place for position pos: pair i turns by the angle
 * pos * freq[i]. Any pos works: ifn_rope(x, ..., -n, ...) undoes a rotation by n positions.
 * head_dim must be even. */
void ifn_rope(float *x, int n_heads, int head_dim, double pos, const ifn_rope_spec *rs);

/* The same for n_rows rows x [n_rows][row_stride] (heads at the start of each row), row t at
 * position pos0 + t: the queries or keys of a batch of consecutive tokens. */
void ifn_rope_rows(float *x, int n_rows, size_t row_stride, int n_heads, int head_dim, double pos0,
                   const ifn_rope_spec *rs);

/* Rotates n_rows cached rows x [n_rows][row_stride] of type `type` (n_heads heads of head_dim
 * at the start of each row) all by the angle of delta positions: the KV ring's re-rotation of
 * kept keys after a shift (delta = -n_discard moves them n_discard positions back). fp16/bf16
 * rows are widened, rotated in fp32 and rounded back (so each shift rounds the keys once
 * more). A head-major cache takes one call per KV head, n_heads = 1, row_stride = head_dim. */
void ifn_rope_kv(void *x, ifn_kv_type type, int n_rows, size_t row_stride, int n_heads, int head_dim, double delta,
                 const ifn_rope_spec *rs);

/* ---- softmax, SiLU ---------------------------------------------------------------------- */

/* x[n] = softmax(x[n]), numerically stable. One row, one thread: rows are short (a context or
 * a vocabulary) and callers with many rows parallelise over rows. */
void ifn_softmax(float *x, int n);

/* gate[n] = silu(gate[n]) * up[n], silu(g) = g / (1 + exp(-g)). */
void ifn_silu_mul(float *gate, const float *up, int n);

/* GELU, in place:
 *   TANH: x / 2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (GPT-2, StarCoder in llama.cpp,
 *         Hugging Face "gelu_pytorch_tanh" / "gelu_new"); SIMD as x / (1 + exp(-2u)), the same
 *         function.
 *   ERF:  x / 2 (1 + erf(x / sqrt(2)))                      (Hugging Face "gelu"); the scalar
 *         definition on every ISA (libm erff per value). */
typedef enum { IFN_GELU_TANH, IFN_GELU_ERF } ifn_gelu_kind;
void ifn_gelu(float *x, int n, ifn_gelu_kind kind);

/* x[n_rows][n] += b[n]: a linear layer's bias on each of its output rows. */
void ifn_add_bias_rows(float *x, const float *b, int n_rows, int n);

/* ---- KV cache rows ---------------------------------------------------------------------- */

/* dst[n] (of type) = src[n] rounded to nearest even; the cache's write of one K or V row. */
void ifn_kv_store(void *dst, const float *src, int n, ifn_kv_type type);

/* dst[n] = src[n] (of type) widened to fp32 (exact). */
void ifn_kv_load(float *dst, const void *src, int n, ifn_kv_type type);

/* The cache rows one attention call reads. Row r's vector of KV head g starts at element
 * r * row_stride + g * head_stride of k (and of v):
 *   token-major [rows][n_kv_heads][head_dim]: row_stride = n_kv_heads * head_dim, head_stride = 0
 *   head-major  [n_kv_heads][capacity][head_dim]: row_stride = head_dim,
 *               head_stride = capacity * head_dim - each thread then streams one contiguous
 *               block, which reads DRAM faster when the cache does not fit in L3 (measured,
 *               TinyLlama, 4096 fp16 rows: 0.54 ms against 0.80 ms token-major).
 * With a mask the rows may be in any order (a ring's slots): attention does not care where a
 * position sits, since RoPE already put the position into each key. */
typedef struct {
    const void *k, *v;  /* elements of type */
    ifn_kv_type type;
    size_t row_stride;  /* elements from one row to the next */
    size_t head_stride; /* elements from one KV head to the next; 0 means head_dim */
    int n_rows;         /* rows 0 .. n_rows-1 may be read */
} ifn_kv_rows;

/* ---- attention -------------------------------------------------------------------------- */

/* Which KV head each query head reads: query head h of q (0-based) reads KV head
 * (head0 + h) / group - kv_head0 of the cache rows.
 *   whole model:   { .n_heads = H, .head_dim = d, .group = H / H_kv }   (head0 = kv_head0 = 0)
 *   a tensor-parallel shard (tp_shard): n_heads = shard.n_heads, head0 = shard.head0,
 *                  kv_head0 = shard.kv_head0, group = the model's H / H_kv - a shard may
 *                  start or end in the middle of a GQA group. */
typedef struct {
    int n_heads;  /* query heads in q and out */
    int head_dim;
    int group;    /* query heads per KV head in the whole model (1: MHA) */
    int head0;    /* global index of q's first head */
    int kv_head0; /* global index of the cache's first KV head */
} ifn_attn_heads;

/* Attention of n_tokens query tokens over the cache rows of kv.
 *   out  [n_tokens][n_heads][head_dim]
 *   q    [n_tokens][n_heads][head_dim]
 *   mask NULL: causal by count, the new tokens being the last n_tokens rows: token t sees rows
 *             0 .. kv->n_rows - n_tokens + t (so kv->n_rows >= n_tokens);
 *        else [n_tokens][kv->n_rows]: token t sees the rows r with mask[t][r] != 0.
 * Rows a token does not see are never read (they may hold anything); a token that sees no row
 * gets zeros. Scores are scaled by 1/sqrt(head_dim). Parallel over tokens x KV heads (x
 * query-head subgroups when there are fewer of those than threads); one KV head's query
 * heads share each widened K/V row. */
void ifn_attention_kv(float *out, const float *q, int n_tokens, const ifn_attn_heads *heads, const ifn_kv_rows *kv,
                      const uint8_t *mask);

/* ---- scalar references (ops_ref.c): single-threaded, plain C, the definitions ----------- */

void ifn_rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps);
void ifn_rope_ref(float *x, int n_heads, int head_dim, double pos, const ifn_rope_spec *rs);
void ifn_rope_kv_ref(void *x, ifn_kv_type type, int n_rows, size_t row_stride, int n_heads, int head_dim,
                     double delta, const ifn_rope_spec *rs);
void ifn_softmax_ref(float *x, int n);
void ifn_silu_mul_ref(float *gate, const float *up, int n);
/* Mean and variance summed in double (two passes), the result rounded once per element. */
void ifn_layernorm_ref(float *out, const float *x, const float *w, const float *b, int n, float eps);
/* Each value in double (TANH as x / (1 + exp(-2u)), ERF as x erfc(-x / sqrt 2) / 2: neither
 * cancels for large negative x), rounded once. */
void ifn_gelu_ref(float *x, int n, ifn_gelu_kind kind);
void ifn_kv_store_ref(void *dst, const float *src, int n, ifn_kv_type type);
void ifn_kv_load_ref(float *dst, const void *src, int n, ifn_kv_type type);
/* Two passes per (token, head) over the visible rows: the maximum score, then
 * out = sum_r exp(s_r - max) v_r / sum_r exp(s_r - max), all in fp32. */
void ifn_attention_kv_ref(float *out, const float *q, int n_tokens, const ifn_attn_heads *heads,
                          const ifn_kv_rows *kv, const uint8_t *mask);

#endif
