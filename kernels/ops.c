#include "ops.h"

#include <math.h>

const char *ifn_rope_layout_name(ifn_rope_layout l)
{
    return l == IFN_ROPE_INTERLEAVED ? "interleaved" : "halves";
}

void ifn_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

void ifn_rope(float *x, int n_heads, int head_dim, double pos, float theta, ifn_rope_layout layout)
{
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* The angle in double: at positions in the 10^5 range fp32 loses ~1e-2 rad. */
        double angle = pos * pow((double)theta, -2.0 * i / head_dim);
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

void ifn_softmax(float *x, int n)
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

void ifn_silu_mul(float *gate, const float *up, int n)
{
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void ifn_attention(float *out, const float *q, const float *k, const float *v, int n_ctx,
                   int kv_stride, int n_heads, int n_kv_heads, int head_dim, float *scratch)
{
    int group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int h = 0; h < n_heads; h++) {
        const float *qh = q + (long)h * head_dim;
        long kv_off = (long)(h / group) * head_dim;
        for (int t = 0; t < n_ctx; t++) {
            const float *kt = k + (long)t * kv_stride + kv_off;
            float dot = 0.0f;
            for (int d = 0; d < head_dim; d++) dot += qh[d] * kt[d];
            scratch[t] = dot * scale;
        }
        ifn_softmax(scratch, n_ctx);
        float *oh = out + (long)h * head_dim;
        for (int d = 0; d < head_dim; d++) oh[d] = 0.0f;
        for (int t = 0; t < n_ctx; t++) {
            const float *vt = v + (long)t * kv_stride + kv_off;
            float p = scratch[t];
            for (int d = 0; d < head_dim; d++) oh[d] += p * vt[d];
        }
    }
}
