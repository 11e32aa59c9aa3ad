/* Probe loops with AVX-512: independent dependency chains from registers (enough of them to
 * cover the instruction latency on any current core), and a multi-stream read loop. */
#include <immintrin.h>
#include <stdint.h>

#include "probe.h"

#define CHAINS 12

double probe_loop_avx512(probe_op op, long iters)
{
    __m512 f[CHAINS];
    __m512i v[CHAINS];
    const __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
    const __m512i ia = _mm512_set1_epi8(3), ib = _mm512_set1_epi8(-2);
    const __m512bh ba = (__m512bh)_mm512_set1_epi16(0x3f80), bb = (__m512bh)_mm512_set1_epi16(0x3f80);
    for (int c = 0; c < CHAINS; c++) {
        f[c] = _mm512_set1_ps((float)c);
        v[c] = _mm512_set1_epi32(c);
    }
    double per_instr = 0.0;
    switch (op) {
    case PROBE_FP32_FMA:
        for (long i = 0; i < iters; i++)
            for (int c = 0; c < CHAINS; c++) f[c] = _mm512_fmadd_ps(f[c], a, b);
        per_instr = 32.0; /* 16 lanes x multiply + add */
        break;
    case PROBE_VNNI_INT8:
        for (long i = 0; i < iters; i++)
            for (int c = 0; c < CHAINS; c++) v[c] = _mm512_dpbusd_epi32(v[c], ia, ib);
        per_instr = 128.0; /* 64 byte products, each multiply + add */
        break;
    case PROBE_BF16_DOT:
        for (long i = 0; i < iters; i++)
            for (int c = 0; c < CHAINS; c++) f[c] = _mm512_dpbf16_ps(f[c], ba, bb);
        per_instr = 64.0; /* 32 bf16 products, each multiply + add */
        break;
    default: return 0.0;
    }
    /* Keep the results alive so the loops are not removed. */
    __m512 fs = f[0];
    __m512i vs = v[0];
    for (int c = 1; c < CHAINS; c++) {
        fs = _mm512_add_ps(fs, f[c]);
        vs = _mm512_add_epi32(vs, v[c]);
    }
    volatile float sink = _mm512_reduce_add_ps(fs) + (float)_mm512_reduce_add_epi32(vs);
    (void)sink;
    return per_instr * CHAINS * (double)iters;
}

double probe_read_avx512(const void *buf, size_t bytes)
{
    const __m512i *p = buf;
    size_t n = bytes / 64;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    /* Eight streams, each a contiguous eighth of the buffer, as a GEMV reads eight row blocks. */
    size_t part = n / 8;
    for (size_t i = 0; i < part; i++) {
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + i));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + part + i));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + 2 * part + i));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + 3 * part + i));
        s4 = _mm512_add_epi64(s4, _mm512_load_si512(p + 4 * part + i));
        s5 = _mm512_add_epi64(s5, _mm512_load_si512(p + 5 * part + i));
        s6 = _mm512_add_epi64(s6, _mm512_load_si512(p + 6 * part + i));
        s7 = _mm512_add_epi64(s7, _mm512_load_si512(p + 7 * part + i));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)),
                                 _mm512_add_epi64(_mm512_add_epi64(s4, s5), _mm512_add_epi64(s6, s7)));
    /* Summed as unsigned: gcc's _mm512_reduce_add_epi64 adds the lanes as signed long long, and
     * the sum of arbitrary bytes overflows it (undefined behaviour, which UBSan reports). */
    uint64_t lanes[8], sum = 0;
    _mm512_storeu_si512(lanes, s);
    for (int i = 0; i < 8; i++) sum += lanes[i];
    return (double)sum;
}
