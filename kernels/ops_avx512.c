/* AVX-512 (F/BW/VL/DQ + FMA + F16C) kernels of ops.h. Compiled with those flags only for this
 * file; ops.c runs them only when ifn_isa says the machine and OS allow AVX-512.
 *
 * Notes
 *  - exp: Cephes expf (x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, ~1 ulp), with 2^n
 *    applied as two factors 2^(n/2) 2^(n-n/2) so that results in the subnormal range are
 *    rounded once and overflow gives inf, as expf does. Attention's weights use a variant
 *    that returns 0 below exp(-87) instead (exp512_weight): subnormal results cost microcode
 *    assists in every block with masked rows.
 *  - Sums of squares (RMSNorm) and of exponentials (softmax) are kept in double, as the
 *    references do, so those two agree with the references to an ulp or so.
 *  - Attention, one work item = up to ATT_Q_MAX query heads sharing one KV head (a GQA
 *    group), over blocks of 16 cache rows:
 *      K block: fp32 rows are read in place; fp16/bf16 rows (and blocks with rows a token
 *               does not see) are widened once into kbuf [16][head_dim] for all the group's
 *               heads; rows not seen are zeros there and never read from the cache.
 *      scores:  16 row accumulators (one zmm each, hd/16 FMAs per row) are summed across
 *               lanes by a transposing tree (reduce16: 15 adds, 30 shuffles, 1 permute),
 *               which gives the block's 16 scores in one vector.
 *      softmax: online (running max m, running sum l, accumulator rescaled by exp(m_old -
 *               m_new) when one compare per block sees the max grow), so there is no score
 *               buffer the size of the context.
 *      V:       acc[head_dim] += p_r * v_r, four 16-float chunks at a time with two row
 *               sets, i.e. 8 independent FMA chains per head.
 *    Scheduling across threads is in ops.c (ops_attention).
 *  - Measured (2 Zen 5 cores of a shared VM; minimum of repeated runs; threads pinned), one
 *    decode token at TinyLlama's shape (32 heads, 4 KV heads, head_dim 64), us per layer,
 *    KV of one layer in cache; scalar reference on 1 thread, SIMD as 1 thread / 2 threads:
 *        n_ctx  KV     scalar ref     AVX2          AVX-512
 *        128    f32        379      22 / 12       16 /  9
 *        128    f16       2121      26 / 13       19 / 10
 *        1024   bf16      4179     196 / 98      134 / 68
 *        4096   f32      31370     744 / 372     532 / 269
 *        4096   f16     109789     783 / 392     583 / 295
 *        4096   bf16     21722     796 / 387     546 / 274
 *    (The reference widens fp16 through dtype.c's scalar ifn_fp16_to_f32, per element, twice
 *    for K.)
 *    With 22 layers' KV cycled (out of L3), n_ctx 4096 f16, AVX-512: token-major rows 795 /
 *    383 us (1030 us without prefetch_block), head-major rows 544 / 268 us. 4096 rows x 32
 *    heads x 64 x 2 MACs in ~0.5 ms is ~65 GFLOP/s, half the FMA peak measured here; the
 *    rest is reduce16, exp and widening. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "ops_isa.h"

#define ATT_ROWS 16 /* rows per block: one vector of scores */
#define ATT_Q_MAX 8 /* query heads per pass over the rows */

static inline __mmask16 tail_mask(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* exp(x) = p * 2^n with x already clamped: n = round(x / ln 2), p the polynomial for the
 * remainder (Cody-Waite reduction). */
static inline __m512 exp512_reduced(__m512 x, __m512i *n_out)
{
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    *n_out = _mm512_cvtps_epi32(n);
    return p;
}

static inline __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(89.0f)), _mm512_set1_ps(-104.0f));
    __m512i ni;
    __m512 p = exp512_reduced(x, &ni);
    __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

/* exp(x) for x <= 0 in attention: 0 below -87, where exp(x) would be subnormal (< 2^-126).
 * Subnormal results cost microcode assists in every block with masked rows or far-below-max
 * scores; what is dropped is below 2^-126 of the largest weight (1), far inside the bound. */
static inline __m512 exp512_weight(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-87.0f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_max_ps(x, lo);
    __m512i ni;
    __m512 p = exp512_reduced(x, &ni);
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(e));
}

/* Sum of squares of 16 floats, added to two double accumulators. */
static inline void sumsq_pd(__m512 v, __m512d *lo, __m512d *hi)
{
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v)), b = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    *lo = _mm512_fmadd_pd(a, a, *lo);
    *hi = _mm512_fmadd_pd(b, b, *hi);
}

static void rmsnorm_avx512(float *out, const float *x, const float *w, int n, float eps)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), s2 = _mm512_setzero_pd(), s3 = _mm512_setzero_pd();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        sumsq_pd(_mm512_loadu_ps(x + i), &s0, &s1);
        sumsq_pd(_mm512_loadu_ps(x + i + 16), &s2, &s3);
    }
    for (; i < n; i += 16) sumsq_pd(_mm512_maskz_loadu_ps(tail_mask(n - i), x + i), &s0, &s1);
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
    __m512 scale = _mm512_set1_ps((float)(1.0 / sqrt(ss / n + eps)));
    for (i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i)));
    }
}

static void rope_avx512(float *x, int n_heads, int head_dim, const float *cs, ifn_rope_layout layout)
{
    const float *C = cs, *S = cs + head_dim;
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        if (layout == IFN_ROPE_INTERLEAVED) {
            for (int d = 0; d < head_dim; d += 16) {
                __mmask16 m = tail_mask(head_dim - d);
                __m512 v = _mm512_maskz_loadu_ps(m, xh + d);
                __m512 partner = _mm512_permute_ps(v, 0xb1); /* swaps (2i, 2i+1) */
                __m512 r = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, C + d),
                                           _mm512_mul_ps(partner, _mm512_maskz_loadu_ps(m, S + d)));
                _mm512_mask_storeu_ps(xh + d, m, r);
            }
        } else {
            for (int i = 0; i < half; i += 16) {
                __mmask16 m = tail_mask(half - i);
                __m512 a = _mm512_maskz_loadu_ps(m, xh + i), b = _mm512_maskz_loadu_ps(m, xh + half + i);
                __m512 c = _mm512_maskz_loadu_ps(m, C + i);
                __m512 ra = _mm512_fmadd_ps(a, c, _mm512_mul_ps(b, _mm512_maskz_loadu_ps(m, S + i)));
                __m512 rb = _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, S + half + i)));
                _mm512_mask_storeu_ps(xh + i, m, ra);
                _mm512_mask_storeu_ps(xh + half + i, m, rb);
            }
        }
    }
}

/* Adds 16 floats to a double sum, in two halves. */
static inline __m512d add_pd16(__m512d acc, __m512 v)
{
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

static void softmax_avx512(float *x, int n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
    __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512d sum = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), max)));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = add_pd16(sum, e);
    }
    __m512 inv = _mm512_set1_ps((float)(1.0 / _mm512_reduce_add_pd(sum)));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

static void silu_mul_avx512(float *gate, const float *up, int n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 r = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, up + i));
        _mm512_mask_storeu_ps(gate + i, m, r);
    }
}

/* LayerNorm: the mean, then the squared deviations, both summed in double (as the reference). */
static void layernorm_avx512(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    }
    const double mean = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) / n;
    const __m512d md = _mm512_set1_pd(mean);
    s0 = s1 = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512d a = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), md);
        __m512d c = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), md);
        s0 = _mm512_mask3_fmadd_pd(a, a, s0, (__mmask8)m); /* lanes past n stay out */
        s1 = _mm512_mask3_fmadd_pd(c, c, s1, (__mmask8)(m >> 8));
    }
    const double inv = 1.0 / sqrt(_mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) / n + eps);
    const __m512 mf = _mm512_set1_ps((float)mean), sc = _mm512_set1_ps((float)inv);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mf), sc);
        v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(out + i, m, v);
    }
}

/* GELU tanh as x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): the same function,
 * since (1 + tanh u) / 2 = 1 / (1 + exp(-2u)). */
static void gelu_tanh_avx512(float *x, int n)
{
    const __m512 one = _mm512_set1_ps(1.0f), k2 = _mm512_set1_ps(-2.0f * 0.79788456080286535588f),
                 c = _mm512_set1_ps(0.044715f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 u = _mm512_mul_ps(k2, _mm512_fmadd_ps(_mm512_mul_ps(c, v), _mm512_mul_ps(v, v), v));
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(v, _mm512_add_ps(one, exp512(u))));
    }
}

/* fp32 -> bf16 bits, round to nearest even, NaN kept quiet (ifn_f32_to_bf16), in the low 16
 * bits of each lane. */
static inline __m256i bf16_round(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

static void kv_store_avx512(void *dst, const float *src, int n, ifn_kv_type type)
{
    if (type == IFN_KV_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d16 = dst;
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, src + i);
        __m256i h = type == IFN_KV_F16 ? _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
                                       : bf16_round(v);
        _mm256_mask_storeu_epi16(d16 + i, m, h);
    }
}

/* 16 elements of a KV row widened to fp32; lanes outside m read nothing and are zero. */
static inline __m512 kv_load16(const void *src, ifn_kv_type type, size_t i, __mmask16 m)
{
    switch (type) {
    case IFN_KV_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)src + i));
    case IFN_KV_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)src + i)), 16));
    default: return _mm512_maskz_loadu_ps(m, (const float *)src + i);
    }
}

static void kv_load_avx512(float *dst, const void *src, int n, ifn_kv_type type)
{
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, kv_load16(src, type, (size_t)i, m));
    }
}

/* ---- attention -------------------------------------------------------------------------- */

static bool attend_supports_avx512(int head_dim)
{
    return head_dim > 0 && head_dim % 16 == 0 && head_dim <= IFN_OPS_HEAD_DIM_MAX;
}

/* Lane r of the result is the sum of the 16 lanes of v[r]. */
static inline __m512 reduce16(const __m512 v[16])
{
    __m512 w[8], z[4];
    for (int i = 0; i < 8; i++) /* 256-bit halves: [v2i.0+v2i.2, v2i.1+v2i.3, v2i+1.0+.2, v2i+1.1+.3] */
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++) /* 128-bit lane L of z[i]: four partial sums of v[4i + L] */
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(z[0], z[1]), _mm512_unpackhi_ps(z[0], z[1]));
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(z[2], z[3]), _mm512_unpackhi_ps(z[2], z[3]));
    __m512 u = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))));
    /* lane 4L + i of u holds the sum of v[4i + L] */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(idx, u);
}

/* Dot products of q [head_dim] with the 16 rows of a block (row stride ks floats). */
static inline __m512 scores16(const float *q, const float *kb, size_t ks, int head_dim)
{
    /* Row by row (one pointer live, q re-read from L1): 16 independent chains of hd/16 FMAs. */
    __m512 acc[ATT_ROWS];
    for (int r = 0; r < ATT_ROWS; r++) {
        const float *kr = kb + r * ks;
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_loadu_ps(kr));
        for (int d = 16; d < head_dim; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(kr + d), a);
        acc[r] = a;
    }
    return reduce16(acc);
}

/* acc[head_dim] += sum_r p[r] vb[r]: 64 floats at a time with two sets of rows. */
static inline void accumulate_v(float *acc, const float *p, const float *vb, size_t ks, int head_dim)
{
    int d = 0;
    for (; d + 64 <= head_dim; d += 64) {
        __m512 a0[4], a1[4];
        for (int c = 0; c < 4; c++) {
            a0[c] = _mm512_loadu_ps(acc + d + 16 * c);
            a1[c] = _mm512_setzero_ps();
        }
        for (int r = 0; r < ATT_ROWS; r += 2) {
            __m512 p0 = _mm512_set1_ps(p[r]), p1 = _mm512_set1_ps(p[r + 1]);
            for (int c = 0; c < 4; c++) {
                a0[c] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(vb + r * ks + d + 16 * c), a0[c]);
                a1[c] = _mm512_fmadd_ps(p1, _mm512_loadu_ps(vb + (r + 1) * ks + d + 16 * c), a1[c]);
            }
        }
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(acc + d + 16 * c, _mm512_add_ps(a0[c], a1[c]));
    }
    for (; d < head_dim; d += 16) {
        __m512 a[4] = { _mm512_loadu_ps(acc + d), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };
        for (int r = 0; r < ATT_ROWS; r++) a[r % 4] = _mm512_fmadd_ps(_mm512_set1_ps(p[r]), _mm512_loadu_ps(vb + r * ks + d), a[r % 4]);
        _mm512_storeu_ps(acc + d, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    }
}

/* Widens the visible rows of block [r0, r0 + 16) of one head into buf [16][head_dim]; the
 * other rows become zeros and are not read. */
static void widen_block(float *buf, const void *base, ifn_kv_type type, size_t stride, int r0, int head_dim,
                        __mmask16 valid)
{
    const size_t es = ifn_kv_type_size(type);
    for (int r = 0; r < ATT_ROWS; r++) {
        float *dst = buf + (size_t)r * head_dim;
        if (!((valid >> r) & 1)) {
            for (int d = 0; d < head_dim; d += 16) _mm512_storeu_ps(dst + d, _mm512_setzero_ps());
            continue;
        }
        const void *src = (const char *)base + (size_t)(r0 + r) * stride * es;
        for (int d = 0; d < head_dim; d += 16) _mm512_storeu_ps(dst + d, kv_load16(src, type, (size_t)d, 0xffff));
    }
}

/* Asks for the K and V rows of the block starting at r0 (two blocks ahead): the strided rows
 * of a token-major cache, which the hardware prefetchers follow poorly (measured at 4096 rows
 * out of L3: 1.03 -> 0.80 ms; on contiguous head-major rows it costs ~10%, so it is skipped). */
static inline void prefetch_block(const ops_attn_item *it, int r0)
{
    const size_t es = ifn_kv_type_size(it->type), bytes = (size_t)it->head_dim * es;
    int r1 = r0 + ATT_ROWS < it->n_rows ? r0 + ATT_ROWS : it->n_rows;
    for (int r = r0; r < r1; r++) {
        const char *k = (const char *)it->k + (size_t)r * it->row_stride * es;
        const char *v = (const char *)it->v + (size_t)r * it->row_stride * es;
        for (size_t b = 0; b < bytes; b += 64) {
            _mm_prefetch(k + b, _MM_HINT_T0);
            _mm_prefetch(v + b, _MM_HINT_T0);
        }
    }
}

static void attend_avx512(float *out, const float *q, int n_q, const ops_attn_item *it)
{
    const int hd = it->head_dim;
    const size_t stride = it->row_stride;
    const __m512 scale = _mm512_set1_ps(it->scale), neg_inf = _mm512_set1_ps(-INFINITY);
    const bool strided = stride != (size_t)hd; /* contiguous rows: the hardware prefetches them */
    _Alignas(64) float kbuf[ATT_ROWS * IFN_OPS_HEAD_DIM_MAX], vbuf[ATT_ROWS * IFN_OPS_HEAD_DIM_MAX];
    _Alignas(64) float acc[ATT_Q_MAX][IFN_OPS_HEAD_DIM_MAX];
    _Alignas(64) float p[ATT_ROWS];
    for (int j0 = 0; j0 < n_q; j0 += ATT_Q_MAX) {
        const int nq = n_q - j0 < ATT_Q_MAX ? n_q - j0 : ATT_Q_MAX;
        float m[ATT_Q_MAX];
        __m512 l[ATT_Q_MAX];
        for (int j = 0; j < nq; j++) {
            for (int d = 0; d < hd; d += 16) _mm512_storeu_ps(acc[j] + d, _mm512_setzero_ps());
            m[j] = -INFINITY;
            l[j] = _mm512_setzero_ps();
        }
        for (int r0 = 0; r0 < it->n_rows; r0 += ATT_ROWS) {
            __mmask16 valid = tail_mask(it->n_rows - r0);
            if (it->mask)
                valid &= _mm_cmpneq_epi8_mask(_mm_maskz_loadu_epi8(valid, it->mask + r0), _mm_setzero_si128());
            if (!valid) continue;
            if (strided) prefetch_block(it, r0 + 2 * ATT_ROWS);
            const float *kb = kbuf, *vb = vbuf;
            size_t ks = (size_t)hd;
            if (it->type == IFN_KV_F32 && valid == 0xffff) {
                kb = (const float *)it->k + (size_t)r0 * stride;
                vb = (const float *)it->v + (size_t)r0 * stride;
                ks = stride;
            } else {
                widen_block(kbuf, it->k, it->type, stride, r0, hd, valid);
                widen_block(vbuf, it->v, it->type, stride, r0, hd, valid);
            }
            for (int j = 0; j < nq; j++) {
                __m512 s = _mm512_mul_ps(scores16(q + (size_t)(j0 + j) * hd, kb, ks, hd), scale);
                s = _mm512_mask_blend_ps(valid, neg_inf, s);
                __m512 mj = _mm512_set1_ps(m[j]);
                if (_mm512_cmp_ps_mask(s, mj, _CMP_GT_OQ)) { /* the running max grows: rare after a few blocks */
                    float bm = _mm512_reduce_max_ps(s);
                    __m512 corr = _mm512_set1_ps(expf(m[j] - bm));
                    for (int d = 0; d < hd; d += 16)
                        _mm512_storeu_ps(acc[j] + d, _mm512_mul_ps(_mm512_loadu_ps(acc[j] + d), corr));
                    l[j] = _mm512_mul_ps(l[j], corr);
                    m[j] = bm;
                    mj = _mm512_set1_ps(bm);
                }
                __m512 e = exp512_weight(_mm512_sub_ps(s, mj)); /* 0 where s = -inf (not visible) */
                l[j] = _mm512_add_ps(l[j], e);
                _mm512_store_ps(p, e);
                accumulate_v(acc[j], p, vb, ks, hd);
            }
        }
        for (int j = 0; j < nq; j++) {
            float sum = _mm512_reduce_add_ps(l[j]);
            __m512 inv = _mm512_set1_ps(sum > 0.0f ? 1.0f / sum : 0.0f);
            float *oj = out + (size_t)(j0 + j) * hd;
            for (int d = 0; d < hd; d += 16) _mm512_storeu_ps(oj + d, _mm512_mul_ps(_mm512_loadu_ps(acc[j] + d), inv));
        }
    }
}

const ops_kernels ops_kernels_avx512 = {
    .isa = IFN_ISA_AVX512,
    .rmsnorm = rmsnorm_avx512,
    .rope = rope_avx512,
    .softmax = softmax_avx512,
    .silu_mul = silu_mul_avx512,
    .layernorm = layernorm_avx512,
    .gelu_tanh = gelu_tanh_avx512,
    .kv_store = kv_store_avx512,
    .kv_load = kv_load_avx512,
    .attend_supports = attend_supports_avx512,
    .attend = attend_avx512,
};
