/* AVX-512 kernels for the floating-point recipes: A16 (BF16 and W4 weights, bf16
 * activations, vdpbf16ps) and F32 (F32 and F16 weights, fp32 activations, vfmadd).
 *
 * Notes
 * -----
 * A16. Lanes are the 16 rows of a row block. A VNNI-2 bf16 vector (qweight.h) holds 16 rows x
 * 2 inputs, so
 *     vdpbf16ps acc, w, broadcast(bf16 activation pair 2k, 2k+1 of row i)
 * adds two products to each of 16 row sums. BF16 weights are stored in exactly that order.
 * W4 weights are expanded per 8-input step (64 bytes: 16 rows x 8 nibbles, one dword per
 * row) into four such vectors, with the reference's rounding:
 *     vpunpckl/hdq: row dwords duplicated into lane pairs, rows {0,1,4,5,8,9,12,13} in one
 *         vector and the other eight in the other (lane-local, so no cross-lane shuffle)
 *     vpsrlvd by the nibble's bit offset (even lanes input 2t, odd lanes input 2t + 1)
 *     vpermps from a 16-entry table: (float)(u - 8), or (float)u if asymmetric (it reads only
 *         the index's low 4 bits, so no mask)
 *     * scale, or fmadd(scale, u, min), in fp32, as the reference computes the value
 *     vcvtne2ps2bf16 (round to nearest even, as ifn_f32_to_bf16 for non-NaN values)
 * 31 instructions per 64 bytes of W4, which bounds the m = 1 GEMV at ~20 GB/s per core;
 * the rows come out permuted, and each accumulator is put back in order once, at the store.
 * The GEMV kernel expands each step once for all m rows; the GEMM kernel expands a k chunk
 * of two row blocks into an L1 buffer (32 KB) that every tile of rows then reuses.
 *
 * A16 register map, tile of mt rows x nb row blocks: acc[chains][mt][nb] fp32 sums (chains
 * = 4, 2 or 1 so that a tile keeps 12 or more in flight: vdpbf16ps has ~6 cycles of latency
 * and issues 2 per cycle), the nb weight vectors of the current input pair, and the
 * broadcast activation pair. GEMV (m <= 8): mt = m, nb = 1 over all of k, one sequential
 * stream per thread with a 16 KiB software prefetch. GEMM (m > 8): tiles of 8 rows x 2 row
 * blocks (16 sums; measured 10% ahead of 4 x 2 with two chains) over k chunks of 512
 * inputs; the two row blocks' chunk (32 KB of bf16) stays in L1 while every tile of rows
 * passes over it, and partial sums go through y between chunks (masked loads/stores past
 * n_out; by the next chunk the stores have long retired, so they forward fine).
 *
 * F32 (F32, F16 rows, plain n_pad x k_pad): lanes run along k. A tile of 4 weight rows x 4
 * activation rows keeps 16 accumulators; per 16 inputs it loads 4 weight vectors (F16:
 * vcvtph2ps) and 4 activation vectors for 16 FMAs, and reduces each accumulator
 * horizontally at the end. These are the exact-ish reference-grade paths: they stream the
 * weights once for m <= 4 and are far ahead of the scalar code otherwise, no more.
 *
 * Measured figures are in gemm_avx512_int8.c's notes, with the command that reproduces them.
 */
#include <immintrin.h>
#include <string.h>

#include "gemm_avx512_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

enum {
    GEMV_MAX_ROWS = 8,      /* m up to this: one pass over the weights */
    PREFETCH_BYTES = 16384, /* software prefetch distance in each weight stream */
    TILE_ROWS = 8,          /* A16 GEMM tile: activation rows ... */
    TILE_BLOCKS = 2,        /* ... x row blocks */
    K_CHUNK = 512,          /* A16 GEMM: inputs per chunk (a multiple of 64) */
    MAX_TILE_ROWS = 8,      /* array bounds for the tiles' registers */
    MAX_TILE_BLOCKS = 2,
    MAX_CHAINS = 4,
    F32_ROWS = 4,           /* F32 tile: weight rows ... */
    F32_ACTS = 4,           /* ... x activation rows */
};

/* ---- A16: bf16 dot products on VNNI-2 vectors ---- */

ALWAYS_INLINE __m512bh broadcast_pair(const uint16_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return (__m512bh)_mm512_set1_epi32(v);
}

/* Expanded W4 vectors hold the 16 rows in the lane order that the lane-local unpacks leave
 * them in (see w4_expand_step); this puts row r back in lane r. */
ALWAYS_INLINE __m512 unpermute_rows(__m512 v)
{
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15), v);
}

ALWAYS_INLINE void store_rows(float *dst, int64_t n0, int64_t n_out, __m512 v, bool accumulate)
{
    __mmask16 mask = n0 + QW_ROWS <= n_out ? (__mmask16)0xffff : (__mmask16)((1u << (n_out - n0)) - 1);
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst));
    _mm512_mask_storeu_ps(dst, mask, v);
}

/* Independent accumulators per tile element: vdpbf16ps has about 6 cycles of latency and
 * two issue slots per cycle, so a tile wants 12 or more sums in flight. */
ALWAYS_INLINE int a16_chains(int mt, int nb) { return mt * nb <= 2 ? 4 : mt * nb <= 8 ? 2 : 1; }

/* y rows [i0, i0 + mt) for nb row blocks starting at weight row n0, from VNNI-2 vectors
 * wv[b] covering inputs [k0, k0 + k_len) (k_len a multiple of 64); adds to y when
 * accumulate; rows of expanded W4 are un-permuted when permuted. */
ALWAYS_INLINE void a16_tile(float *y, int64_t ldy, const gemm_act *a, const uint16_t *const *wv, int64_t n0,
                            int64_t n_out, int64_t k0, int64_t k_len, int i0, int mt, int nb, bool accumulate,
                            bool permuted, int prefetch)
{
    const int chains = a16_chains(mt, nb);
    const int64_t block_bytes = QW_ROWS * 2 * a->k_pad; /* one row block of VNNI-2 bf16 */
    __m512 acc[MAX_CHAINS][MAX_TILE_ROWS][MAX_TILE_BLOCKS];
    const uint16_t *x[MAX_TILE_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < mt; i++) x[i] = a->bf16 + (size_t)(i0 + i) * (size_t)a->k_pad + (size_t)k0;
#pragma GCC unroll 4
    for (int c = 0; c < chains; c++)
#pragma GCC unroll 8
        for (int i = 0; i < mt; i++)
#pragma GCC unroll 2
            for (int b = 0; b < nb; b++) acc[c][i][b] = _mm512_setzero_ps();

    for (int64_t p = 0; p < k_len / 2; p += chains) {
        /* Past the end of its row block a stream's prefetch would land in the block another
         * stream of this tile reads, so it skips ahead to its own block of the next tile. */
        int64_t offset = (k0 / 2 + p + chains) * 64; /* bytes into the row block, past this step */
        size_t skip = offset + prefetch > block_bytes ? (size_t)(nb - 1) * (size_t)block_bytes : 0;
#pragma GCC unroll 4
        for (int c = 0; c < chains; c++) {
            __m512bh v[MAX_TILE_BLOCKS];
#pragma GCC unroll 2
            for (int b = 0; b < nb; b++) {
                const uint16_t *src = wv[b] + (size_t)(p + c) * 32;
                if (prefetch) _mm_prefetch((const char *)src + skip + prefetch, _MM_HINT_T0);
                v[b] = (__m512bh)_mm512_load_si512(src);
            }
#pragma GCC unroll 8
            for (int i = 0; i < mt; i++) {
                __m512bh xp = broadcast_pair(x[i] + 2 * (p + c));
#pragma GCC unroll 2
                for (int b = 0; b < nb; b++) acc[c][i][b] = _mm512_dpbf16_ps(acc[c][i][b], v[b], xp);
            }
        }
    }

#pragma GCC unroll 8
    for (int i = 0; i < mt; i++)
#pragma GCC unroll 2
        for (int b = 0; b < nb; b++) {
            __m512 sum = acc[0][i][b];
#pragma GCC unroll 4
            for (int c = 1; c < chains; c++) sum = _mm512_add_ps(sum, acc[c][i][b]);
            if (permuted) sum = unpermute_rows(sum);
            int64_t n = n0 + (int64_t)b * QW_ROWS;
            store_rows(y + (size_t)(i0 + i) * (size_t)ldy + (size_t)n, n, n_out, sum, accumulate);
        }
}

/* a16_tile for any mt in 1..MAX_TILE_ROWS (nb constant). */
ALWAYS_INLINE void a16_tile_rows(float *y, int64_t ldy, const gemm_act *a, const uint16_t *const *wv, int64_t n0,
                                 int64_t n_out, int64_t k0, int64_t k_len, int i0, int mt, int nb, bool accumulate,
                                 bool permuted, int prefetch)
{
    switch (mt) {
    case 1: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 1, nb, accumulate, permuted, prefetch); break;
    case 2: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 2, nb, accumulate, permuted, prefetch); break;
    case 3: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 3, nb, accumulate, permuted, prefetch); break;
    case 4: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 4, nb, accumulate, permuted, prefetch); break;
    case 5: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 5, nb, accumulate, permuted, prefetch); break;
    case 6: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 6, nb, accumulate, permuted, prefetch); break;
    case 7: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 7, nb, accumulate, permuted, prefetch); break;
    case 8: a16_tile(y, ldy, a, wv, n0, n_out, k0, k_len, i0, 8, nb, accumulate, permuted, prefetch); break;
    default: break;
    }
}

/* Every GEMM tile of rows over one k chunk of nb row blocks' VNNI-2 vectors wv. */
ALWAYS_INLINE void a16_gemm_chunk(float *y, int64_t ldy, const gemm_act *a, const uint16_t *const *wv, int64_t n0,
                                  int64_t n_out, int64_t k0, int64_t k_len, int nb, bool permuted, int prefetch)
{
    if (nb < 1 || nb > TILE_BLOCKS) __builtin_unreachable();
    for (int i = 0; i < a->m; i += TILE_ROWS) {
        int mt = a->m - i < TILE_ROWS ? a->m - i : TILE_ROWS;
        if (mt < 1 || mt > TILE_ROWS) __builtin_unreachable();
        if (nb == 2) a16_tile_rows(y, ldy, a, wv, n0, n_out, k0, k_len, i, mt, 2, k0 > 0, permuted, prefetch);
        else a16_tile_rows(y, ldy, a, wv, n0, n_out, k0, k_len, i, mt, 1, k0 > 0, permuted, prefetch);
    }
}

/* m <= GEMV_MAX_ROWS: each row block once, in one sequential stream. */
static void bf16_gemv(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    if (a->m > GEMV_MAX_ROWS) __builtin_unreachable(); /* the lookup sends larger m to bf16_gemm */
    for (int64_t rb = rb0; rb < rb1; rb++) {
        const uint16_t *wv[1] = { (const uint16_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad };
        a16_tile_rows(y, ldy, a, wv, rb * QW_ROWS, w->n_out, 0, w->k_pad, 0, a->m, 1, false, false, PREFETCH_BYTES);
    }
}

static void bf16_gemm(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    for (int64_t rb = rb0; rb < rb1; rb += TILE_BLOCKS) {
        int nb = rb1 - rb < TILE_BLOCKS ? (int)(rb1 - rb) : TILE_BLOCKS;
        for (int64_t k0 = 0; k0 < w->k_pad; k0 += K_CHUNK) {
            int64_t k_len = w->k_pad - k0 < K_CHUNK ? w->k_pad - k0 : K_CHUNK;
            const uint16_t *wv[MAX_TILE_BLOCKS];
            for (int b = 0; b < nb; b++)
                wv[b] = (const uint16_t *)w->data + ((size_t)(rb + b) * (size_t)w->k_pad + (size_t)k0) * QW_ROWS;
            /* The prefetch reaches into the row blocks' next chunk while this one is reused. */
            a16_gemm_chunk(y, ldy, a, wv, rb * QW_ROWS, w->n_out, k0, k_len, nb, false, PREFETCH_BYTES);
        }
    }
}

/* ---- A16 with W4 weights: expansion to bf16 ---- */

/* A group's constants for one row block: scales (and mins) duplicated into lane pairs in
 * the order of w4_expand_step (rows 0,1,4,5,8,9,12,13 in "lo", the others in "hi"). */
typedef struct {
    __m512 scale_lo, scale_hi, min_lo, min_hi;
} w4_group;

ALWAYS_INLINE w4_group w4_group_of(const ifn_qweight *w, int64_t rb, int64_t g)
{
    size_t pi = ((size_t)rb * (size_t)w->n_groups + (size_t)g) * QW_ROWS;
    __m512 scale = _mm512_load_ps(w->scales + pi);
    __m512 min = w->asym ? _mm512_load_ps(w->mins + pi) : _mm512_setzero_ps();
    return (w4_group){
        .scale_lo = _mm512_unpacklo_ps(scale, scale),
        .scale_hi = _mm512_unpackhi_ps(scale, scale),
        .min_lo = _mm512_unpacklo_ps(min, min),
        .min_hi = _mm512_unpackhi_ps(min, min),
    };
}

/* The nibble's bit offset for inputs 2t (even lanes) and 2t + 1 (odd lanes) of a step: input
 * j < 4 is the low nibble of byte j, input j >= 4 the high nibble of byte j - 4. */
ALWAYS_INLINE __m512i nibble_shift(int t)
{
    static const int offset[8] = { 0, 8, 16, 24, 4, 12, 20, 28 };
    int even = offset[2 * t], odd = offset[2 * t + 1];
    return _mm512_setr_epi32(even, odd, even, odd, even, odd, even, odd, even, odd, even, odd, even, odd, even, odd);
}

/* scale * (u - 8) or fmadd(scale, u, min) in fp32 for the nibbles at `shift` of each lane:
 * vpermps looks (float)(u - 8) (or (float)u) up in a 16-entry table and reads only the low
 * 4 bits of each index, so the shifted dword needs no mask. */
ALWAYS_INLINE __m512 w4_values(__m512i dwords, __m512i shift, __m512 scale, __m512 min, bool asym)
{
    const __m512 table = asym ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                              : _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512 u = _mm512_permutexvar_ps(_mm512_srlv_epi32(dwords, shift), table);
    return asym ? _mm512_fmadd_ps(scale, u, min) : _mm512_mul_ps(scale, u);
}

/* The 8-input step at p (16 rows x 8 nibbles, one dword per row) as four VNNI-2 bf16
 * vectors (inputs 0-1, 2-3, 4-5, 6-7 of the step), rows permuted as unpermute_rows undoes:
 * the lane-local unpacks duplicate row dwords {0,1,4,5,8,9,12,13} and {2,3,6,7,...} into
 * lane pairs, which is cheaper than putting rows 0-7 and 8-15 together across lanes. */
ALWAYS_INLINE void w4_expand_step(const uint8_t *p, const w4_group *c, bool asym, __m512bh out[4])
{
    __m512i packed = _mm512_load_si512(p);
    __m512i lo = _mm512_unpacklo_epi32(packed, packed), hi = _mm512_unpackhi_epi32(packed, packed);
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++) {
        __m512i shift = nibble_shift(t);
        out[t] = _mm512_cvtne2ps_pbh(w4_values(hi, shift, c->scale_hi, c->min_hi, asym),
                                     w4_values(lo, shift, c->scale_lo, c->min_lo, asym));
    }
}

/* GEMV: all m (constant mt) rows against row block rb, expanding each step once. */
ALWAYS_INLINE void w4a16_gemv_block(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb,
                                    int mt, bool asym)
{
    const int chains = mt <= 3 ? 2 : 1;
    const int steps = w->group / 8;
    const uint8_t *wp = (const uint8_t *)w->data + (size_t)rb * 8 * (size_t)w->k_pad;
    __m512 acc[2][MAX_TILE_ROWS];
    const uint16_t *x[MAX_TILE_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < mt; i++) {
        x[i] = a->bf16 + (size_t)i * (size_t)a->k_pad;
        acc[0][i] = acc[1][i] = _mm512_setzero_ps();
    }
    for (int g = 0; g < w->n_groups; g++) {
        w4_group c = w4_group_of(w, rb, g);
        for (int s = 0; s < steps; s++, wp += 64) {
            _mm_prefetch((const char *)wp + PREFETCH_BYTES, _MM_HINT_T0);
            __m512bh v[4];
            w4_expand_step(wp, &c, asym, v);
#pragma GCC unroll 8
            for (int i = 0; i < mt; i++) {
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++)
                    acc[t % chains][i] = _mm512_dpbf16_ps(acc[t % chains][i], v[t], broadcast_pair(x[i] + 2 * t));
                x[i] += 8;
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mt; i++) {
        __m512 sum = chains == 2 ? _mm512_add_ps(acc[0][i], acc[1][i]) : acc[0][i];
        store_rows(y + (size_t)i * (size_t)ldy + (size_t)(rb * QW_ROWS), rb * QW_ROWS, w->n_out, unpermute_rows(sum),
                   false);
    }
}

ALWAYS_INLINE void w4a16_gemv_any(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0,
                                  int64_t rb1, bool asym)
{
    for (int64_t rb = rb0; rb < rb1; rb++) {
        switch (a->m) {
        case 1: w4a16_gemv_block(y, ldy, a, w, rb, 1, asym); break;
        case 2: w4a16_gemv_block(y, ldy, a, w, rb, 2, asym); break;
        case 3: w4a16_gemv_block(y, ldy, a, w, rb, 3, asym); break;
        case 4: w4a16_gemv_block(y, ldy, a, w, rb, 4, asym); break;
        case 5: w4a16_gemv_block(y, ldy, a, w, rb, 5, asym); break;
        case 6: w4a16_gemv_block(y, ldy, a, w, rb, 6, asym); break;
        case 7: w4a16_gemv_block(y, ldy, a, w, rb, 7, asym); break;
        case 8: w4a16_gemv_block(y, ldy, a, w, rb, 8, asym); break;
        default: break; /* the lookup sends larger m to the GEMM kernels */
        }
    }
}

static void w4a16_gemv(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    if (w->asym) w4a16_gemv_any(y, ldy, a, w, rb0, rb1, true);
    else w4a16_gemv_any(y, ldy, a, w, rb0, rb1, false);
}

/* Expands inputs [k0, k0 + k_len) of row block rb into VNNI-2 vectors at out (rows permuted). */
ALWAYS_INLINE void w4_expand_chunk(const ifn_qweight *w, int64_t rb, int64_t k0, int64_t k_len, uint16_t *out,
                                   bool asym)
{
    const uint8_t *wp = (const uint8_t *)w->data + (size_t)rb * 8 * (size_t)w->k_pad + (size_t)(k0 / 8) * 64;
    for (int64_t k = k0; k < k0 + k_len;) {
        int64_t g = k / w->group, end = (g + 1) * w->group < k0 + k_len ? (g + 1) * w->group : k0 + k_len;
        w4_group c = w4_group_of(w, rb, g);
        for (; k < end; k += 8, wp += 64, out += 4 * 32) {
            _mm_prefetch((const char *)wp + PREFETCH_BYTES / 4, _MM_HINT_T0);
            __m512bh v[4];
            w4_expand_step(wp, &c, asym, v);
            for (int t = 0; t < 4; t++) _mm512_store_si512(out + t * 32, (__m512i)v[t]);
        }
    }
}

static void w4a16_gemm(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    _Alignas(64) uint16_t buf[MAX_TILE_BLOCKS][K_CHUNK * QW_ROWS];
    for (int64_t rb = rb0; rb < rb1; rb += TILE_BLOCKS) {
        int nb = rb1 - rb < TILE_BLOCKS ? (int)(rb1 - rb) : TILE_BLOCKS;
        for (int64_t k0 = 0; k0 < w->k_pad; k0 += K_CHUNK) {
            int64_t k_len = w->k_pad - k0 < K_CHUNK ? w->k_pad - k0 : K_CHUNK;
            const uint16_t *wv[MAX_TILE_BLOCKS];
            for (int b = 0; b < nb; b++) {
                if (w->asym) w4_expand_chunk(w, rb + b, k0, k_len, buf[b], true);
                else w4_expand_chunk(w, rb + b, k0, k_len, buf[b], false);
                wv[b] = buf[b];
            }
            a16_gemm_chunk(y, ldy, a, wv, rb * QW_ROWS, w->n_out, k0, k_len, nb, true, 0);
        }
    }
}

/* ---- F32: plain rows, lanes along k ---- */

ALWAYS_INLINE __m512 load_weights(const void *row, int64_t k, bool f16)
{
    if (f16) return _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)row + k)));
    return _mm512_load_ps((const float *)row + k);
}

/* y[i][n .. n + nr) for activation rows [i0, i0 + mt); nr, mt, f16 constants at each call
 * site. Prefetches the weight rows only on the first pass over them (i0 = 0): later tiles of
 * rows find them in L2. */
ALWAYS_INLINE void f32_tile(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t n, int i0, int nr,
                            int mt, bool f16)
{
    const size_t elem = f16 ? 2 : 4;
    const bool prefetch = i0 == 0;
    __m512 acc[F32_ROWS][F32_ACTS];
    const uint8_t *wr[F32_ROWS];
    const float *x[F32_ACTS];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        wr[r] = (const uint8_t *)w->data + (size_t)(n + r) * (size_t)w->k_pad * elem;
#pragma GCC unroll 4
        for (int i = 0; i < mt; i++) acc[r][i] = _mm512_setzero_ps();
    }
#pragma GCC unroll 4
    for (int i = 0; i < mt; i++) x[i] = a->f32 + (size_t)(i0 + i) * (size_t)a->k_pad;
    for (int64_t k = 0; k < w->k_pad; k += 16) {
        /* Past the end of its row a prefetch would land in the next row, which this tile
         * reads too, so it skips ahead to its own row of the next tile. */
        size_t skip = (size_t)(k + 16) * elem + PREFETCH_BYTES / 4 > (size_t)w->k_pad * elem
                          ? (size_t)(nr - 1) * (size_t)w->k_pad * elem
                          : 0;
        __m512 xv[F32_ACTS];
#pragma GCC unroll 4
        for (int i = 0; i < mt; i++) xv[i] = _mm512_loadu_ps(x[i] + k);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            if (prefetch) _mm_prefetch((const char *)wr[r] + (size_t)k * elem + skip + PREFETCH_BYTES / 4, _MM_HINT_T0);
            __m512 wv = load_weights(wr[r], k, f16);
#pragma GCC unroll 4
            for (int i = 0; i < mt; i++) acc[r][i] = _mm512_fmadd_ps(wv, xv[i], acc[r][i]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int i = 0; i < mt; i++)
            y[(size_t)(i0 + i) * (size_t)ldy + (size_t)(n + r)] = _mm512_reduce_add_ps(acc[r][i]);
}

/* f32_tile for any mt in 1..F32_ACTS (nr constant). */
ALWAYS_INLINE void f32_tile_acts(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t n, int i0,
                                 int nr, int mt, bool f16)
{
    switch (mt) {
    case 4: f32_tile(y, ldy, a, w, n, i0, nr, 4, f16); break;
    case 3: f32_tile(y, ldy, a, w, n, i0, nr, 3, f16); break;
    case 2: f32_tile(y, ldy, a, w, n, i0, nr, 2, f16); break;
    default: f32_tile(y, ldy, a, w, n, i0, nr, 1, f16); break;
    }
}

/* For each F32_ROWS weight rows, every tile of F32_ACTS activation rows. */
ALWAYS_INLINE void f32_any(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1,
                           bool f16)
{
    int64_t n_end = rb1 * QW_ROWS < w->n_out ? rb1 * QW_ROWS : w->n_out;
    for (int64_t n = rb0 * QW_ROWS; n < n_end; n += F32_ROWS) {
        int nr = n_end - n < F32_ROWS ? (int)(n_end - n) : F32_ROWS;
        for (int i = 0; i < a->m; i += F32_ACTS) {
            int mt = a->m - i < F32_ACTS ? a->m - i : F32_ACTS;
            switch (nr) {
            case 4: f32_tile_acts(y, ldy, a, w, n, i, 4, mt, f16); break;
            case 3: f32_tile_acts(y, ldy, a, w, n, i, 3, mt, f16); break;
            case 2: f32_tile_acts(y, ldy, a, w, n, i, 2, mt, f16); break;
            default: f32_tile_acts(y, ldy, a, w, n, i, 1, mt, f16); break;
            }
        }
    }
}

static void f32_kernel(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    f32_any(y, ldy, a, w, rb0, rb1, false);
}

static void f16_kernel(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    f32_any(y, ldy, a, w, rb0, rb1, true);
}

bool gemm_avx512_lookup_fp(const ifn_qweight *w, int m, gemm_kernel *out)
{
    bool gemv = m <= GEMV_MAX_ROWS;
    switch (w->kind) {
    case QW_F32:
        if (w->compute != QW_COMPUTE_F32) return false;
        *out = (gemm_kernel){ f32_kernel, "avx512 f32 4x4", IFN_ISA_AVX512 };
        return true;
    case QW_F16:
        if (w->compute != QW_COMPUTE_F32) return false;
        *out = (gemm_kernel){ f16_kernel, "avx512 f16 4x4", IFN_ISA_AVX512 };
        return true;
    case QW_BF16:
        if (w->compute != QW_COMPUTE_A16) return false;
        *out = gemv ? (gemm_kernel){ bf16_gemv, "avx512-bf16 bf16 gemv", IFN_ISA_AVX512 }
                    : (gemm_kernel){ bf16_gemm, "avx512-bf16 bf16 gemm 8x2", IFN_ISA_AVX512 };
        return true;
    case QW_W4:
        /* Each 8-input step must lie inside one group. */
        if (w->compute != QW_COMPUTE_A16 || w->group % 8 != 0) return false;
        *out = gemv ? (gemm_kernel){ w4a16_gemv, "avx512-bf16 w4a16 gemv", IFN_ISA_AVX512 }
                    : (gemm_kernel){ w4a16_gemm, "avx512-bf16 w4a16 gemm 8x2", IFN_ISA_AVX512 };
        return true;
    default: return false;
    }
}
