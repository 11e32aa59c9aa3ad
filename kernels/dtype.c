#include "dtype.h"

#include <stdbool.h>
#include <string.h>

const char *ifn_dtype_name(ifn_dtype t)
{
    static const char *const names[IFN_DTYPE_COUNT] = { "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "i8", "u4", "i32",
                                                        "q4_k", "q6_k", "q5_0", "q5_1", "q5_k", "q3_k", "q2_k",
                                                        "iq4_nl" };
    return (unsigned)t < IFN_DTYPE_COUNT ? names[t] : "?";
}

int ifn_dtype_block_size(ifn_dtype t)
{
    if (t == IFN_DTYPE_Q4_K || t == IFN_DTYPE_Q6_K || t == IFN_DTYPE_Q5_K || t == IFN_DTYPE_Q3_K ||
        t == IFN_DTYPE_Q2_K)
        return 256;
    if (t == IFN_DTYPE_Q8_0 || t == IFN_DTYPE_Q4_0 || t == IFN_DTYPE_Q4_1 || t == IFN_DTYPE_Q5_0 ||
        t == IFN_DTYPE_Q5_1 || t == IFN_DTYPE_IQ4_NL)
        return 32;
    return t == IFN_DTYPE_U4 ? 2 : 1;
}

size_t ifn_dtype_block_bytes(ifn_dtype t)
{
    switch (t) {
    case IFN_DTYPE_F32: return 4;
    case IFN_DTYPE_F16: return 2;
    case IFN_DTYPE_BF16: return 2;
    case IFN_DTYPE_Q8_0: return 2 + 32;
    case IFN_DTYPE_Q4_0: return 2 + 16;
    case IFN_DTYPE_Q4_1: return 2 + 2 + 16;
    case IFN_DTYPE_I8: return 1;
    case IFN_DTYPE_U4: return 1;
    case IFN_DTYPE_I32: return 4;
    case IFN_DTYPE_Q4_K: return 2 + 2 + 12 + 128;
    case IFN_DTYPE_Q6_K: return 128 + 64 + 16 + 2;
    case IFN_DTYPE_Q5_0: return 2 + 4 + 16;
    case IFN_DTYPE_Q5_1: return 2 + 2 + 4 + 16;
    case IFN_DTYPE_Q5_K: return 2 + 2 + 12 + 32 + 128;
    case IFN_DTYPE_Q3_K: return 32 + 64 + 12 + 2;
    case IFN_DTYPE_Q2_K: return 16 + 64 + 2 + 2;
    case IFN_DTYPE_IQ4_NL: return 2 + 16;
    case IFN_DTYPE_COUNT: break;
    }
    return 0;
}

size_t ifn_dtype_row_bytes(ifn_dtype t, int64_t n)
{
    int bs = ifn_dtype_block_size(t);
    if (n < 0 || n % bs != 0) return 0;
    return (size_t)(n / bs) * ifn_dtype_block_bytes(t);
}

float ifn_fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do { man <<= 1; e++; } while ((man & 0x400u) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ifn_f32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);         /* overflow to inf */
    if (ax < 0x38800000u) {                                            /* subnormal or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                                      /* 14..24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u) - (112u << 23);       /* rebias, round even */
    return (uint16_t)(sign | (r >> 13));
}

static void q8_0_to_f32(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, src += 34) {
        uint16_t dh;
        memcpy(&dh, src, 2);
        float d = ifn_fp16_to_f32(dh);
        const int8_t *q = (const int8_t *)(src + 2);
        for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)q[j];
    }
}

static void q4_to_f32(const uint8_t *src, float *dst, int64_t n, int has_min)
{
    size_t bytes = has_min ? 20 : 18;
    for (int64_t b = 0; b < n / 32; b++, src += bytes) {
        uint16_t dh, mh = 0;
        memcpy(&dh, src, 2);
        if (has_min) memcpy(&mh, src + 2, 2);
        float d = ifn_fp16_to_f32(dh);
        float m = has_min ? ifn_fp16_to_f32(mh) : -8.0f * d;
        const uint8_t *qs = src + (has_min ? 4 : 2);
        for (int j = 0; j < 16; j++) {
            dst[b * 32 + j] = d * (float)(qs[j] & 0x0f) + m;
            dst[b * 32 + j + 16] = d * (float)(qs[j] >> 4) + m;
        }
    }
}

/* K-quants, computed as ggml's dequantize_row_q4_K / _q6_K do. Every product below is exact in
 * fp32 (an fp16's 11 significant bits times integers of at most 6 + 4 bits for Q4_K, 7 + 5 for
 * Q6_K), so only Q4_K's subtraction rounds. */

void ifn_q4_k_scale_min(const uint8_t *scales, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4);
        *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
    }
}

/* Q4_K's q (0..15) of value 32j + l: the low nibbles of a 32-byte run for even j, the high
 * ones for odd j. */
static int q4_k_q(const uint8_t *blk, int j, int l)
{
    const uint8_t *qs = blk + 16 + 32 * (j / 2);
    return (j & 1) ? qs[l] >> 4 : qs[l] & 0x0f;
}

static void q6_k_to_f32(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / 256; b++, src += 210, dst += 256) {
        const uint8_t *ql = src, *qh = src + 128;
        const int8_t *scales = (const int8_t *)(src + 192);
        uint16_t dh;
        memcpy(&dh, src + 208, 2);
        float d = ifn_fp16_to_f32(dh);
        for (int v = 0; v < 256; v++) {
            int h = v / 128, k = (v % 128) / 32, l = v % 32;
            uint8_t lo = ql[64 * h + l + 32 * (k & 1)];
            int q = ((k < 2 ? lo & 0x0f : lo >> 4) | (((qh[32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
            dst[v] = d * (float)scales[v / 16] * (float)q;
        }
    }
}

/* Q5_0 / Q5_1: the 5-bit q of each of a block's 32 values. */
static void q5_unpack(const uint8_t *qh, const uint8_t *qs, int q[32])
{
    uint32_t h;
    memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0f) | (int)(((h >> j) & 1u) << 4);
        q[j + 16] = (qs[j] >> 4) | (int)(((h >> (j + 16)) & 1u) << 4);
    }
}

/* As ggml's dequantize_row_q5_0 / _q5_1: d * (q - 16), or d * q + m (the product is exact, the
 * sum rounds once). */
static void q5_to_f32(const uint8_t *src, float *dst, int64_t n, int has_min)
{
    size_t bytes = has_min ? 24 : 22;
    for (int64_t b = 0; b < n / 32; b++, src += bytes, dst += 32) {
        uint16_t dh, mh = 0;
        memcpy(&dh, src, 2);
        if (has_min) memcpy(&mh, src + 2, 2);
        float d = ifn_fp16_to_f32(dh), m = ifn_fp16_to_f32(mh);
        int q[32];
        q5_unpack(src + (has_min ? 4 : 2), src + (has_min ? 8 : 6), q);
        for (int j = 0; j < 32; j++) dst[j] = has_min ? d * (float)q[j] + m : d * (float)(q[j] - 16);
    }
}

/* Q5_K's q (0..31) of value 32j + l: Q4_K's nibble plus 16 when bit j of qh[l] is set. */
static int q5_k_q(const uint8_t *blk, int j, int l)
{
    const uint8_t *qh = blk + 16, *qs = blk + 48 + 32 * (j / 2);
    int lo = (j & 1) ? qs[l] >> 4 : qs[l] & 0x0f;
    return lo | (((qh[l] >> j) & 1) << 4);
}

/* Q4_K (144-byte blocks) and Q5_K (176): 256 values in 8 sub-blocks of 32, each
 * d * sc * q - dmin * m with the 6-bit sc and m of ifn_q4_k_scale_min; they differ in q only. */
static void k_min_to_f32(const uint8_t *src, float *dst, int64_t n, bool five_bit)
{
    const size_t block_bytes = five_bit ? 176 : 144;
    for (int64_t b = 0; b < n / 256; b++, src += block_bytes, dst += 256) {
        uint16_t dh, mh;
        memcpy(&dh, src, 2);
        memcpy(&mh, src + 2, 2);
        float d = ifn_fp16_to_f32(dh), dmin = ifn_fp16_to_f32(mh);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            ifn_q4_k_scale_min(src + 4, j, &sc, &m);
            float scale = d * (float)sc, min = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                dst[32 * j + l] = scale * (float)(five_bit ? q5_k_q(src, j, l) : q4_k_q(src, j, l)) - min;
        }
    }
}

int ifn_q3_k_scale(const uint8_t *scales, int i)
{
    int low = (scales[i % 8] >> (4 * (i / 8))) & 0x0f;
    int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
    return low | (high << 4);
}

/* The 2 bits of value v of a Q2_K / Q3_K super-block, from its 64 bytes qs. */
static int k_2bits(const uint8_t *qs, int v)
{
    int h = v / 128, k = (v % 128) / 32, l = v % 32;
    return (qs[32 * h + l] >> (2 * k)) & 3;
}

/* Q3_K's q (-4..3) of value v. */
static int q3_k_q(const uint8_t *blk, int v)
{
    int h = v / 128, k = (v % 128) / 32, l = v % 32;
    return k_2bits(blk + 32, v) - ((blk[l] >> (4 * h + k)) & 1 ? 0 : 4);
}

static void q3_k_to_f32(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / 256; b++, src += 110, dst += 256) {
        uint16_t dh;
        memcpy(&dh, src + 108, 2);
        float d = ifn_fp16_to_f32(dh);
        for (int i = 0; i < 16; i++) {
            float scale = d * (float)(ifn_q3_k_scale(src + 96, i) - 32);
            for (int l = 0; l < 16; l++) dst[16 * i + l] = scale * (float)q3_k_q(src, 16 * i + l);
        }
    }
}

static void q2_k_to_f32(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / 256; b++, src += 84, dst += 256) {
        uint16_t dh, mh;
        memcpy(&dh, src + 80, 2);
        memcpy(&mh, src + 82, 2);
        float d = ifn_fp16_to_f32(dh), dmin = ifn_fp16_to_f32(mh);
        for (int i = 0; i < 16; i++) {
            float scale = d * (float)(src[i] & 0x0f), min = dmin * (float)(src[i] >> 4);
            for (int l = 0; l < 16; l++) dst[16 * i + l] = scale * (float)k_2bits(src + 16, 16 * i + l) - min;
        }
    }
}

const int8_t ifn_iq4_nl_values[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };

static void iq4_nl_to_f32(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, src += 18, dst += 32) {
        uint16_t dh;
        memcpy(&dh, src, 2);
        float d = ifn_fp16_to_f32(dh);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)ifn_iq4_nl_values[src[2 + j] & 0x0f];
            dst[j + 16] = d * (float)ifn_iq4_nl_values[src[2 + j] >> 4];
        }
    }
}

int ifn_dtype_is_w8_exact(ifn_dtype t)
{
    return t == IFN_DTYPE_Q8_0 || t == IFN_DTYPE_Q5_0 || t == IFN_DTYPE_IQ4_NL || t == IFN_DTYPE_Q3_K;
}

/* Q3_K as int8 per 32 values: its two 16-value sub-blocks have scales d * s1 and d * s2, so
 * scale -d and q' = -(s * q) hold both exactly; s * q is -124..128 (s -32..31, q -4..3), so its
 * negation -128..124 fits int8. */
static void q3_k_to_w8(const uint8_t *src, int8_t *q, float *scales, int64_t n)
{
    for (int64_t b = 0; b < n / 256; b++, src += 110, q += 256, scales += 8) {
        uint16_t dh;
        memcpy(&dh, src + 108, 2);
        for (int g = 0; g < 8; g++) scales[g] = -ifn_fp16_to_f32(dh);
        for (int v = 0; v < 256; v++) q[v] = (int8_t)(-(ifn_q3_k_scale(src + 96, v / 16) - 32) * q3_k_q(src, v));
    }
}

void ifn_dtype_to_w8(ifn_dtype t, const void *src, int8_t *q, float *scales, int64_t n)
{
    const uint8_t *s = src;
    if (t == IFN_DTYPE_Q3_K) {
        q3_k_to_w8(s, q, scales, n);
        return;
    }
    size_t bytes = ifn_dtype_block_bytes(t);
    for (int64_t b = 0; b < n / 32; b++, s += bytes, q += 32) {
        uint16_t dh;
        memcpy(&dh, s, 2);
        scales[b] = ifn_fp16_to_f32(dh);
        int v[32];
        switch (t) {
        case IFN_DTYPE_Q5_0:
            q5_unpack(s + 2, s + 6, v);
            for (int j = 0; j < 32; j++) q[j] = (int8_t)(v[j] - 16);
            break;
        case IFN_DTYPE_IQ4_NL:
            for (int j = 0; j < 16; j++) {
                q[j] = ifn_iq4_nl_values[s[2 + j] & 0x0f];
                q[j + 16] = ifn_iq4_nl_values[s[2 + j] >> 4];
            }
            break;
        default: /* Q8_0 */
            memcpy(q, s + 2, 32);
            break;
        }
    }
}

void ifn_dtype_to_f32(ifn_dtype t, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    switch (t) {
    case IFN_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case IFN_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = ifn_fp16_to_f32(h);
        }
        break;
    case IFN_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = ifn_bf16_to_f32(h);
        }
        break;
    case IFN_DTYPE_Q8_0: q8_0_to_f32(s, dst, n); break;
    case IFN_DTYPE_Q4_0: q4_to_f32(s, dst, n, 0); break;
    case IFN_DTYPE_Q4_1: q4_to_f32(s, dst, n, 1); break;
    case IFN_DTYPE_I8:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)(int8_t)s[i];
        break;
    case IFN_DTYPE_U4:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((s[i / 2] >> (4 * (i & 1))) & 0x0f);
        break;
    case IFN_DTYPE_I32:
        for (int64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = (float)v;
        }
        break;
    case IFN_DTYPE_Q4_K: k_min_to_f32(s, dst, n, false); break;
    case IFN_DTYPE_Q6_K: q6_k_to_f32(s, dst, n); break;
    case IFN_DTYPE_Q5_0: q5_to_f32(s, dst, n, 0); break;
    case IFN_DTYPE_Q5_1: q5_to_f32(s, dst, n, 1); break;
    case IFN_DTYPE_Q5_K: k_min_to_f32(s, dst, n, true); break;
    case IFN_DTYPE_Q3_K: q3_k_to_f32(s, dst, n); break;
    case IFN_DTYPE_Q2_K: q2_k_to_f32(s, dst, n); break;
    case IFN_DTYPE_IQ4_NL: iq4_nl_to_f32(s, dst, n); break;
    case IFN_DTYPE_COUNT: break;
    }
}
