/* AVX2 kernels: AVX2 + FMA + F16C fallbacks, so every format runs on any x86-64 machine of the
 * last decade. One kernel per recipe, for any number of activation rows.
 *
 * Notes
 * -----
 * Blocking: one row block (16 weight rows, held as two 8-lane halves) against nr <= MR = 4
 * activation rows per inner step, so each weight vector loaded feeds up to 4 rows. nr reaches
 * the block functions as a constant (always inlined, one call per value in a switch), so their
 * per-row loops unroll into registers and a decode step (m = 1) computes one row, not four.
 * Threads split row blocks (gemm.c).
 *
 * A8 (W8, W4), bit-identical to gemm_ref.c. A 32-byte half of a packed VNNI vector is 8 rows
 * x 4 inputs, so a broadcast of 4 activation bytes gives each lane one row's 4 products:
 * _mm256_maddubs_epi16 (u8 x s8, pairs summed to int16, saturating) then _mm256_madd_epi16
 * (pairs to int32). Saturation cannot happen:
 *   W4: the unsigned operand is the nibble u (0..15), the signed one q_x (-127..127):
 *       |pair| <= 2 * 15 * 127 = 3810. The symmetric dot is sum (u - 8) q = sum u q - 8 gsum,
 *       with gsum the activations' group sum that gemm.c prepares.
 *   W8: the sign trick: unsigned |q_w| (<= 128 even for q_w = -128), signed q_x * sign(q_w)
 *       (<= 127): |pair| <= 2 * 128 * 127 = 32512 < 32767.
 * Each group's int32 dot is exact; then, lane by lane, the reference's float order:
 * acc = fmadd(scale * act_scale, cvt(dot), acc) [+ fmadd(min * act_scale, cvt(gsum), acc)], y = acc.
 * (_mm256_fmadd_ps is fmaf, _mm256_cvtepi32_ps is (float) under the default rounding.)
 * AVX-VNNI (vpdpbusd on ymm) would save the madd, but needs its own CPUID gate; not used.
 *
 * A16: a bf16 value is the top half of an fp32, so a 16-bit shift (even k of a VNNI-2 pair)
 * or a mask (odd k) expands it exactly; products accumulate with FMA in k order per lane.
 * W4-A16 first expands the row block into a bf16 VNNI-2 buffer, with the values of
 * qweight_value exactly (bf16(s * (u - 8)) or bf16(fmaf(s, u, min)), round to nearest even),
 * then runs the BF16 kernel on it: the expansion is paid once per row block, not per 4 rows.
 *
 * F32/F16: plain rows; 4 activation rows x 2 weight rows of 8-wide FMAs, horizontal sums at
 * the end (F16 via F16C vcvtph2ps, exact).
 *
 * Nothing here is tuned beyond that: on AVX-512 machines the AVX-512 kernels take over. */
#include "gemm.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define MR 4 /* activation rows per inner step, at most */
#define INLINE static inline __attribute__((always_inline))

/* Weight rows of row block rb that exist (the last block may be partial). */
static int rows_valid(const ifn_qweight *w, int64_t rb)
{
    int64_t left = w->n_out - rb * QW_ROWS;
    return left < QW_ROWS ? (int)left : QW_ROWS;
}

/* Pointers to activation rows i0..i0+nr-1. */
INLINE void row_pointers(const void *base, size_t row_bytes, int i0, int nr, const uint8_t *rows[MR])
{
    for (int r = 0; r < nr; r++) rows[r] = (const uint8_t *)base + (size_t)(i0 + r) * row_bytes;
}

/* Writes the 16 outputs of one row block (two halves) into yrow, only the first n_valid. */
static void store_outputs(float *yrow, __m256 lo, __m256 hi, int n_valid)
{
    if (n_valid == QW_ROWS) {
        _mm256_storeu_ps(yrow, lo);
        _mm256_storeu_ps(yrow + 8, hi);
        return;
    }
    float tmp[QW_ROWS];
    _mm256_storeu_ps(tmp, lo);
    _mm256_storeu_ps(tmp + 8, hi);
    memcpy(yrow, tmp, (size_t)n_valid * sizeof(float));
}

static __m256i broadcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* ---- A8 ---------------------------------------------------------------------------------- */

/* dot[r][h] = int32 dots of inputs [k0, k1) for rows 8h..8h+7 of a W8 row block wb. */
INLINE void w8_dots(__m256i dot[MR][2], const uint8_t *const x[MR], int nr, const int8_t *wb, int64_t k0, int64_t k1)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < nr; r++) dot[r][0] = dot[r][1] = _mm256_setzero_si256();
    for (int64_t k = k0; k < k1; k += 4) {
        const int8_t *v = wb + k * QW_ROWS; /* VNNI vector k/4 */
        __m256i w0 = _mm256_loadu_si256((const __m256i *)v), w1 = _mm256_loadu_si256((const __m256i *)(v + 32));
        __m256i abs0 = _mm256_sign_epi8(w0, w0), abs1 = _mm256_sign_epi8(w1, w1);
        for (int r = 0; r < nr; r++) {
            __m256i xb = broadcast4(x[r] + k);
            __m256i p0 = _mm256_maddubs_epi16(abs0, _mm256_sign_epi8(xb, w0));
            __m256i p1 = _mm256_maddubs_epi16(abs1, _mm256_sign_epi8(xb, w1));
            dot[r][0] = _mm256_add_epi32(dot[r][0], _mm256_madd_epi16(p0, ones));
            dot[r][1] = _mm256_add_epi32(dot[r][1], _mm256_madd_epi16(p1, ones));
        }
    }
}

/* dot[r][h] = int32 dots of the nibbles u (not u - 8) over inputs [k0, k1) of a W4 row block. */
INLINE void w4_dots(__m256i dot[MR][2], const uint8_t *const x[MR], int nr, const uint8_t *wb, int64_t k0, int64_t k1)
{
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0f);
    for (int r = 0; r < nr; r++) dot[r][0] = dot[r][1] = _mm256_setzero_si256();
    for (int64_t k = k0; k < k1; k += 8) {
        const uint8_t *v = wb + k * (QW_ROWS / 2); /* the byte pair of VNNI vectors k/4, k/4 + 1 */
        __m256i b0 = _mm256_loadu_si256((const __m256i *)v), b1 = _mm256_loadu_si256((const __m256i *)(v + 32));
        __m256i lo0 = _mm256_and_si256(b0, low), hi0 = _mm256_and_si256(_mm256_srli_epi16(b0, 4), low);
        __m256i lo1 = _mm256_and_si256(b1, low), hi1 = _mm256_and_si256(_mm256_srli_epi16(b1, 4), low);
        for (int r = 0; r < nr; r++) {
            __m256i xe = broadcast4(x[r] + k), xo = broadcast4(x[r] + k + 4);
            __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xe), _mm256_maddubs_epi16(hi0, xo));
            __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xe), _mm256_maddubs_epi16(hi1, xo));
            dot[r][0] = _mm256_add_epi32(dot[r][0], _mm256_madd_epi16(p0, ones));
            dot[r][1] = _mm256_add_epi32(dot[r][1], _mm256_madd_epi16(p1, ones));
        }
    }
}

/* y for activation rows i0..i0+nr-1 and row block rb. */
INLINE void a8_block(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb, int i0, int nr)
{
    const uint8_t *x[MR];
    row_pointers(a->q, (size_t)a->k_pad, i0, nr, x);
    bool w4 = w->kind == QW_W4;
    const uint8_t *wb = (const uint8_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad / (w4 ? 2 : 1);
    __m256 acc[MR][2];
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int g = 0; g < w->n_groups; g++) {
        int64_t k0 = (int64_t)g * w->group, k1 = k0 + w->group;
        __m256i dot[MR][2];
        if (w4) w4_dots(dot, x, nr, wb, k0, k1);
        else w8_dots(dot, x, nr, (const int8_t *)wb, k0, k1);
        size_t pi = ((size_t)rb * (size_t)w->n_groups + (size_t)g) * QW_ROWS;
        for (int r = 0; r < nr; r++) {
            size_t ai = (size_t)(i0 + r) * (size_t)w->n_groups + (size_t)g;
            int32_t gsum = a->gsum[ai];
            __m256 as = _mm256_set1_ps(a->scale[ai]);
            for (int h = 0; h < 2; h++) {
                __m256i d = dot[r][h];
                if (w4 && !w->asym) d = _mm256_sub_epi32(d, _mm256_set1_epi32(8 * gsum));
                __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(w->scales + pi + 8 * h), as);
                acc[r][h] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(d), acc[r][h]);
                if (w->asym)
                    acc[r][h] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(w->mins + pi + 8 * h), as),
                                                _mm256_set1_ps((float)gsum), acc[r][h]);
            }
        }
    }
    int n_valid = rows_valid(w, rb);
    for (int r = 0; r < nr; r++)
        store_outputs(y + (size_t)(i0 + r) * ldy + rb * QW_ROWS, acc[r][0], acc[r][1], n_valid);
}

static void avx2_a8(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    for (int64_t rb = rb0; rb < rb1; rb++)
        for (int i0 = 0; i0 < a->m; i0 += MR) {
            switch (a->m - i0) {
            case 1: a8_block(y, ldy, a, w, rb, i0, 1); break;
            case 2: a8_block(y, ldy, a, w, rb, i0, 2); break;
            case 3: a8_block(y, ldy, a, w, rb, i0, 3); break;
            default: a8_block(y, ldy, a, w, rb, i0, MR); break;
            }
        }
}

/* ---- A16 --------------------------------------------------------------------------------- */

/* y for activation rows i0..i0+nr-1 and one row block whose weights wb are bf16 VNNI-2. */
INLINE void a16_block(float *y, int64_t ldy, const gemm_act *a, const uint16_t *wb, int64_t rb, int n_valid, int i0,
                      int nr)
{
    const uint8_t *x[MR];
    row_pointers(a->bf16, (size_t)a->k_pad * sizeof(uint16_t), i0, nr, x);
    const __m256i odd = _mm256_set1_epi32((int32_t)0xffff0000u);
    __m256 acc[MR][2];
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < a->k_pad; k += 2) {
        const uint16_t *v = wb + k * QW_ROWS; /* VNNI-2 vector k/2: 16 rows x (k, k + 1) */
        __m256i v0 = _mm256_loadu_si256((const __m256i *)v), v1 = _mm256_loadu_si256((const __m256i *)(v + 16));
        __m256 we0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), wo0 = _mm256_castsi256_ps(_mm256_and_si256(v0, odd));
        __m256 we1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), wo1 = _mm256_castsi256_ps(_mm256_and_si256(v1, odd));
        for (int r = 0; r < nr; r++) {
            __m256i xb = broadcast4(x[r] + 2 * k);
            __m256 xe = _mm256_castsi256_ps(_mm256_slli_epi32(xb, 16)), xo = _mm256_castsi256_ps(_mm256_and_si256(xb, odd));
            acc[r][0] = _mm256_fmadd_ps(wo0, xo, _mm256_fmadd_ps(we0, xe, acc[r][0]));
            acc[r][1] = _mm256_fmadd_ps(wo1, xo, _mm256_fmadd_ps(we1, xe, acc[r][1]));
        }
    }
    for (int r = 0; r < nr; r++) store_outputs(y + (size_t)(i0 + r) * ldy + rb * QW_ROWS, acc[r][0], acc[r][1], n_valid);
}

/* All activation rows against one row block rb whose weights wb are bf16 VNNI-2. */
static void a16_rows(float *y, int64_t ldy, const gemm_act *a, const uint16_t *wb, int64_t rb, int n_valid)
{
    for (int i0 = 0; i0 < a->m; i0 += MR) {
        switch (a->m - i0) {
        case 1: a16_block(y, ldy, a, wb, rb, n_valid, i0, 1); break;
        case 2: a16_block(y, ldy, a, wb, rb, n_valid, i0, 2); break;
        case 3: a16_block(y, ldy, a, wb, rb, n_valid, i0, 3); break;
        default: a16_block(y, ldy, a, wb, rb, n_valid, i0, MR); break;
        }
    }
}

static void avx2_bf16(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    for (int64_t rb = rb0; rb < rb1; rb++)
        a16_rows(y, ldy, a, (const uint16_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad, rb, rows_valid(w, rb));
}

/* bf16 bits (in the low half of each lane) of v, rounded to nearest even as ifn_f32_to_bf16. */
static __m256i bf16_bits(__m256 v)
{
    __m256i b = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet, nan);
}

/* Expands W4 row block rb into bf16 VNNI-2 (out: [k_pad/2][16 rows][2]) with qweight_value's values. */
static void w4_expand_bf16(uint16_t *out, const ifn_qweight *w, int64_t rb)
{
    const uint8_t *wb = (const uint8_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad / 2;
    const __m256i low = _mm256_set1_epi8(0x0f), byte = _mm256_set1_epi32(0xff), eight = _mm256_set1_epi32(8);
    for (int64_t k = 0; k < w->k_pad; k += 8) { /* VNNI vectors k4 = k/4 (low nibbles) and k/4 + 1 (high) */
        size_t pi = ((size_t)rb * (size_t)w->n_groups + (size_t)(k / w->group)) * QW_ROWS;
        for (int h = 0; h < 2; h++) { /* rows 8h..8h+7 */
            __m256 s = _mm256_loadu_ps(w->scales + pi + 8 * h);
            __m256 mn = w->asym ? _mm256_loadu_ps(w->mins + pi + 8 * h) : _mm256_setzero_ps();
            __m256i b = _mm256_loadu_si256((const __m256i *)(wb + k * (QW_ROWS / 2) + 32 * h));
            __m256i nib[2] = { _mm256_and_si256(b, low), _mm256_and_si256(_mm256_srli_epi16(b, 4), low) };
            for (int q = 0; q < 2; q++) {
                __m256i bits[4];
                for (int j = 0; j < 4; j++) { /* input k + 4q + j */
                    __m256i u = _mm256_and_si256(_mm256_srli_epi32(nib[q], 8 * j), byte);
                    __m256 v = w->asym ? _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(u), mn)
                                       : _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_sub_epi32(u, eight)));
                    bits[j] = bf16_bits(v);
                }
                int64_t k2 = (k + 4 * q) / 2; /* VNNI-2 vectors k2 (inputs j = 0, 1) and k2 + 1 (j = 2, 3) */
                __m256i even = _mm256_or_si256(bits[0], _mm256_slli_epi32(bits[1], 16));
                __m256i odd = _mm256_or_si256(bits[2], _mm256_slli_epi32(bits[3], 16));
                _mm256_storeu_si256((__m256i *)(out + k2 * 2 * QW_ROWS + 16 * h), even);
                _mm256_storeu_si256((__m256i *)(out + (k2 + 1) * 2 * QW_ROWS + 16 * h), odd);
            }
        }
    }
}

static void avx2_w4a16(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    size_t bytes = (size_t)QW_ROWS * (size_t)w->k_pad * sizeof(uint16_t);
    uint16_t *wb = aligned_alloc(64, bytes);
    if (!wb) { /* the kernel cannot report an error: compute the same values the slow way */
        gemm_kernel ref;
        gemm_lookup_scalar(w, a->m, &ref);
        ref.fn(y, ldy, a, w, rb0, rb1);
        return;
    }
    for (int64_t rb = rb0; rb < rb1; rb++) {
        w4_expand_bf16(wb, w, rb);
        a16_rows(y, ldy, a, wb, rb, rows_valid(w, rb));
    }
    free(wb);
}

/* ---- F32 / F16 ---------------------------------------------------------------------------- */

static float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static __m256 load_weights(const ifn_qweight *w, int64_t n, int64_t k)
{
    size_t at = (size_t)n * (size_t)w->k_pad + (size_t)k;
    if (w->kind == QW_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w->data + at)));
    return _mm256_loadu_ps((const float *)w->data + at);
}

/* y for activation rows i0..i0+nr-1 and weight rows n, n + 1 (n + 1 may be padding). */
INLINE void f32_block(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t n, int i0, int nr)
{
    const uint8_t *x[MR];
    row_pointers(a->f32, (size_t)a->k_pad * sizeof(float), i0, nr, x);
    __m256 acc[MR][2];
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < a->k_pad; k += 8) {
        __m256 w0 = load_weights(w, n, k), w1 = load_weights(w, n + 1, k);
        for (int r = 0; r < nr; r++) {
            __m256 xv = _mm256_loadu_ps((const float *)x[r] + k);
            acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < nr; r++) {
        float *yrow = y + (size_t)(i0 + r) * ldy;
        yrow[n] = hsum(acc[r][0]);
        if (n + 1 < w->n_out) yrow[n + 1] = hsum(acc[r][1]);
    }
}

static void avx2_f32(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    int64_t n_end = rb1 * QW_ROWS < w->n_out ? rb1 * QW_ROWS : w->n_out;
    for (int64_t n = rb0 * QW_ROWS; n < n_end; n += 2)
        for (int i0 = 0; i0 < a->m; i0 += MR) {
            switch (a->m - i0) {
            case 1: f32_block(y, ldy, a, w, n, i0, 1); break;
            case 2: f32_block(y, ldy, a, w, n, i0, 2); break;
            case 3: f32_block(y, ldy, a, w, n, i0, 3); break;
            default: f32_block(y, ldy, a, w, n, i0, MR); break;
            }
        }
}

bool gemm_lookup_avx2(const ifn_qweight *w, int m, gemm_kernel *out)
{
    (void)m;
    switch (w->kind) {
    case QW_F32: *out = (gemm_kernel){ avx2_f32, "avx2 f32", IFN_ISA_AVX2 }; return true;
    case QW_F16: *out = (gemm_kernel){ avx2_f32, "avx2 f16", IFN_ISA_AVX2 }; return true;
    case QW_BF16: *out = (gemm_kernel){ avx2_bf16, "avx2 bf16", IFN_ISA_AVX2 }; return true;
    case QW_W8: *out = (gemm_kernel){ avx2_a8, "avx2 w8a8", IFN_ISA_AVX2 }; return true;
    case QW_W4:
        if (w->compute == QW_COMPUTE_A16) *out = (gemm_kernel){ avx2_w4a16, "avx2 w4a16", IFN_ISA_AVX2 };
        else *out = (gemm_kernel){ avx2_a8, "avx2 w4a8", IFN_ISA_AVX2 };
        return true;
    case QW_KIND_COUNT: break;
    }
    return false;
}
