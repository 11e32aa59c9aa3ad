#include "weight.h"

size_t ifn_weight_stride(const ifn_weight *w)
{
    return w->row_stride ? w->row_stride : ifn_dtype_row_bytes(w->type, w->n_in);
}

void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst)
{
    ifn_dtype_to_f32(w->type, (const unsigned char *)w->data + (size_t)row * ifn_weight_stride(w), dst, w->n_in);
}

ifn_weight ifn_weight_rows(const ifn_weight *w, int64_t first, int64_t n)
{
    ifn_weight s = *w;
    s.row_stride = ifn_weight_stride(w);
    s.data = (const unsigned char *)w->data + (size_t)first * s.row_stride;
    s.n_out = n;
    return s;
}

ifn_status ifn_weight_cols(const ifn_weight *w, int64_t first, int64_t n, ifn_weight *out)
{
    int bs = ifn_dtype_block_size(w->type);
    if (first % bs || n % bs || first < 0 || first + n > w->n_in)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "columns [%lld, %lld) of a %s matrix with %lld columns do not fall on its "
                             "%d-value blocks", (long long)first, (long long)(first + n), ifn_dtype_name(w->type),
                             (long long)w->n_in, bs);
    *out = *w;
    out->row_stride = ifn_weight_stride(w);
    out->data = (const unsigned char *)w->data + ifn_dtype_row_bytes(w->type, first);
    out->n_in = n;
    return IFN_OK;
}
