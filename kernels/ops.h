/* Element-wise and row operations of the transformer, scalar reference versions.
 * Shapes are in the comments; all buffers are fp32 and row-major. */
#ifndef IFN_OPS_H
#define IFN_OPS_H

/* How the two values that one RoPE rotation acts on are paired within a head:
 *  INTERLEAVED: (2i, 2i+1)              - GGUF "llama" files, llama2.c checkpoints
 *  HALVES:      (i, i + head_dim / 2)   - Hugging Face checkpoints ("NeoX" style) */
typedef enum { IFN_ROPE_INTERLEAVED, IFN_ROPE_HALVES } ifn_rope_layout;

const char *ifn_rope_layout_name(ifn_rope_layout l);

/* out[n] = x[n] / sqrt(mean(x^2) + eps) * w[n]. out may alias x. */
void ifn_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* Rotates x [n_heads][head_dim] in place for position pos: pair i turns by the angle
 * pos * theta^(-2i / head_dim). A negative pos rotates back. */
void ifn_rope(float *x, int n_heads, int head_dim, double pos, float theta, ifn_rope_layout layout);

/* x[n] = softmax(x[n]), numerically stable. */
void ifn_softmax(float *x, int n);

/* gate[n] = silu(gate[n]) * up[n]. */
void ifn_silu_mul(float *gate, const float *up, int n);

/* Causal attention of one query token over n_ctx cached positions.
 *   out     [n_heads][head_dim]
 *   q       [n_heads][head_dim]
 *   k, v    [n_ctx][kv_stride] - head g's vector at offset g * head_dim of each row
 *   scratch [n_ctx]
 * Query head h reads KV head h / (n_heads / n_kv_heads); scores are scaled by 1/sqrt(head_dim). */
void ifn_attention(float *out, const float *q, const float *k, const float *v, int n_ctx,
                   int kv_stride, int n_heads, int n_kv_heads, int head_dim, float *scratch);

#endif
