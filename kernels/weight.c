#include "weight.h"

void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst)
{
    size_t rb = ifn_dtype_row_bytes(w->type, w->n_in);
    ifn_dtype_to_f32(w->type, (const unsigned char *)w->data + (size_t)row * rb, dst, w->n_in);
}
