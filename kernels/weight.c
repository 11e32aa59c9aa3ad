#include "weight.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

static size_t row_bytes(const ifn_weight *w) { return ifn_dtype_row_bytes(w->type, w->n_in); }

ifn_status ifn_weight_gather_rows(const ifn_weight *w, const int32_t *rows, int64_t n, ifn_weight *out, void **owned)
{
    *owned = NULL;
    const size_t rb = row_bytes(w), sb = w->scales ? (size_t)w->scale_stride * scale_bytes(w) : 0,
                 zb = w->zeros ? (size_t)w->scale_stride : 0;
    for (int64_t i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= w->n_out)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "row %d of a matrix with %lld rows", rows[i], (long long)w->n_out);
    /* [n][sb] scales first (aligned as malloc aligns), then [n][rb] values, [n][zb] zeros */
    unsigned char *block = malloc((size_t)n * (sb + rb + zb) + 1);
    if (!block) return ifn_error_set(IFN_ERR_NOMEM, "no memory to gather %lld rows of %lld values", (long long)n,
                                     (long long)w->n_in);
    unsigned char *scales = block, *values = scales + (size_t)n * sb, *zeros = values + (size_t)n * rb;
    const unsigned char *data = w->data;
    for (int64_t i = 0; i < n; i++) {
        memcpy(values + (size_t)i * rb, data + (size_t)rows[i] * ifn_weight_stride(w), rb);
        if (sb) memcpy(scales + (size_t)i * sb, (const unsigned char *)w->scales + (size_t)rows[i] * sb, sb);
        if (zb) memcpy(zeros + (size_t)i * zb, w->zeros + (size_t)rows[i] * zb, zb);
    }
    *out = *w;
    out->n_out = n;
    out->data = values;
    out->row_stride = rb;
    if (sb) out->scales = scales;
    if (zb) out->zeros = zeros;
    *owned = block;
    return IFN_OK;
}

/* Integer value (U4 nibble or I8 byte) of stored column j in row r, and its store. */
static unsigned get_int(const ifn_weight *w, int64_t r, int64_t j)
{
    const unsigned char *row = (const unsigned char *)w->data + (size_t)r * ifn_weight_stride(w);
    return w->type == IFN_DTYPE_U4 ? (row[j / 2] >> (4 * (j & 1))) & 15u : row[j];
}

static void put_int(const ifn_weight *w, unsigned char *data, int64_t r, int64_t j, unsigned v)
{
    unsigned char *row = data + (size_t)r * row_bytes(w);
    if (w->type == IFN_DTYPE_U4) row[j / 2] = (unsigned char)((row[j / 2] & ~(15u << (4 * (j & 1)))) | v << (4 * (j & 1)));
    else row[j] = (unsigned char)v;
}

/* The chunk (32, 64 or 128 columns, dividing the group) for which the groups' parts, each
 * padded to whole chunks, pack into the fewest bytes: 4 or 8 bits per column, and the packed
 * form's fp32 scale (and fp32 minimum with zero points) per chunk. */
static int64_t best_chunk(const ifn_weight *w, const int64_t *count, int64_t n_groups)
{
    const double bits = w->type == IFN_DTYPE_U4 ? 4 : 8, param_bits = w->zeros ? 64 : 32;
    int64_t best = 0;
    double best_bits = 0;
    for (int64_t c = 32; c <= 128; c *= 2) {
        if (w->group % c) continue;
        double total = 0;
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t chunks = (count[g] + c - 1) / c;
            total += (double)(chunks * c) * bits + (double)chunks * param_bits;
        }
        if (!best || total < best_bits) {
            best = c;
            best_bits = total;
        }
    }
    return best;
}

ifn_status ifn_weight_cols_act_order(const ifn_weight *w, int64_t first, int64_t n, ifn_weight *out, void **owned)
{
    *owned = NULL;
    const int64_t n_inputs = ifn_weight_inputs(w);
    if (!w->perm || !w->scales || (w->type != IFN_DTYPE_U4 && w->type != IFN_DTYPE_I8))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "only act-order integer weights with scales are regrouped by input, "
                             "not a %s matrix%s", ifn_dtype_name(w->type), w->perm ? "" : " without a permutation");
    if (first < 0 || n <= 0 || first + n > n_inputs)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "inputs [%lld, %lld) of a matrix with %lld inputs", (long long)first,
                             (long long)(first + n), (long long)n_inputs);
    const int64_t group = w->group ? w->group : w->n_in, n_groups = w->n_in / group;
    int64_t *count = calloc((size_t)n_groups, sizeof *count);
    if (!count) return ifn_error_set(IFN_ERR_NOMEM, "no memory to regroup %lld inputs", (long long)n);
    for (int64_t j = 0; j < w->n_in; j++) count[j / group] += w->perm[j] >= first && w->perm[j] < first + n;
    /* per row (one group): the inputs' columns as they are; else whole chunks per group, and
     * whole 128s in all so that any --quant group divides the width */
    const int64_t chunk = w->group ? best_chunk(w, count, n_groups) : n;
    int64_t width = 0;
    for (int64_t g = 0; g < n_groups; g++) width += (count[g] + chunk - 1) / chunk * chunk;
    if (w->group) width = (width + 127) / 128 * 128;
    const int64_t n_chunks = width / chunk;
    const size_t sb = scale_bytes(w), rows = (size_t)w->n_out;
    /* perm [width], scales [n_out][n_chunks], values [n_out][width], zeros [n_out][n_chunks] */
    ifn_weight r = *w;
    r.n_in = width;
    r.n_inputs = n;
    r.group = w->group ? (int)chunk : 0;
    r.scale_stride = n_chunks;
    r.row_stride = 0;
    const size_t values_bytes = rows * row_bytes(&r), zeros_bytes = w->zeros ? rows * (size_t)n_chunks : 0;
    unsigned char *block = malloc(rows * (size_t)n_chunks * sb + (size_t)width * sizeof(int32_t) + values_bytes +
                                  zeros_bytes + 1);
    /* chunk_group [n_chunks]: the source group of each chunk (-1: padding to whole 128s);
     * source [width]: the stored column of each new column (-1: padding) */
    int64_t *chunk_group = malloc((size_t)n_chunks * sizeof *chunk_group), *source = malloc((size_t)width * sizeof *source);
    if (!block || !chunk_group || !source) {
        free(count);
        free(block);
        free(chunk_group);
        free(source);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory to regroup %lld inputs of a %lld-row matrix", (long long)n,
                             (long long)w->n_out);
    }
    int32_t *perm = (int32_t *)block;
    unsigned char *scales = (unsigned char *)(perm + width), *values = scales + rows * (size_t)n_chunks * sb,
                  *zeros = values + values_bytes;
    int64_t at = 0, c = 0;
    for (int64_t g = 0; g < n_groups; g++) {
        const int64_t end = at + (count[g] + chunk - 1) / chunk * chunk;
        for (int64_t j = g * group; j < (g + 1) * group; j++)
            if (w->perm[j] >= first && w->perm[j] < first + n) {
                source[at] = j;
                perm[at++] = w->perm[j] - (int32_t)first;
            }
        for (; at < end; at++) source[at] = perm[at] = -1;
        for (; c * chunk < end; c++) chunk_group[c] = g;
    }
    for (; at < width; at++) source[at] = perm[at] = -1;
    for (; c < n_chunks; c++) chunk_group[c] = -1;
    free(count);
    for (size_t row = 0; row < rows; row++) {
        for (int64_t k = 0; k < n_chunks; k++) {
            const int64_t g = chunk_group[k];
            unsigned char *dst = scales + (row * (size_t)n_chunks + (size_t)k) * sb;
            if (g >= 0) memcpy(dst, (const unsigned char *)w->scales + (row * (size_t)w->scale_stride + (size_t)g) * sb, sb);
            else memset(dst, 0, sb);
            if (w->zeros) zeros[row * (size_t)n_chunks + (size_t)k] = g >= 0 ? w->zeros[row * (size_t)w->scale_stride + (size_t)g] : 8;
        }
        for (int64_t j = 0; j < width; j++) {
            /* a padding column holds its chunk's zero point: its value is 0 */
            unsigned pad = w->type == IFN_DTYPE_I8 ? 0 : w->zeros ? zeros[row * (size_t)n_chunks + (size_t)(j / chunk)] : 8;
            put_int(&r, values, (int64_t)row, j, source[j] >= 0 ? get_int(w, (int64_t)row, source[j]) : pad);
        }
    }
    free(chunk_group);
    free(source);
    r.data = values;
    r.scales = scales;
    r.zeros = w->zeros ? zeros : NULL;
    r.perm = perm;
    *out = r;
    *owned = block;
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
    const int64_t n_inputs = ifn_weight_inputs(w);
    if (n_inputs > w->n_in)
        return ifn_error_set(IFN_ERR_FORMAT, "an act-order permutation of %lld columns cannot hold %lld inputs",
                             (long long)w->n_in, (long long)n_inputs);
    uint8_t *seen = calloc((size_t)n_inputs, 1);
    if (!seen) return ifn_error_set(IFN_ERR_NOMEM, "no memory to check a permutation of %lld", (long long)w->n_in);
    int64_t n_padding = 0;
    for (int64_t j = 0; j < w->n_in; j++) {
        int32_t p = w->perm[j];
        if (p == -1 && n_inputs < w->n_in) {
            n_padding++;
            continue;
        }
        if (p < 0 || p >= n_inputs || seen[p]) {
            free(seen);
            return ifn_error_set(IFN_ERR_FORMAT, "act-order permutation entry %lld is %d: %s", (long long)j, p,
                                 p < 0 || p >= n_inputs ? "not an input" : "an input listed twice");
        }
        seen[p] = 1;
    }
    free(seen);
    if (n_padding != w->n_in - n_inputs)
        return ifn_error_set(IFN_ERR_FORMAT, "an act-order permutation of %lld columns lists %lld of its %lld inputs",
                             (long long)w->n_in, (long long)(w->n_in - n_padding), (long long)n_inputs);
    return IFN_OK;
}
