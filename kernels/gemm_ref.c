/* Scalar reference kernels: the definition every optimised kernel is tested against.
 *
 * A8 (exact integer part, then this float order, which SIMD kernels reproduce lane by lane):
 *     acc = 0
 *     for each group g:  acc = fmaf(scale[n][g] * act_scale[i][g], (float)dot_g, acc)
 *                        asymmetric W4: acc = fmaf(min[n][g] * act_scale[i][g], (float)gsum[i][g], acc)
 *     y[i][n] = acc
 *   (each product of two scales is rounded to fp32 before the fmaf)
 *   where dot_g = sum over the group of q_w * q_x with q_w the signed weight integer (W8: q;
 *   W4 symmetric: u - 8; W4 asymmetric: u).
 * A16: y = sum_k bf16(x) * w_bf16 in fp32, in k order (SIMD kernels sum in other orders).
 * F32: y = sum_k x * w in fp32, in k order. */
#include "gemm.h"

#include <math.h>

static float weight_f32(const ifn_qweight *w, int64_t n, int64_t k) { return qweight_value(w, n, k); }

static void ref_f32(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    int64_t n_end = rb1 * QW_ROWS < w->n_out ? rb1 * QW_ROWS : w->n_out;
    for (int64_t n = rb0 * QW_ROWS; n < n_end; n++)
        for (int i = 0; i < a->m; i++) {
            const float *x = a->f32 + (size_t)i * a->k_pad;
            float acc = 0.0f;
            for (int64_t k = 0; k < w->n_in; k++) acc = fmaf(x[k], weight_f32(w, n, k), acc);
            y[(size_t)i * ldy + n] = acc;
        }
}

static void ref_a16(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    int64_t n_end = rb1 * QW_ROWS < w->n_out ? rb1 * QW_ROWS : w->n_out;
    for (int64_t n = rb0 * QW_ROWS; n < n_end; n++)
        for (int i = 0; i < a->m; i++) {
            const uint16_t *x = a->bf16 + (size_t)i * a->k_pad;
            float acc = 0.0f;
            for (int64_t k = 0; k < w->n_in; k++) acc = fmaf(ifn_bf16_to_f32(x[k]), weight_f32(w, n, k), acc);
            y[(size_t)i * ldy + n] = acc;
        }
}

/* The signed integer of weight (n, k) in the A8 recipe. */
static int weight_int(const ifn_qweight *w, int64_t n, int64_t k)
{
    size_t blk = (size_t)(n / QW_ROWS), r = (size_t)(n % QW_ROWS), k4 = (size_t)(k / 4), b = (size_t)(k % 4);
    if (w->kind == QW_W8) return ((const int8_t *)w->data)[blk * QW_ROWS * (size_t)w->k_pad + k4 * 64 + r * 4 + b];
    uint8_t byte = ((const uint8_t *)w->data)[blk * QW_ROWS * (size_t)w->k_pad / 2 + (k4 / 2) * 64 + r * 4 + b];
    int u = (k4 & 1) ? byte >> 4 : byte & 0x0f;
    return w->asym ? u : u - 8;
}

static void ref_a8(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    int64_t n_end = rb1 * QW_ROWS < w->n_out ? rb1 * QW_ROWS : w->n_out;
    for (int64_t n = rb0 * QW_ROWS; n < n_end; n++) {
        size_t blk = (size_t)(n / QW_ROWS), r = (size_t)(n % QW_ROWS);
        for (int i = 0; i < a->m; i++) {
            const int8_t *q = a->q + (size_t)i * a->k_pad;
            float acc = 0.0f;
            for (int g = 0; g < w->n_groups; g++) {
                int32_t dot = 0;
                for (int64_t k = (int64_t)g * w->group; k < (int64_t)(g + 1) * w->group; k++)
                    dot += weight_int(w, n, k) * q[k];
                size_t pi = (blk * (size_t)w->n_groups + (size_t)g) * QW_ROWS + r;
                float as = a->scale[(size_t)i * w->n_groups + g];
                acc = fmaf(w->scales[pi] * as, (float)dot, acc);
                if (w->asym) acc = fmaf(w->mins[pi] * as, (float)a->gsum[(size_t)i * w->n_groups + g], acc);
            }
            y[(size_t)i * ldy + n] = acc;
        }
    }
}

bool gemm_lookup_scalar(const ifn_qweight *w, int m, gemm_kernel *out)
{
    (void)m;
    switch (w->compute) {
    case QW_COMPUTE_F32: *out = (gemm_kernel){ ref_f32, "scalar f32", IFN_ISA_SCALAR }; return true;
    case QW_COMPUTE_A16: *out = (gemm_kernel){ ref_a16, "scalar a16", IFN_ISA_SCALAR }; return true;
    case QW_COMPUTE_A8: *out = (gemm_kernel){ ref_a8, "scalar a8", IFN_ISA_SCALAR }; return true;
    case QW_COMPUTE_COUNT: break;
    }
    return false;
}
