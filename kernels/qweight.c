#include "qweight.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static const char *const kind_names[QW_KIND_COUNT] = { "f32", "f16", "bf16", "w8", "w4" };

ifn_status qw_spec_parse(const char *name, qw_spec *out)
{
    qw_spec s = { 0 };
    char base[16] = { 0 }, grp[16] = { 0 }, extra[16] = { 0 };
    if (strcmp(name, "f32") == 0) s = (qw_spec){ QW_F32, QW_COMPUTE_F32, 0, false };
    else if (strcmp(name, "f16") == 0) s = (qw_spec){ QW_F16, QW_COMPUTE_F32, 0, false };
    else if (strcmp(name, "bf16") == 0) s = (qw_spec){ QW_BF16, QW_COMPUTE_A16, 0, false };
    else if (strcmp(name, "w8a8") == 0) s = (qw_spec){ QW_W8, QW_COMPUTE_A8, 0, false };
    else if (strcmp(name, "w8a8-g32") == 0) s = (qw_spec){ QW_W8, QW_COMPUTE_A8, 32, false };
    else if (sscanf(name, "%15[^-]-%15[^-]-%15s", base, grp, extra) >= 2 &&
             (strcmp(base, "w4a8") == 0 || strcmp(base, "w4a16") == 0) && (!extra[0] || strcmp(extra, "asym") == 0)) {
        s.kind = QW_W4;
        s.compute = base[3] == '8' ? QW_COMPUTE_A8 : QW_COMPUTE_A16;
        s.asym = extra[0] != '\0';
        if (strcmp(grp, "pc") == 0) s.group = 0;
        else if (strcmp(grp, "g32") == 0) s.group = 32;
        else if (strcmp(grp, "g64") == 0) s.group = 64;
        else if (strcmp(grp, "g128") == 0) s.group = 128;
        else goto bad;
    } else {
        goto bad;
    }
    *out = s;
    return IFN_OK;
bad:
    return ifn_error_set(IFN_ERR_INVALID_ARG,
                         "quantization '%s' is not one of f32, f16, bf16, w8a8, w8a8-g32, "
                         "w4a8-{g32,g64,g128,pc}[-asym], w4a16-{g32,g64,g128,pc}[-asym]", name);
}

void qw_spec_name(const qw_spec *spec, char *buf, int cap)
{
    switch (spec->kind) {
    case QW_F32: case QW_F16: case QW_BF16:
        snprintf(buf, (size_t)cap, "%s", kind_names[spec->kind]);
        break;
    case QW_W8:
        snprintf(buf, (size_t)cap, spec->group ? "w8a8-g%d" : "w8a8", spec->group);
        break;
    case QW_W4: {
        char g[8];
        if (spec->group) snprintf(g, sizeof g, "g%d", spec->group);
        else snprintf(g, sizeof g, "pc");
        snprintf(buf, (size_t)cap, "w4%s-%s%s", spec->compute == QW_COMPUTE_A8 ? "a8" : "a16", g,
                 spec->asym ? "-asym" : "");
        break;
    }
    case QW_KIND_COUNT: snprintf(buf, (size_t)cap, "?"); break;
    }
}

qw_spec qw_spec_for_dtype(ifn_dtype t)
{
    switch (t) {
    case IFN_DTYPE_F16: return (qw_spec){ QW_F16, QW_COMPUTE_F32, 0, false };
    case IFN_DTYPE_BF16: return (qw_spec){ QW_BF16, QW_COMPUTE_A16, 0, false };
    case IFN_DTYPE_Q8_0: return (qw_spec){ QW_W8, QW_COMPUTE_A8, 32, false };
    case IFN_DTYPE_Q4_0: return (qw_spec){ QW_W4, QW_COMPUTE_A8, 32, false };
    case IFN_DTYPE_Q4_1: return (qw_spec){ QW_W4, QW_COMPUTE_A8, 32, true };
    case IFN_DTYPE_Q4_K: return (qw_spec){ QW_W4, QW_COMPUTE_A8, 32, true };
    case IFN_DTYPE_Q6_K: case IFN_DTYPE_Q5_0: case IFN_DTYPE_Q5_1: case IFN_DTYPE_Q5_K: case IFN_DTYPE_Q3_K:
    case IFN_DTYPE_Q2_K: case IFN_DTYPE_IQ4_NL:
        return (qw_spec){ QW_W8, QW_COMPUTE_A8, 32, false };
    default: return (qw_spec){ QW_F32, QW_COMPUTE_F32, 0, false };
    }
}

int qw_fit_group(int64_t n_in, int group)
{
    for (int g = 128; g >= 32; g /= 2)
        if (g <= group && n_in % g == 0) return g;
    return 0;
}

qw_spec qw_spec_for_weight(const ifn_weight *w)
{
    if (!w->scales) return qw_spec_for_dtype(w->type);
    if (w->type == IFN_DTYPE_I8) return (qw_spec){ QW_W8, QW_COMPUTE_A8, w->group, false };
    return (qw_spec){ QW_W4, QW_COMPUTE_A8, w->group, w->zeros != NULL };
}

/* Integers with scales whose values and scales are copied as they are. */
static bool int_copy(const qw_spec *spec, const ifn_weight *src)
{
    if (!src->scales || spec->group != src->group) return false;
    if (spec->kind == QW_W8) return src->type == IFN_DTYPE_I8;
    return spec->kind == QW_W4 && src->type == IFN_DTYPE_U4 && spec->asym == (src->zeros != NULL);
}

/* The GGUF block types whose integers and scales are copied as they are. */
static bool block_copy(const qw_spec *spec, ifn_dtype src)
{
    if (spec->kind == QW_W8) return ifn_dtype_is_w8_exact(src) && spec->group == 32;
    if (spec->kind == QW_W4)
        return spec->group == 32 && ((src == IFN_DTYPE_Q4_0 && !spec->asym) ||
                                     ((src == IFN_DTYPE_Q4_1 || src == IFN_DTYPE_Q4_K) && spec->asym));
    return false;
}

static ifn_status check_spec(const ifn_weight *src, const qw_spec *spec)
{
    static const bool ok[QW_KIND_COUNT][QW_COMPUTE_COUNT] = {
        [QW_F32] = { [QW_COMPUTE_F32] = true }, [QW_F16] = { [QW_COMPUTE_F32] = true },
        [QW_BF16] = { [QW_COMPUTE_A16] = true }, [QW_W8] = { [QW_COMPUTE_A8] = true },
        [QW_W4] = { [QW_COMPUTE_A8] = true, [QW_COMPUTE_A16] = true },
    };
    if ((unsigned)spec->kind >= QW_KIND_COUNT || (unsigned)spec->compute >= QW_COMPUTE_COUNT ||
        !ok[spec->kind][spec->compute])
        return ifn_error_set(IFN_ERR_INVALID_ARG, "weight kind %d cannot use compute recipe %d", spec->kind, spec->compute);
    if (spec->kind == QW_W8 && spec->group != 0 && spec->group != 32)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "W8 groups are 32 or per channel, not %d", spec->group);
    if (spec->kind == QW_W4 && spec->group != 0 && spec->group != 32 && spec->group != 64 && spec->group != 128)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "W4 groups are 32, 64, 128 or per channel, not %d", spec->group);
    if (spec->group && src->n_in % spec->group != 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a matrix with %lld inputs cannot be quantized in groups of %d",
                             (long long)src->n_in, spec->group);
    if (src->n_in < 1 || src->n_out < 1)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "empty matrix %lld x %lld", (long long)src->n_out, (long long)src->n_in);
    return IFN_OK;
}

static void *alloc64(size_t bytes)
{
    void *p = aligned_alloc(64, (size_t)round_up((int64_t)(bytes ? bytes : 1), 64));
    if (p) memset(p, 0, (size_t)round_up((int64_t)(bytes ? bytes : 1), 64));
    return p;
}

static size_t data_bytes(const ifn_qweight *w)
{
    size_t n = (size_t)w->n_pad * (size_t)w->k_pad;
    switch (w->kind) {
    case QW_F32: return n * 4;
    case QW_F16: case QW_BF16: return n * 2;
    case QW_W8: return n;
    case QW_W4: return n / 2;
    case QW_KIND_COUNT: break;
    }
    return 0;
}

size_t qweight_bytes(const ifn_qweight *w)
{
    size_t params = (size_t)(w->n_pad / QW_ROWS) * (size_t)w->n_groups * QW_ROWS * (w->scales_h ? 2 : sizeof(float));
    size_t extra = 0;
    if (w->kind == QW_W8 || w->kind == QW_W4) extra = params * (w->asym ? 2 : 1);
    if (w->perm) extra += (size_t)w->n_in * sizeof *w->perm;
    return data_bytes(w) + extra;
}

/* Offsets inside the VNNI layouts (see the notes in qweight.h). */
static size_t vnni8_offset(const ifn_qweight *w, int64_t row, int64_t k)
{
    return (size_t)(row / QW_ROWS) * QW_ROWS * (size_t)w->k_pad + (size_t)(k / 4) * 64 + (size_t)(row % QW_ROWS) * 4 +
           (size_t)(k % 4);
}

static size_t param_index(const ifn_qweight *w, int64_t row, int g)
{
    return ((size_t)(row / QW_ROWS) * (size_t)w->n_groups + (size_t)g) * QW_ROWS + (size_t)(row % QW_ROWS);
}

static void put_w4(ifn_qweight *w, int64_t row, int64_t k, unsigned u)
{
    int64_t k4 = k / 4;
    size_t byte = (size_t)(row / QW_ROWS) * QW_ROWS * (size_t)w->k_pad / 2 + (size_t)(k4 / 2) * 64 +
                  (size_t)(row % QW_ROWS) * 4 + (size_t)(k % 4);
    uint8_t *p = (uint8_t *)w->data + byte;
    *p = (k4 & 1) ? (uint8_t)((*p & 0x0f) | (u << 4)) : (uint8_t)((*p & 0xf0) | u);
}

static unsigned get_w4(const ifn_qweight *w, int64_t row, int64_t k)
{
    int64_t k4 = k / 4;
    size_t byte = (size_t)(row / QW_ROWS) * QW_ROWS * (size_t)w->k_pad / 2 + (size_t)(k4 / 2) * 64 +
                  (size_t)(row % QW_ROWS) * 4 + (size_t)(k % 4);
    uint8_t b = ((const uint8_t *)w->data)[byte];
    return (k4 & 1) ? b >> 4 : b & 0x0f;
}

static size_t vnni2_offset(const ifn_qweight *w, int64_t row, int64_t k)
{
    return (size_t)(row / QW_ROWS) * QW_ROWS * (size_t)w->k_pad + (size_t)(k / 2) * 32 + (size_t)(row % QW_ROWS) * 2 +
           (size_t)(k % 2);
}

/* Copies a GGUF block row (Q4_0, Q4_1) without requantizing. */
static void pack_blocks_row(ifn_qweight *w, const ifn_weight *src, int64_t row)
{
    size_t rb = ifn_weight_stride(src);
    const uint8_t *p = (const uint8_t *)src->data + (size_t)row * rb;
    size_t bb = ifn_dtype_block_bytes(src->type);
    for (int64_t b = 0; b < src->n_in / 32; b++, p += bb) {
        uint16_t dh, mh = 0;
        memcpy(&dh, p, 2);
        w->scales[param_index(w, row, (int)b)] = ifn_fp16_to_f32(dh);
        const uint8_t *qs = p + 2;
        if (src->type == IFN_DTYPE_Q4_1) {
            memcpy(&mh, p + 2, 2);
            w->mins[param_index(w, row, (int)b)] = ifn_fp16_to_f32(mh);
            qs = p + 4;
        }
        for (int j = 0; j < 16; j++) {
            put_w4(w, row, b * 32 + j, qs[j] & 0x0f);
            put_w4(w, row, b * 32 + j + 16, qs[j] >> 4);
        }
    }
}

/* Copies a row of a type that W8 g32 holds exactly (ifn_dtype_is_w8_exact: Q8_0, Q5_0, IQ4_NL,
 * Q3_K), one block at a time. */
static void pack_w8_row(ifn_qweight *w, const ifn_weight *src, int64_t row)
{
    const uint8_t *p = (const uint8_t *)src->data + (size_t)row * ifn_weight_stride(src);
    const int bs = ifn_dtype_block_size(src->type);
    const size_t bb = ifn_dtype_block_bytes(src->type);
    int8_t q[256];
    float scales[256 / 32];
    for (int64_t k0 = 0; k0 < src->n_in; k0 += bs, p += bb) {
        ifn_dtype_to_w8(src->type, p, q, scales, bs);
        for (int g = 0; g < bs / 32; g++) w->scales[param_index(w, row, (int)(k0 / 32) + g)] = scales[g];
        for (int j = 0; j < bs; j++) ((int8_t *)w->data)[vnni8_offset(w, row, k0 + j)] = q[j];
    }
}

/* Copies a row of integers with scales (I8 or U4) without requantizing. */
static void pack_int_row(ifn_qweight *w, const ifn_weight *src, int64_t row)
{
    const uint8_t *p = (const uint8_t *)src->data + (size_t)row * ifn_weight_stride(src);
    ifn_weight one = ifn_weight_rows(src, row, 1);
    size_t scale_bytes = src->scale_type == IFN_DTYPE_F32 ? 4 : 2;
    int64_t n_groups = src->group ? src->n_in / src->group : 1;
    for (int64_t g = 0; g < n_groups; g++) {
        float scale;
        ifn_dtype_to_f32(src->scale_type, (const uint8_t *)one.scales + (size_t)g * scale_bytes, &scale, 1);
        w->scales[param_index(w, row, (int)g)] = scale;
        if (w->asym) w->mins[param_index(w, row, (int)g)] = -scale * (float)one.zeros[g];
    }
    for (int64_t k = 0; k < src->n_in; k++) {
        if (src->type == IFN_DTYPE_I8) ((int8_t *)w->data)[vnni8_offset(w, row, k)] = (int8_t)p[k];
        else put_w4(w, row, k, (p[k / 2] >> (4 * (k & 1))) & 0x0f);
    }
}

/* Copies a GGUF Q4_K row without requantizing. Sub-block j of a super-block is a W4 g32
 * asymmetric group: value = (d * sc_j) * q - dmin * m_j = scale * q + min with scale = d * sc_j
 * and min = -(dmin * m_j), both exact in fp32 (an fp16 times a 6-bit integer), so
 * fmaf(scale, q, min) rounds the same exact product and sum as ggml's dequantization. */
static void pack_q4_k_row(ifn_qweight *w, const ifn_weight *src, int64_t row)
{
    const uint8_t *p = (const uint8_t *)src->data + (size_t)row * ifn_weight_stride(src);
    for (int64_t b = 0; b < src->n_in / 256; b++, p += 144) {
        uint16_t dh, mh;
        memcpy(&dh, p, 2);
        memcpy(&mh, p + 2, 2);
        float d = ifn_fp16_to_f32(dh), dmin = ifn_fp16_to_f32(mh);
        for (int j = 0; j < 8; j++) {
            int sc, m, g = (int)b * 8 + j;
            ifn_q4_k_scale_min(p + 4, j, &sc, &m);
            w->scales[param_index(w, row, g)] = d * (float)sc;
            w->mins[param_index(w, row, g)] = -(dmin * (float)m);
            const uint8_t *qs = p + 16 + 32 * (j / 2);
            for (int l = 0; l < 32; l++) put_w4(w, row, (int64_t)g * 32 + l, (j & 1) ? qs[l] >> 4 : qs[l] & 0x0f);
        }
    }
}

/* Round-to-nearest quantization of one fp32 row into W8 or W4. */
static void quantize_row(ifn_qweight *w, const float *x, int64_t row)
{
    for (int g = 0; g < w->n_groups; g++) {
        const float *xg = x + (size_t)g * w->group;
        int64_t len = w->group;
        if ((int64_t)g * w->group + len > w->n_in) len = w->n_in - (int64_t)g * w->group;
        if (len <= 0) continue; /* a group made only of padding keeps scale 0 */
        size_t pi = param_index(w, row, g);
        if (w->kind == QW_W8) {
            float amax = 0.0f;
            for (int64_t k = 0; k < len; k++) amax = fmaxf(amax, fabsf(xg[k]));
            float s = amax / 127.0f;
            w->scales[pi] = s;
            for (int64_t k = 0; k < len; k++) {
                long q = s > 0.0f ? lrintf(xg[k] / s) : 0;
                q = q > 127 ? 127 : q < -127 ? -127 : q;
                ((int8_t *)w->data)[vnni8_offset(w, row, (int64_t)g * w->group + k)] = (int8_t)q;
            }
        } else if (!w->asym) {
            float max = 0.0f;
            for (int64_t k = 0; k < len; k++)
                if (fabsf(xg[k]) > fabsf(max)) max = xg[k];
            float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            w->scales[pi] = d;
            for (int64_t k = 0; k < len; k++) {
                long u = lrintf(xg[k] * id) + 8;
                put_w4(w, row, (int64_t)g * w->group + k, (unsigned)(u > 15 ? 15 : u < 0 ? 0 : u));
            }
        } else {
            float mn = xg[0], mx = xg[0];
            for (int64_t k = 1; k < len; k++) {
                mn = fminf(mn, xg[k]);
                mx = fmaxf(mx, xg[k]);
            }
            float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            w->scales[pi] = d;
            w->mins[pi] = mn;
            for (int64_t k = 0; k < len; k++) {
                long u = lrintf((xg[k] - mn) * id);
                put_w4(w, row, (int64_t)g * w->group + k, (unsigned)(u > 15 ? 15 : u < 0 ? 0 : u));
            }
        }
    }
}

static bool exact_in_fp16(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ifn_fp16_to_f32(ifn_f32_to_fp16(v[i])) != v[i]) return false;
    return true;
}

/* Adds the fp16 copies of an A8 weight's scales and mins when they are exact (see qweight.h);
 * leaves the weight without them otherwise, or when memory is short (they are an option). */
static void add_half_params(ifn_qweight *w)
{
    size_t n = (size_t)(w->n_pad / QW_ROWS) * (size_t)w->n_groups * QW_ROWS;
    if (!exact_in_fp16(w->scales, n) || (w->asym && !exact_in_fp16(w->mins, n))) return;
    uint16_t *sh = alloc64(n * sizeof *sh), *mh = w->asym ? alloc64(n * sizeof *mh) : NULL;
    if (!sh || (w->asym && !mh)) {
        free(sh);
        free(mh);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sh[i] = ifn_f32_to_fp16(w->scales[i]);
        if (mh) mh[i] = ifn_f32_to_fp16(w->mins[i]);
    }
    w->scales_h = sh;
    w->mins_h = mh;
}

ifn_status qweight_pack(const ifn_weight *src, const qw_spec *spec, ifn_qweight *out)
{
    memset(out, 0, sizeof *out);
    CHECK(check_spec(src, spec));
    if (src->scales || src->perm) CHECK(ifn_weight_check_quant(src));
    ifn_qweight w = { .kind = spec->kind, .compute = spec->compute, .n_out = src->n_out, .n_in = src->n_in,
                      .n_inputs = ifn_weight_inputs(src) };
    w.n_pad = round_up(src->n_out, QW_ROWS);
    w.k_pad = round_up(src->n_in, QW_K_ALIGN);
    bool integer = spec->kind == QW_W8 || spec->kind == QW_W4;
    if (integer) {
        w.group = spec->group ? spec->group : (int)w.k_pad;
        w.n_groups = (int)(w.k_pad / w.group);
        w.asym = spec->kind == QW_W4 && spec->asym;
    } else {
        w.n_groups = 1;
    }
    size_t n_params = (size_t)(w.n_pad / QW_ROWS) * (size_t)w.n_groups * QW_ROWS;
    w.data = alloc64(data_bytes(&w));
    if (integer) w.scales = alloc64(n_params * sizeof(float));
    if (w.asym) w.mins = alloc64(n_params * sizeof(float));
    if (spec->kind == QW_W8) w.row_sums = alloc64(n_params * sizeof(int32_t));
    if (src->perm) {
        w.perm = malloc((size_t)src->n_in * sizeof *w.perm);
        if (w.perm) memcpy(w.perm, src->perm, (size_t)src->n_in * sizeof *w.perm);
    }
    float *row = malloc((size_t)src->n_in * sizeof *row);
    if (!w.data || (integer && !w.scales) || (w.asym && !w.mins) || (spec->kind == QW_W8 && !w.row_sums) || !row ||
        (src->perm && !w.perm)) {
        free(row);
        qweight_free(&w);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory to pack a %lld x %lld matrix", (long long)src->n_out,
                             (long long)src->n_in);
    }
    if (spec->kind == QW_W4 && !w.asym) /* padding of symmetric W4 must decode to 0: u = 8 */
        memset(w.data, 0x88, data_bytes(&w));
    bool copy_blocks = !src->scales && block_copy(spec, src->type), copy_ints = int_copy(spec, src);
    for (int64_t r = 0; r < src->n_out; r++) {
        if (copy_ints) {
            pack_int_row(&w, src, r);
            continue;
        }
        if (copy_blocks) {
            if (src->type == IFN_DTYPE_Q4_K) pack_q4_k_row(&w, src, r);
            else if (spec->kind == QW_W8) pack_w8_row(&w, src, r);
            else pack_blocks_row(&w, src, r);
            continue;
        }
        ifn_weight_row(src, r, row);
        switch (w.kind) {
        case QW_F32: memcpy((float *)w.data + (size_t)r * w.k_pad, row, (size_t)src->n_in * 4); break;
        case QW_F16:
            for (int64_t k = 0; k < src->n_in; k++) ((uint16_t *)w.data)[(size_t)r * w.k_pad + k] = ifn_f32_to_fp16(row[k]);
            break;
        case QW_BF16:
            for (int64_t k = 0; k < src->n_in; k++) ((uint16_t *)w.data)[vnni2_offset(&w, r, k)] = ifn_f32_to_bf16(row[k]);
            break;
        default: quantize_row(&w, row, r); break;
        }
    }
    if (spec->kind == QW_W8)
        for (int64_t r = 0; r < w.n_pad; r++)
            for (int g = 0; g < w.n_groups; g++) {
                int32_t sum = 0;
                for (int k = 0; k < w.group; k++) sum += ((int8_t *)w.data)[vnni8_offset(&w, r, (int64_t)g * w.group + k)];
                w.row_sums[param_index(&w, r, g)] = sum;
            }
    free(row);
    if (w.compute == QW_COMPUTE_A8) {
        w.act_scale = src->act_scale;
        add_half_params(&w);
    }
    *out = w;
    return IFN_OK;
}

void qweight_free(ifn_qweight *w)
{
    free(w->data);
    free(w->scales);
    free(w->mins);
    free(w->scales_h);
    free(w->mins_h);
    free(w->row_sums);
    free(w->perm);
    memset(w, 0, sizeof *w);
}

float qweight_value(const ifn_qweight *w, int64_t row, int64_t k)
{
    int g = w->group ? (int)(k / w->group) : 0;
    switch (w->kind) {
    case QW_F32: return ((const float *)w->data)[(size_t)row * w->k_pad + k];
    case QW_F16: return ifn_fp16_to_f32(((const uint16_t *)w->data)[(size_t)row * w->k_pad + k]);
    case QW_BF16: return ifn_bf16_to_f32(((const uint16_t *)w->data)[vnni2_offset(w, row, k)]);
    case QW_W8: return w->scales[param_index(w, row, g)] * (float)((const int8_t *)w->data)[vnni8_offset(w, row, k)];
    case QW_W4: {
        unsigned u = get_w4(w, row, k);
        float s = w->scales[param_index(w, row, g)];
        float v = w->asym ? fmaf(s, (float)u, w->mins[param_index(w, row, g)]) : s * (float)((int)u - 8);
        return w->compute == QW_COMPUTE_A16 ? ifn_bf16_to_f32(ifn_f32_to_bf16(v)) : v;
    }
    case QW_KIND_COUNT: break;
    }
    return 0.0f;
}
