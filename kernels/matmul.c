#include "matmul.h"

/* Values of a weight row dequantized at a time: a multiple of every block size. */
#define CHUNK 256

void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst)
{
    size_t rb = ifn_dtype_row_bytes(w->type, w->n_in);
    ifn_dtype_to_f32(w->type, (const unsigned char *)w->data + (size_t)row * rb, dst, w->n_in);
}

void ifn_matmul(float *y, const float *x, const ifn_weight *w, int m)
{
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const size_t rb = ifn_dtype_row_bytes(w->type, n_in);
    const size_t chunk_bytes = ifn_dtype_row_bytes(w->type, CHUNK);
    #pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < n_out; o++) {
        const unsigned char *src = (const unsigned char *)w->data + (size_t)o * rb;
        for (int i = 0; i < m; i++) y[(size_t)i * n_out + o] = 0.0f;
        for (int64_t k0 = 0; k0 < n_in; k0 += CHUNK) {
            float wrow[CHUNK];
            int len = n_in - k0 < CHUNK ? (int)(n_in - k0) : CHUNK;
            ifn_dtype_to_f32(w->type, src + (size_t)(k0 / CHUNK) * chunk_bytes, wrow, len);
            for (int i = 0; i < m; i++) {
                const float *xi = x + (size_t)i * n_in + k0;
                float acc = 0.0f;
                for (int k = 0; k < len; k++) acc += xi[k] * wrow[k];
                y[(size_t)i * n_out + o] += acc;
            }
        }
    }
}
