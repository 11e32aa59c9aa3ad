/* A weight matrix as a file stores it (any ifn_dtype), rows being output features; the
 * kernels pack it (qweight.h). Embedding rows are read from it directly. A view may be a
 * slice of a larger matrix: a tensor-parallel shard takes some of its rows or columns. */
#ifndef IFN_WEIGHT_H
#define IFN_WEIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

typedef struct {
    ifn_dtype type;
    int64_t n_out;     /* rows */
    int64_t n_in;      /* values per row, a multiple of the type's block size */
    const void *data;  /* first row */
    size_t row_stride; /* bytes from one row to the next; 0 = ifn_dtype_row_bytes(type, n_in) */
} ifn_weight;

/* Bytes from one row to the next. */
size_t ifn_weight_stride(const ifn_weight *w);

/* dst [n_in] = row `row` of W in fp32 (embedding lookup). */
void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst);

/* Rows [first, first + n) of w. */
ifn_weight ifn_weight_rows(const ifn_weight *w, int64_t first, int64_t n);

/* Columns [first, first + n) of every row of w. IFN_ERR_INVALID_ARG if first or n does not
 * fall on the type's block boundary (a shard cannot split a quantization block). */
ifn_status ifn_weight_cols(const ifn_weight *w, int64_t first, int64_t n, ifn_weight *out);

#endif
