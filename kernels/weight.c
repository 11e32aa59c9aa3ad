#include "weight.h"

#include <stdbool.h>
#include <stdlib.h>

size_t ifn_weight_stride(const ifn_weight *w)
{
    return w->row_stride ? w->row_stride : ifn_dtype_row_bytes(w->type, w->n_in);
}

static float scale_at(const ifn_weight *w, int64_t row, int64_t g)
{
    size_t i = (size_t)row * (size_t)w->scale_stride + (size_t)g;
    switch (w->scale_type) {
    case IFN_DTYPE_F16: return ifn_fp16_to_f32(((const uint16_t *)w->scales)[i]);
    case IFN_DTYPE_BF16: return ifn_bf16_to_f32(((const uint16_t *)w->scales)[i]);
    default: return ((const float *)w->scales)[i];
    }
}

void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst)
{
    ifn_dtype_to_f32(w->type, (const unsigned char *)w->data + (size_t)row * ifn_weight_stride(w), dst, w->n_in);
    if (!w->scales) return;
    for (int64_t k = 0; k < w->n_in; k++) {
        int64_t g = w->group ? k / w->group : 0;
        float zero = 0.0f;
        if (w->type == IFN_DTYPE_U4) zero = w->zeros ? (float)w->zeros[(size_t)row * (size_t)w->scale_stride + (size_t)g] : 8.0f;
        dst[k] = scale_at(w, row, g) * (dst[k] - zero);
    }
}

static size_t scale_bytes(const ifn_weight *w) { return w->scale_type == IFN_DTYPE_F32 ? 4 : 2; }

ifn_weight ifn_weight_rows(const ifn_weight *w, int64_t first, int64_t n)
{
    ifn_weight s = *w;
    s.row_stride = ifn_weight_stride(w);
    s.data = (const unsigned char *)w->data + (size_t)first * s.row_stride;
    s.n_out = n;
    if (w->scales) {
        s.scales = (const unsigned char *)w->scales + (size_t)first * (size_t)w->scale_stride * scale_bytes(w);
        if (w->zeros) s.zeros = w->zeros + (size_t)first * (size_t)w->scale_stride;
    }
    return s;
}

ifn_status ifn_weight_cols(const ifn_weight *w, int64_t first, int64_t n, ifn_weight *out)
{
    int bs = ifn_dtype_block_size(w->type);
    if (w->perm && (first != 0 || n != w->n_in))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "columns [%lld, %lld) of an act-order matrix: its stored columns are "
                             "permuted inputs, so no range of inputs is a range of columns", (long long)first,
                             (long long)(first + n));
    if (first % bs || n % bs || first < 0 || first + n > w->n_in)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "columns [%lld, %lld) of a %s matrix with %lld columns do not fall on its "
                             "%d-value blocks", (long long)first, (long long)(first + n), ifn_dtype_name(w->type),
                             (long long)w->n_in, bs);
    if (w->scales && w->group && (first % w->group || n % w->group))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "columns [%lld, %lld) of a %s matrix do not fall on its groups of %d "
                             "inputs per scale", (long long)first, (long long)(first + n), ifn_dtype_name(w->type),
                             w->group);
    *out = *w;
    out->row_stride = ifn_weight_stride(w);
    out->data = (const unsigned char *)w->data + ifn_dtype_row_bytes(w->type, first);
    out->n_in = n;
    if (w->scales && w->group) {
        out->scales = (const unsigned char *)w->scales + (size_t)(first / w->group) * scale_bytes(w);
        if (w->zeros) out->zeros = w->zeros + first / w->group;
    }
    return IFN_OK;
}

static ifn_status check_scales(const ifn_weight *w)
{
    if (w->type != IFN_DTYPE_I8 && w->type != IFN_DTYPE_U4)
        return ifn_error_set(IFN_ERR_FORMAT, "integer values must be i8 or u4, not %s", ifn_dtype_name(w->type));
    if (w->scale_type != IFN_DTYPE_F32 && w->scale_type != IFN_DTYPE_F16 && w->scale_type != IFN_DTYPE_BF16)
        return ifn_error_set(IFN_ERR_FORMAT, "scales must be f32, f16 or bf16, not %s", ifn_dtype_name(w->scale_type));
    bool group_ok = w->type == IFN_DTYPE_I8 ? (w->group == 0 || w->group == 32)
                                            : (w->group == 0 || w->group == 32 || w->group == 64 || w->group == 128);
    if (!group_ok)
        return ifn_error_set(IFN_ERR_FORMAT, "%s values cannot have groups of %d inputs per scale (%s)",
                             ifn_dtype_name(w->type), w->group,
                             w->type == IFN_DTYPE_I8 ? "32 or one per row" : "32, 64, 128 or one per row");
    if (w->group && w->n_in % w->group != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%lld inputs are not a whole number of groups of %d", (long long)w->n_in,
                             w->group);
    int64_t n_groups = w->group ? w->n_in / w->group : 1;
    if (w->scale_stride < n_groups)
        return ifn_error_set(IFN_ERR_FORMAT, "%lld scales per row, %lld groups of inputs", (long long)w->scale_stride,
                             (long long)n_groups);
    if (w->zeros && w->type != IFN_DTYPE_U4)
        return ifn_error_set(IFN_ERR_FORMAT, "zero points go with u4 values only, not %s", ifn_dtype_name(w->type));
    if (w->zeros)
        for (int64_t r = 0; r < w->n_out; r++)
            for (int64_t g = 0; g < n_groups; g++) {
                uint8_t z = w->zeros[(size_t)r * (size_t)w->scale_stride + (size_t)g];
                if (z > 15)
                    return ifn_error_set(IFN_ERR_FORMAT, "zero point %u of row %lld, group %lld is not 0..15", z,
                                         (long long)r, (long long)g);
            }
    return IFN_OK;
}

ifn_status ifn_weight_check_quant(const ifn_weight *w)
{
    if (w->scales) CHECK(check_scales(w));
    if (!w->perm) return IFN_OK;
    uint8_t *seen = calloc((size_t)w->n_in, 1);
    if (!seen) return ifn_error_set(IFN_ERR_NOMEM, "no memory to check a permutation of %lld", (long long)w->n_in);
    for (int64_t j = 0; j < w->n_in; j++) {
        int32_t p = w->perm[j];
        if (p < 0 || p >= w->n_in || seen[p]) {
            free(seen);
            return ifn_error_set(IFN_ERR_FORMAT, "act-order permutation entry %lld is %d: %s", (long long)j, p,
                                 p < 0 || p >= w->n_in ? "not an input" : "an input listed twice");
        }
        seen[p] = 1;
    }
    free(seen);
    return IFN_OK;
}
