/* A weight matrix as a file stores it (any ifn_dtype), rows being output features; the
 * kernels pack it (qweight.h). Embedding rows are read from it directly. A view may be a
 * slice of a larger matrix: a tensor-parallel shard takes some of its rows or columns.
 *
 * Integer weights with separate scales (type I8 or U4, `scales` set) are what quantizers
 * write (infernode quantize, GPTQ checkpoints): value(r, k) = scale(r, g) * (q(r, k) - zero(r, g))
 * with g = k / group (g = 0 when group is 0: one scale per row). The zero is 0 for I8 and, for
 * U4, zeros[r][g] (asymmetric) or 8 when zeros is NULL (symmetric). An act-order weight also
 * has `perm`: its stored column j holds input perm[j], so it multiplies x[perm[j]]; a rank's
 * share of an act-order matrix's inputs (ifn_weight_cols_act_order) may also hold padding
 * columns, perm[j] = -1, whose values are 0 and which multiply 0. */
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
    /* I8 / U4 with scales (NULL for every other weight): */
    const void *scales;    /* [n_out][scale_stride] of scale_type */
    ifn_dtype scale_type;  /* F32, F16 or BF16 */
    const uint8_t *zeros;  /* U4: [n_out][scale_stride] zero points 0..15; NULL: 8 */
    int group;             /* inputs per scale: 32, 64, 128 (U4), 32 (I8), or 0: per row */
    int64_t scale_stride;  /* scales (and zeros) from one row to the next */
    const int32_t *perm;   /* [n_in] act-order input of each stored column (-1: padding), or NULL */
    int64_t n_inputs;      /* with perm: the inputs (x's width), which perm's entries index; 0: n_in */
    float act_scale;       /* static int8 activation scale (SmoothQuant), 0: dynamic per row */
} ifn_weight;

/* The inputs x has for w: n_inputs with a padded act-order permutation, else n_in. */
static inline int64_t ifn_weight_inputs(const ifn_weight *w)
{
    return w->perm && w->n_inputs ? w->n_inputs : w->n_in;
}

/* Bytes from one row to the next. */
size_t ifn_weight_stride(const ifn_weight *w);

/* dst [n_in] = row `row` of W in fp32, scales applied, in stored column order (embedding
 * lookup, re-quantization). */
void ifn_weight_row(const ifn_weight *w, int64_t row, float *dst);

/* Rows [first, first + n) of w. */
ifn_weight ifn_weight_rows(const ifn_weight *w, int64_t first, int64_t n);

/* Columns [first, first + n) of every row of w. IFN_ERR_INVALID_ARG if first or n does not
 * fall on the type's block boundary or its scale groups (a shard cannot split a quantization
 * block), or if w is act-order and the range is not all of its columns (its columns are not
 * the inputs' order). */
ifn_status ifn_weight_cols(const ifn_weight *w, int64_t first, int64_t n, ifn_weight *out);

/* Rows rows[0..n) of w, in that order, copied into one allocation returned in *owned (the
 * caller frees it after use). For a tensor-parallel shard whose rows are not a range. */
ifn_status ifn_weight_gather_rows(const ifn_weight *w, const int32_t *rows, int64_t n, ifn_weight *out, void **owned);

/* Inputs [first, first + n) of an act-order integer weight (perm set, type U4 or I8 with
 * scales): the stored columns that hold them, in stored order, with their inputs renumbered
 * from 0, copied into one allocation returned in *owned. A group's columns are scattered over
 * the inputs, so a range of inputs takes part of each group: each group's part is padded with
 * zero columns (perm -1) to whole chunks of 32, 64 or 128 columns (the chunk dividing the
 * group that packs into the fewest bytes), and each chunk keeps its group's scale and zero
 * point; the total is padded to whole groups of the original size. Per-row scales (group 0)
 * need no padding. The result computes exactly what w's columns for those inputs compute. */
ifn_status ifn_weight_cols_act_order(const ifn_weight *w, int64_t first, int64_t n, ifn_weight *out, void **owned);

/* Checks an integer weight's companions (when it has scales): type I8 or U4, scale_type F32/F16/BF16, the group (I8:
 * 0 or 32; U4: 0, 32, 64 or 128) dividing n_in, zeros only with U4 and each 0..15, scale_stride
 * at least the groups per row; and a perm's entries being every input once (n_inputs of them;
 * the other entries -1, padding). The message says which. */
ifn_status ifn_weight_check_quant(const ifn_weight *w);

#endif
