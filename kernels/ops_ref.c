/* Scalar references of ops.h, and the scalar ISA table built from them. Plain C compiled
 * without ISA flags (so without FMA contraction): these are the definitions the SIMD kernels
 * are tested against, and what INFERNODE_ISA=scalar runs. */
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "ops_isa.h"

void ifn_rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Pair i's frequency: the spec's, or theta^(-2i / head_dim). */
static double rope_freq_ref(const ifn_rope_spec *rs, int i, int head_dim)
{
    return rs->freq ? rs->freq[i] : pow((double)rs->theta, -2.0 * i / head_dim);
}

void ifn_rope_ref(float *x, int n_heads, int head_dim, double pos, const ifn_rope_spec *rs)
{
    const ifn_rope_layout layout = rs->layout;
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* The angle in double: at positions in the 10^5 range fp32 loses ~1e-2 rad. */
        double angle = pos * rope_freq_ref(rs, i, head_dim);
        float c = (float)cos(angle), s = (float)sin(angle);
        int a = layout == IFN_ROPE_INTERLEAVED ? 2 * i : i;
        int b = layout == IFN_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (long)h * head_dim;
            float x0 = xh[a], x1 = xh[b];
            xh[a] = x0 * c - x1 * s;
            xh[b] = x0 * s + x1 * c;
        }
    }
}

void ifn_softmax_ref(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void ifn_silu_mul_ref(float *gate, const float *up, int n)
{
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void ifn_layernorm_ref(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    double sum = 0.0, ss = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    const double mean = sum / n;
    for (int i = 0; i < n; i++) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    const double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = (float)(((double)x[i] - mean) * inv * w[i] + (b ? b[i] : 0.0));
}

void ifn_gelu_ref(float *x, int n, ifn_gelu_kind kind)
{
    for (int i = 0; i < n; i++) {
        const double v = x[i];
        if (kind == IFN_GELU_TANH) {
            /* (1 + tanh u) / 2 = 1 / (1 + exp(-2u)): no cancellation for large negative u */
            const double u = 0.79788456080286535588 * (v + 0.044715 * v * v * v); /* sqrt(2 / pi) */
            x[i] = (float)(v / (1.0 + exp(-2.0 * u)));
        } else {
            x[i] = (float)(0.5 * v * erfc(-v * 0.70710678118654752440));
        }
    }
}

static void gelu_tanh_scalar(float *x, int n) { ifn_gelu_ref(x, n, IFN_GELU_TANH); }

/* Element i of a KV row of type t, widened; and its store, rounded to nearest even. */
static float kv_get(const void *row, ifn_kv_type t, size_t i)
{
    switch (t) {
    case IFN_KV_F16: return ifn_fp16_to_f32(((const uint16_t *)row)[i]);
    case IFN_KV_BF16: return ifn_bf16_to_f32(((const uint16_t *)row)[i]);
    default: return ((const float *)row)[i];
    }
}

static void kv_put(void *row, ifn_kv_type t, size_t i, float f)
{
    switch (t) {
    case IFN_KV_F16: ((uint16_t *)row)[i] = ifn_f32_to_fp16(f); break;
    case IFN_KV_BF16: ((uint16_t *)row)[i] = ifn_f32_to_bf16(f); break;
    default: ((float *)row)[i] = f; break;
    }
}

void ifn_kv_store_ref(void *dst, const float *src, int n, ifn_kv_type type)
{
    for (int i = 0; i < n; i++) kv_put(dst, type, (size_t)i, src[i]);
}

void ifn_kv_load_ref(float *dst, const void *src, int n, ifn_kv_type type)
{
    for (int i = 0; i < n; i++) dst[i] = kv_get(src, type, (size_t)i);
}

void ifn_rope_kv_ref(void *x, ifn_kv_type type, int n_rows, size_t row_stride, int n_heads, int head_dim,
                     double delta, const ifn_rope_spec *rs)
{
    const ifn_rope_layout layout = rs->layout;
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double angle = delta * rope_freq_ref(rs, i, head_dim);
        float c = (float)cos(angle), s = (float)sin(angle);
        size_t a = layout == IFN_ROPE_INTERLEAVED ? 2 * (size_t)i : (size_t)i;
        size_t b = layout == IFN_ROPE_INTERLEAVED ? 2 * (size_t)i + 1 : (size_t)(i + half);
        for (int r = 0; r < n_rows; r++)
            for (int h = 0; h < n_heads; h++) {
                size_t off = (size_t)r * row_stride + (size_t)h * head_dim;
                float x0 = kv_get(x, type, off + a), x1 = kv_get(x, type, off + b);
                kv_put(x, type, off + a, x0 * c - x1 * s);
                kv_put(x, type, off + b, x0 * s + x1 * c);
            }
    }
}

static float score_ref(const float *q, const ops_attn_item *it, int r)
{
    size_t off = (size_t)r * it->row_stride;
    float dot = 0.0f;
    for (int d = 0; d < it->head_dim; d++) dot += q[d] * kv_get(it->k, it->type, off + (size_t)d);
    return dot * it->scale;
}

static void attend_ref(float *out, const float *q, int n_q, const ops_attn_item *it)
{
    const int hd = it->head_dim;
    for (int j = 0; j < n_q; j++) {
        const float *qj = q + (size_t)j * hd;
        float *oj = out + (size_t)j * hd;
        for (int d = 0; d < hd; d++) oj[d] = 0.0f;
        float max = -INFINITY;
        int seen = 0;
        for (int r = 0; r < it->n_rows; r++) {
            if (it->mask && !it->mask[r]) continue;
            float s = score_ref(qj, it, r);
            if (!seen || s > max) max = s;
            seen = 1;
        }
        if (!seen) continue;
        double sum = 0.0;
        for (int r = 0; r < it->n_rows; r++) {
            if (it->mask && !it->mask[r]) continue;
            float p = expf(score_ref(qj, it, r) - max);
            sum += p;
            size_t off = (size_t)r * it->row_stride;
            for (int d = 0; d < hd; d++) oj[d] += p * kv_get(it->v, it->type, off + (size_t)d);
        }
        float inv = (float)(1.0 / sum);
        for (int d = 0; d < hd; d++) oj[d] *= inv;
    }
}

void ifn_attention_kv_ref(float *out, const float *q, int n_tokens, const ifn_attn_heads *heads,
                          const ifn_kv_rows *kv, const uint8_t *mask)
{
    const int hd = heads->head_dim;
    const size_t es = ifn_kv_type_size(kv->type), head_stride = kv->head_stride ? kv->head_stride : (size_t)hd;
    for (int t = 0; t < n_tokens; t++)
        for (int h = 0; h < heads->n_heads; h++) {
            size_t g = (size_t)((heads->head0 + h) / heads->group - heads->kv_head0);
            ops_attn_item it = {
                .k = (const char *)kv->k + g * head_stride * es,
                .v = (const char *)kv->v + g * head_stride * es,
                .type = kv->type,
                .row_stride = kv->row_stride,
                .n_rows = mask ? kv->n_rows : kv->n_rows - n_tokens + 1 + t,
                .mask = mask ? mask + (size_t)t * kv->n_rows : NULL,
                .head_dim = hd,
                .scale = 1.0f / sqrtf((float)hd),
            };
            size_t off = ((size_t)t * heads->n_heads + (size_t)h) * hd;
            attend_ref(out + off, q + off, 1, &it);
        }
}

/* The table kernel: x0 * c + x1 * (-s) is x0 * c - x1 * s exactly, so this rotates bit for
 * bit as ifn_rope_ref does. */
static void rope_scalar(float *x, int n_heads, int head_dim, const float *cs, ifn_rope_layout layout)
{
    const float *C = cs, *S = cs + head_dim;
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = layout == IFN_ROPE_INTERLEAVED ? 2 * i : i;
            int b = layout == IFN_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            float x0 = xh[a], x1 = xh[b];
            xh[a] = x0 * C[a] + x1 * S[a];
            xh[b] = x1 * C[b] + x0 * S[b];
        }
    }
}

static bool attend_supports_any(int head_dim)
{
    (void)head_dim;
    return true;
}

const ops_kernels ops_kernels_scalar = {
    .isa = IFN_ISA_SCALAR,
    .rmsnorm = ifn_rmsnorm_ref,
    .rope = rope_scalar,
    .softmax = ifn_softmax_ref,
    .silu_mul = ifn_silu_mul_ref,
    .layernorm = ifn_layernorm_ref,
    .gelu_tanh = gelu_tanh_scalar,
    .kv_store = ifn_kv_store_ref,
    .kv_load = ifn_kv_load_ref,
    .attend_supports = attend_supports_any,
    .attend = attend_ref,
};
