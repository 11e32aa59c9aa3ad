/* Linear layers: y = x W^T with W stored in any ifn_dtype, rows of W being output features.
 * This is the scalar reference every optimised path is tested against. */
#ifndef IFN_MATMUL_H
#define IFN_MATMUL_H

#include <stdint.h>

#include "dtype.h"

typedef struct {
    ifn_dtype type;
    int64_t n_out;     /* rows */
    int64_t n_in;      /* values per row, a multiple of the type's block size */
    const void *data;  /* n_out rows of ifn_dtype_row_bytes(type, n_in) bytes */
} ifn_weight;

/* y [m][n_out] = x [m][n_in] . W^T. Parallel over output rows with OpenMP. */
void ifn_matmul(float *y, const float *x, const ifn_weight *w, int m);

/* dst [n_in] = row `row` of W in fp32 (embedding lookup). */
void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst);

#endif
