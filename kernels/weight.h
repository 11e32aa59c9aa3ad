/* A weight matrix as a file stores it (any ifn_dtype), rows being output features; the
 * kernels pack it (qweight.h). Embedding rows are read from it directly. */
#ifndef IFN_WEIGHT_H
#define IFN_WEIGHT_H

#include <stdint.h>

#include "dtype.h"

typedef struct {
    ifn_dtype type;
    int64_t n_out;     /* rows */
    int64_t n_in;      /* values per row, a multiple of the type's block size */
    const void *data;  /* n_out rows of ifn_dtype_row_bytes(type, n_in) bytes */
} ifn_weight;

/* dst [n_in] = row `row` of W in fp32 (embedding lookup). */
void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst);

#endif
