/* AVX2 (+ FMA + F16C) kernels of ops.h. Compiled with those flags only for this file; ops.c
 * runs them only when ifn_isa says the machine and OS allow AVX2.
 *
 * The same algorithms as ops_avx512.c (see its notes) on 8 lanes: Cephes exp with a two-step
 * 2^n, double sums in RMSNorm and softmax, and attention over blocks of 8 rows with an online
 * softmax (reduce8: 6 hadds, 2 lane permutes, 1 add). Tails of f32 arrays use maskload /
 * maskstore; tails of fp16/bf16 rows use the scalar conversions of dtype.h, which round the
 * same way. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "ops_isa.h"

#define ATT_ROWS 8  /* rows per block: one vector of scores */
#define ATT_Q_MAX 8 /* query heads per pass over the rows */

/* Lanes < n set (n clamped to 0..8). */
static inline __m256i tail_mask(int n)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
}

/* exp(x) = p * 2^n with x already clamped: n = round(x / ln 2), p the polynomial for the
 * remainder (Cody-Waite reduction). */
static inline __m256 exp256_reduced(__m256 x, __m256i *n_out)
{
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    *n_out = _mm256_cvtps_epi32(n);
    return p;
}

static inline __m256 exp256(__m256 x)
{
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(89.0f)), _mm256_set1_ps(-104.0f));
    __m256i ni;
    __m256 p = exp256_reduced(x, &ni);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* exp(x) for x <= 0 in attention: 0 below -87, where exp(x) would be subnormal (see
 * exp512_weight in ops_avx512.c). */
static inline __m256 exp256_weight(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_max_ps(x, lo);
    __m256i ni;
    __m256 p = exp256_reduced(x, &ni);
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float hmax8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

static inline double hsum4d(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static inline void sumsq_pd(__m256 v, __m256d *lo, __m256d *hi)
{
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    *lo = _mm256_fmadd_pd(a, a, *lo);
    *hi = _mm256_fmadd_pd(b, b, *hi);
}

static void rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), s2 = _mm256_setzero_pd(), s3 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        sumsq_pd(_mm256_loadu_ps(x + i), &s0, &s1);
        sumsq_pd(_mm256_loadu_ps(x + i + 8), &s2, &s3);
    }
    for (; i < n; i += 8) sumsq_pd(_mm256_maskload_ps(x + i, tail_mask(n - i)), &s0, &s1);
    double ss = hsum4d(_mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3)));
    __m256 scale = _mm256_set1_ps((float)(1.0 / sqrt(ss / n + eps)));
    for (i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, m), scale);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(v, _mm256_maskload_ps(w + i, m)));
    }
}

static void rope_avx2(float *x, int n_heads, int head_dim, const float *cs, ifn_rope_layout layout)
{
    const float *C = cs, *S = cs + head_dim;
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        if (layout == IFN_ROPE_INTERLEAVED) {
            for (int d = 0; d < head_dim; d += 8) {
                __m256i m = tail_mask(head_dim - d);
                __m256 v = _mm256_maskload_ps(xh + d, m);
                __m256 partner = _mm256_permute_ps(v, 0xb1); /* swaps (2i, 2i+1) */
                __m256 r = _mm256_fmadd_ps(v, _mm256_maskload_ps(C + d, m),
                                           _mm256_mul_ps(partner, _mm256_maskload_ps(S + d, m)));
                _mm256_maskstore_ps(xh + d, m, r);
            }
        } else {
            for (int i = 0; i < half; i += 8) {
                __m256i m = tail_mask(half - i);
                __m256 a = _mm256_maskload_ps(xh + i, m), b = _mm256_maskload_ps(xh + half + i, m);
                __m256 c = _mm256_maskload_ps(C + i, m);
                __m256 ra = _mm256_fmadd_ps(a, c, _mm256_mul_ps(b, _mm256_maskload_ps(S + i, m)));
                __m256 rb = _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, _mm256_maskload_ps(S + half + i, m)));
                _mm256_maskstore_ps(xh + i, m, ra);
                _mm256_maskstore_ps(xh + half + i, m, rb);
            }
        }
    }
}

static void softmax_avx2(float *x, int n)
{
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
    __m256 mx = neg_inf;
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m)));
    }
    __m256 max = _mm256_set1_ps(hmax8(mx));
    __m256d sum = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), max)), _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(x + i, m, e);
        sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / hsum4d(sum)));
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
    }
}

static void silu_mul_avx2(float *gate, const float *up, int n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 g = _mm256_maskload_ps(gate + i, m);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 r = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_maskload_ps(up + i, m));
        _mm256_maskstore_ps(gate + i, m, r);
    }
}

/* LayerNorm: the mean, then the squared deviations, both summed in double (as the reference). */
static void layernorm_avx2(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_maskload_ps(x + i, tail_mask(n - i));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    const double mean = hsum4d(_mm256_add_pd(s0, s1)) / n;
    const __m256d md = _mm256_set1_pd(mean);
    s0 = s1 = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_maskload_ps(x + i, m);
        /* lanes past n: their deviation is masked to 0 */
        __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), md);
        __m256d c = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), md);
        a = _mm256_and_pd(a, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m))));
        c = _mm256_and_pd(c, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1))));
        s0 = _mm256_fmadd_pd(a, a, s0);
        s1 = _mm256_fmadd_pd(c, c, s1);
    }
    const double inv = 1.0 / sqrt(hsum4d(_mm256_add_pd(s0, s1)) / n + eps);
    const __m256 mf = _mm256_set1_ps((float)mean), sc = _mm256_set1_ps((float)inv);
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mf), sc);
        v = _mm256_mul_ps(v, _mm256_maskload_ps(w + i, m));
        if (b) v = _mm256_add_ps(v, _mm256_maskload_ps(b + i, m));
        _mm256_maskstore_ps(out + i, m, v);
    }
}

/* GELU tanh as x / (1 + exp(-2u)) (see ops_avx512.c). */
static void gelu_tanh_avx2(float *x, int n)
{
    const __m256 one = _mm256_set1_ps(1.0f), k2 = _mm256_set1_ps(-2.0f * 0.79788456080286535588f),
                 c = _mm256_set1_ps(0.044715f);
    for (int i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_maskload_ps(x + i, m);
        __m256 u = _mm256_mul_ps(k2, _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v));
        _mm256_maskstore_ps(x + i, m, _mm256_div_ps(v, _mm256_add_ps(one, exp256(u))));
    }
}

/* fp32 -> bf16 bits of 8 lanes (ifn_f32_to_bf16: nearest even, NaN kept quiet). */
static inline __m128i bf16_round(__m256 v)
{
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    /* |u| > inf as signed ints: both sides are below 2^31 */
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, q, nan);
    /* pack 32 -> 16 (values fit), then take the low 64 bits of each 128-bit lane */
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    return _mm256_castsi256_si128(packed);
}

static void kv_store_avx2(void *dst, const float *src, int n, ifn_kv_type type)
{
    if (type == IFN_KV_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d16 = dst;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        __m128i h = type == IFN_KV_F16 ? _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
                                       : bf16_round(v);
        _mm_storeu_si128((__m128i *)(d16 + i), h);
    }
    for (; i < n; i++) d16[i] = type == IFN_KV_F16 ? ifn_f32_to_fp16(src[i]) : ifn_f32_to_bf16(src[i]);
}

/* 8 elements of a KV row, widened. */
static inline __m256 kv_load8(const void *src, ifn_kv_type type, size_t i)
{
    switch (type) {
    case IFN_KV_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
    case IFN_KV_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i))), 16));
    default: return _mm256_loadu_ps((const float *)src + i);
    }
}

static void kv_load_avx2(float *dst, const void *src, int n, ifn_kv_type type)
{
    if (type == IFN_KV_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, kv_load8(src, type, (size_t)i));
    for (; i < n; i++) {
        uint16_t h = ((const uint16_t *)src)[i];
        dst[i] = type == IFN_KV_F16 ? ifn_fp16_to_f32(h) : ifn_bf16_to_f32(h);
    }
}

/* ---- attention -------------------------------------------------------------------------- */

static bool attend_supports_avx2(int head_dim)
{
    return head_dim > 0 && head_dim % 8 == 0 && head_dim <= IFN_OPS_HEAD_DIM_MAX;
}

/* Lane r of the result is the sum of the 8 lanes of v[r]. */
static inline __m256 reduce8(const __m256 v[8])
{
    __m256 h01 = _mm256_hadd_ps(v[0], v[1]), h23 = _mm256_hadd_ps(v[2], v[3]);
    __m256 h45 = _mm256_hadd_ps(v[4], v[5]), h67 = _mm256_hadd_ps(v[6], v[7]);
    __m256 a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67); /* per 128-bit half: v0..v3 / v4..v7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

static inline __m256 scores8(const float *q, const float *kb, size_t ks, int head_dim)
{
    __m256 acc[ATT_ROWS];
    for (int r = 0; r < ATT_ROWS; r++) acc[r] = _mm256_setzero_ps();
    for (int d = 0; d < head_dim; d += 8) {
        __m256 qd = _mm256_loadu_ps(q + d);
        for (int r = 0; r < ATT_ROWS; r++) acc[r] = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kb + r * ks + d), acc[r]);
    }
    return reduce8(acc);
}

/* acc[head_dim] += sum_r p[r] vb[r]: 32 floats at a time with two sets of rows. */
static inline void accumulate_v(float *acc, const float *p, const float *vb, size_t ks, int head_dim)
{
    int d = 0;
    for (; d + 32 <= head_dim; d += 32) {
        __m256 a0[4], a1[4];
        for (int c = 0; c < 4; c++) {
            a0[c] = _mm256_loadu_ps(acc + d + 8 * c);
            a1[c] = _mm256_setzero_ps();
        }
        for (int r = 0; r < ATT_ROWS; r += 2) {
            __m256 p0 = _mm256_set1_ps(p[r]), p1 = _mm256_set1_ps(p[r + 1]);
            for (int c = 0; c < 4; c++) {
                a0[c] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(vb + r * ks + d + 8 * c), a0[c]);
                a1[c] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(vb + (r + 1) * ks + d + 8 * c), a1[c]);
            }
        }
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(acc + d + 8 * c, _mm256_add_ps(a0[c], a1[c]));
    }
    for (; d < head_dim; d += 8) {
        __m256 a[4] = { _mm256_loadu_ps(acc + d), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
        for (int r = 0; r < ATT_ROWS; r++) a[r % 4] = _mm256_fmadd_ps(_mm256_set1_ps(p[r]), _mm256_loadu_ps(vb + r * ks + d), a[r % 4]);
        _mm256_storeu_ps(acc + d, _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    }
}

static void widen_block(float *buf, const void *base, ifn_kv_type type, size_t stride, int r0, int head_dim,
                        unsigned valid)
{
    const size_t es = ifn_kv_type_size(type);
    for (int r = 0; r < ATT_ROWS; r++) {
        float *dst = buf + (size_t)r * head_dim;
        if (!((valid >> r) & 1)) {
            for (int d = 0; d < head_dim; d += 8) _mm256_storeu_ps(dst + d, _mm256_setzero_ps());
            continue;
        }
        const void *src = (const char *)base + (size_t)(r0 + r) * stride * es;
        for (int d = 0; d < head_dim; d += 8) _mm256_storeu_ps(dst + d, kv_load8(src, type, (size_t)d));
    }
}

/* Asks for the K and V rows of the block starting at r0 (see prefetch_block in ops_avx512.c). */
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

static void attend_avx2(float *out, const float *q, int n_q, const ops_attn_item *it)
{
    const int hd = it->head_dim;
    const size_t stride = it->row_stride;
    const __m256 scale = _mm256_set1_ps(it->scale), neg_inf = _mm256_set1_ps(-INFINITY);
    const bool strided = stride != (size_t)hd; /* contiguous rows: the hardware prefetches them */
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    _Alignas(32) float kbuf[ATT_ROWS * IFN_OPS_HEAD_DIM_MAX], vbuf[ATT_ROWS * IFN_OPS_HEAD_DIM_MAX];
    _Alignas(32) float acc[ATT_Q_MAX][IFN_OPS_HEAD_DIM_MAX];
    _Alignas(32) float p[ATT_ROWS];
    for (int j0 = 0; j0 < n_q; j0 += ATT_Q_MAX) {
        const int nq = n_q - j0 < ATT_Q_MAX ? n_q - j0 : ATT_Q_MAX;
        float m[ATT_Q_MAX];
        __m256 l[ATT_Q_MAX];
        for (int j = 0; j < nq; j++) {
            for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(acc[j] + d, _mm256_setzero_ps());
            m[j] = -INFINITY;
            l[j] = _mm256_setzero_ps();
        }
        for (int r0 = 0; r0 < it->n_rows; r0 += ATT_ROWS) {
            int nr = it->n_rows - r0 < ATT_ROWS ? it->n_rows - r0 : ATT_ROWS;
            unsigned valid = (1u << nr) - 1;
            if (it->mask)
                for (int r = 0; r < nr; r++)
                    if (!it->mask[r0 + r]) valid &= ~(1u << r);
            if (!valid) continue;
            const __m256 vmask = _mm256_castsi256_ps(
                _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)valid), lane_bit), lane_bit));
            if (strided) prefetch_block(it, r0 + 4 * ATT_ROWS);
            const float *kb = kbuf, *vb = vbuf;
            size_t ks = (size_t)hd;
            if (it->type == IFN_KV_F32 && valid == 0xff) {
                kb = (const float *)it->k + (size_t)r0 * stride;
                vb = (const float *)it->v + (size_t)r0 * stride;
                ks = stride;
            } else {
                widen_block(kbuf, it->k, it->type, stride, r0, hd, valid);
                widen_block(vbuf, it->v, it->type, stride, r0, hd, valid);
            }
            for (int j = 0; j < nq; j++) {
                __m256 s = _mm256_mul_ps(scores8(q + (size_t)(j0 + j) * hd, kb, ks, hd), scale);
                s = _mm256_blendv_ps(neg_inf, s, vmask);
                __m256 mj = _mm256_set1_ps(m[j]);
                if (_mm256_movemask_ps(_mm256_cmp_ps(s, mj, _CMP_GT_OQ))) { /* the running max grows */
                    float bm = hmax8(s);
                    __m256 corr = _mm256_set1_ps(expf(m[j] - bm));
                    for (int d = 0; d < hd; d += 8)
                        _mm256_storeu_ps(acc[j] + d, _mm256_mul_ps(_mm256_loadu_ps(acc[j] + d), corr));
                    l[j] = _mm256_mul_ps(l[j], corr);
                    m[j] = bm;
                    mj = _mm256_set1_ps(bm);
                }
                __m256 e = exp256_weight(_mm256_sub_ps(s, mj)); /* 0 where s = -inf (not visible) */
                l[j] = _mm256_add_ps(l[j], e);
                _mm256_store_ps(p, e);
                accumulate_v(acc[j], p, vb, ks, hd);
            }
        }
        for (int j = 0; j < nq; j++) {
            float sum = hsum8(l[j]);
            __m256 inv = _mm256_set1_ps(sum > 0.0f ? 1.0f / sum : 0.0f);
            float *oj = out + (size_t)(j0 + j) * hd;
            for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(oj + d, _mm256_mul_ps(_mm256_loadu_ps(acc[j] + d), inv));
        }
    }
}

const ops_kernels ops_kernels_avx2 = {
    .isa = IFN_ISA_AVX2,
    .rmsnorm = rmsnorm_avx2,
    .rope = rope_avx2,
    .softmax = softmax_avx2,
    .silu_mul = silu_mul_avx2,
    .layernorm = layernorm_avx2,
    .gelu_tanh = gelu_tanh_avx2,
    .kv_store = kv_store_avx2,
    .kv_load = kv_load_avx2,
    .attend_supports = attend_supports_avx2,
    .attend = attend_avx2,
};
