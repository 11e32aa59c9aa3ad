/* AMX kernels for many activation rows (prefill): AMX-INT8 (tdpbssd) for the A8 recipe (W8,
 * W4) and AMX-BF16 (tdpbf16ps) for A16 (BF16, W4). Fewer than AMX_MIN_ROWS rows are refused,
 * and the dispatcher falls back to the AVX-512 kernels.
 *
 * Notes
 * -----
 * Tile register map (palette 1, loaded once per call; tile state is per thread):
 *   tmm0, tmm1  A: activation rows [16t, 16t + 16) and [16t + 16, 16t + 32) over one K-step:
 *               int8 64 bytes = 64 inputs (32 for groups of 32), bf16 64 bytes = 32 inputs.
 *   tmm2, tmm3  B: weight row blocks rb and rb + 1 over the same K-step: K/4 (int8) or K/2
 *               (bf16) rows of 64 bytes. The packed layout (qweight.h) makes this exactly 16
 *               (or 8) consecutive VNNI vectors, so B loads straight from the weights, stride 64.
 *   tmm4..tmm7  C: A0.B0, A0.B1, A1.B0, A1.B1, each 16 activation rows x 16 weight rows,
 *               int32 (A8) or fp32 (A16).
 * Each K-step loads 4 tiles (4 KB) and issues 4 tile dot products: every A tile meets 2 B
 * tiles and every B tile 2 A tiles (2x2 register blocking, 32 x 32 outputs per step). That
 * is 16 int8 MACs (8 bf16) per byte loaded, twice the 1x1 ratio; 2x2 uses all 8 tiles and is
 * the best reuse they allow (1x3 would give 12 MACs per byte). The tiles of one K-step come
 * from L2 (a row-block pair and 32 activation rows over all of K exceed L1 once K is a few
 * hundred): whether L2 feeds the tile products at full rate is the first thing to measure on
 * AMX hardware, and blocking K for L1 the first change to try if not.
 *
 * Loop order in one call (the thread's row blocks [rb0, rb1)):
 *   m chunk: as many 16-row A tiles as keep ~CHUNK_BYTES of activations (L2-resident)
 *     row-block pair: B from the packed weights, or (W4) its unpacked panel
 *       m block: 2 A tiles
 *         A8: for each group: zero C, K-steps over the group, C -> int32 buffer -> float stage
 *         A16: zero C, K-steps over all of K, C -> y
 * so a row-block pair's weights (or panel) are reused by every m block of the chunk from L2,
 * and the chunk's activations by every row-block pair.
 *
 * A8 is bit-identical to gemm_ref.c: C holds the exact int32 dot of one weight group, then
 * AVX-512 applies the reference's float order lane by lane (acc = fmadd(scale * act_scale,
 * cvt(dot), acc), asymmetric W4: acc = fmadd(min * act_scale, cvt(gsum), acc); y = acc).
 * Groups of 32 use K-steps of 32 (A tiles 16 x 32 bytes, B tiles 8 rows); per-channel W8 is
 * one group, so its scales are applied once at the end. Each group costs a tile store and 16 AVX-512 rows per C
 * tile on top of its tile products; for groups of 32 that float stage may cost more than the
 * products themselves (to be measured).
 * W4 (A8): a row block's panel of nibbles is unpacked once per (row-block pair, m chunk) into
 * int8 VNNI order (symmetric u - 8; asymmetric u, whose min * gsum term the float stage adds),
 * i.e. the W8 layout, and reused by every m block: the unpack cost is divided by the chunk's
 * rows. W4 (A16): likewise into bf16 VNNI-2, with qweight_value's values exactly
 * (bf16(s * (u - 8)) or bf16(fmaf(s, u, min)), round to nearest even, done with integer ops so
 * denormals round as the reference does).
 * A16 accumulates fp32 across all of K in the C tiles. tdpbf16ps treats denormal inputs as
 * zero, flushes denormal results and sums in its own order: within the A16 tolerance.
 *
 * Partial tiles: rows past m are never read: the last m % 16 activation rows are copied once
 * per call into a zero-padded 16-row buffer that serves as the last A tile. Weight rows past
 * n_out are zero padding of the packed matrix; their outputs are not written.
 * gcc's tileloadd asm does not declare that it reads memory, so buffers filled here for tile
 * loads (panels, the padded tile) are fenced with a compiler barrier.
 *
 * Speed: not measured. The machine these kernels were written on has no AMX; they were
 * verified bit-exact (A8) and within tolerance (A16) against the scalar reference with the
 * tile instructions emulated in C (tests/kernels/amx_emulate.h). AMX_MIN_ROWS (one full A
 * tile) and CHUNK_BYTES are provisional until measured on AMX hardware. */
#include "gemm.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#ifdef IFN_AMX_EMULATE
#include "amx_emulate.h"
#endif

#define AMX_MIN_ROWS 16           /* fewer rows: the AVX-512 kernels (provisional) */
#define CHUNK_BYTES (512 * 1024)  /* activations per m chunk (provisional) */
#define TILE_ROWS 16              /* activation rows per A tile */

/* Tile registers (see the map above); plain numbers because the intrinsics paste them into asm. */
#define TILE_A0 0
#define TILE_A1 1
#define TILE_B0 2
#define TILE_B1 3
#define TILE_C00 4
#define TILE_C01 5
#define TILE_C10 6
#define TILE_C11 7

/* The 64-byte operand of ldtilecfg. */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;
_Static_assert(sizeof(tile_config) == 64, "ldtilecfg reads 64 bytes");

/* K-steps of 64 bytes: int8 64 inputs (B 16 rows x 4), or bf16 32 inputs (B 16 rows x 2). */
static const tile_config config_k64 = {
    .palette = 1,
    .colsb = { 64, 64, 64, 64, 64, 64, 64, 64 },
    .rows = { 16, 16, 16, 16, 16, 16, 16, 16 },
};
/* int8 K-steps of 32 inputs, for groups of 32: A 16 x 32 bytes, B 8 rows x 64 bytes. */
static const tile_config config_k32 = {
    .palette = 1,
    .colsb = { 32, 32, 64, 64, 64, 64, 64, 64 },
    .rows = { 16, 16, 8, 8, 16, 16, 16, 16 },
};

static void compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

/* What one call works on. */
typedef struct {
    const gemm_act *a;
    const ifn_qweight *w;
    size_t elem;         /* bytes per value in the tiles: 1 (int8) or 2 (bf16) */
    size_t lda;          /* bytes between activation rows */
    int64_t full_tiles;  /* m / 16: A tiles read in place */
    int64_t n_tiles;     /* ceil(m / 16) */
    uint8_t *mem;        /* the call's one allocation (below) */
    uint8_t *tail;       /* [16][k_pad]: the last m % 16 rows, zero-padded; NULL if none */
    uint8_t *panel[2];   /* W4: row blocks rb, rb + 1 unpacked; NULL otherwise */
} amx_call;

static bool call_begin(amx_call *c, const gemm_act *a, const ifn_qweight *w)
{
    memset(c, 0, sizeof *c);
    c->a = a;
    c->w = w;
    c->elem = w->compute == QW_COMPUTE_A8 ? 1 : 2;
    c->lda = (size_t)a->k_pad * c->elem;
    c->full_tiles = a->m / TILE_ROWS;
    c->n_tiles = (a->m + TILE_ROWS - 1) / TILE_ROWS;
    size_t tile_bytes = TILE_ROWS * c->lda; /* also a row block's panel: 16 rows x k_pad */
    size_t tail_bytes = a->m % TILE_ROWS ? tile_bytes : 0, panel_bytes = w->kind == QW_W4 ? tile_bytes : 0;
    if (tail_bytes + 2 * panel_bytes == 0) return true;
    c->mem = aligned_alloc(64, tail_bytes + 2 * panel_bytes);
    if (!c->mem) return false;
    if (tail_bytes) {
        const uint8_t *src = c->elem == 1 ? (const uint8_t *)a->q : (const uint8_t *)a->bf16;
        size_t rows = (size_t)(a->m % TILE_ROWS);
        c->tail = c->mem;
        memcpy(c->tail, src + (size_t)c->full_tiles * tile_bytes, rows * c->lda);
        memset(c->tail + rows * c->lda, 0, tile_bytes - rows * c->lda);
    }
    if (panel_bytes) {
        c->panel[0] = c->mem + tail_bytes;
        c->panel[1] = c->panel[0] + panel_bytes;
    }
    compiler_barrier();
    return true;
}

static void call_end(amx_call *c) { free(c->mem); }

/* The activations of A tile t (16 rows, row stride c->lda). */
static const uint8_t *a_tile(const amx_call *c, int64_t t)
{
    if (t < c->full_tiles) {
        const uint8_t *base = c->elem == 1 ? (const uint8_t *)c->a->q : (const uint8_t *)c->a->bf16;
        return base + (size_t)t * TILE_ROWS * c->lda;
    }
    return c->tail;
}

static int tile_rows_valid(const amx_call *c, int64_t t)
{
    int64_t left = c->a->m - t * TILE_ROWS;
    return left < TILE_ROWS ? (int)left : TILE_ROWS;
}

static int block_rows_valid(const ifn_qweight *w, int64_t rb)
{
    int64_t left = w->n_out - rb * QW_ROWS;
    return left < QW_ROWS ? (int)left : QW_ROWS;
}

/* ---- W4 panels ---------------------------------------------------------------------------- */

/* W4 row block rb as int8 VNNI (the W8 layout): u - 8 (symmetric) or u (asymmetric). */
static void unpack_w4_int8(int8_t *out, const ifn_qweight *w, int64_t rb)
{
    const uint8_t *p = (const uint8_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad / 2;
    const __m512i low = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8(w->asym ? 0 : 8);
    for (int64_t j = 0; j < w->k_pad / 8; j++) { /* 64 bytes: VNNI vectors 2j (low nibbles), 2j + 1 */
        __m512i v = _mm512_loadu_si512(p + 64 * j);
        __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        _mm512_storeu_si512(out + 128 * j, _mm512_sub_epi8(lo, bias));
        _mm512_storeu_si512(out + 128 * j + 64, _mm512_sub_epi8(hi, bias));
    }
}

/* bf16 bits (low half of each lane) of v, rounded to nearest even as ifn_f32_to_bf16 (NaN stays
 * NaN). vcvtneps2bf16 would flush denormals, which the reference keeps. */
static __m512i bf16_bits(__m512 v)
{
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
    return _mm512_mask_blend_epi32(nan, rounded, quiet);
}

/* W4 row block rb as bf16 VNNI-2 ([k_pad/2][16 rows][2]) with qweight_value's values. */
static void expand_w4_bf16(uint16_t *out, const ifn_qweight *w, int64_t rb)
{
    const uint8_t *p = (const uint8_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad / 2;
    const __m512i low = _mm512_set1_epi8(0x0f), byte = _mm512_set1_epi32(0xff), eight = _mm512_set1_epi32(8);
    for (int64_t j = 0; j < w->k_pad / 8; j++) { /* inputs 8j..8j+7: VNNI vectors 2j, 2j + 1 */
        size_t pi = ((size_t)rb * (size_t)w->n_groups + (size_t)(8 * j / w->group)) * QW_ROWS;
        __m512 s = _mm512_loadu_ps(w->scales + pi);
        __m512 mn = w->asym ? _mm512_loadu_ps(w->mins + pi) : _mm512_setzero_ps();
        __m512i v = _mm512_loadu_si512(p + 64 * j);
        __m512i nib[2] = { _mm512_and_si512(v, low), _mm512_and_si512(_mm512_srli_epi16(v, 4), low) };
        for (int q = 0; q < 2; q++) {
            __m512i bits[4];
            for (int i = 0; i < 4; i++) { /* input 8j + 4q + i of each row */
                __m512i u = _mm512_and_si512(_mm512_srli_epi32(nib[q], 8 * i), byte);
                __m512 val = w->asym ? _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(u), mn)
                                     : _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_sub_epi32(u, eight)));
                bits[i] = bf16_bits(val);
            }
            int64_t k2 = 4 * j + 2 * q; /* VNNI-2 vectors k2 (inputs i = 0, 1) and k2 + 1 (i = 2, 3) */
            _mm512_storeu_si512(out + k2 * 2 * QW_ROWS, _mm512_or_si512(bits[0], _mm512_slli_epi32(bits[1], 16)));
            _mm512_storeu_si512(out + (k2 + 1) * 2 * QW_ROWS, _mm512_or_si512(bits[2], _mm512_slli_epi32(bits[3], 16)));
        }
    }
}

/* The B operand of row block rb: the packed weights, or its panel (slot 0 or 1) for W4. */
static const uint8_t *b_operand(amx_call *c, int64_t rb, int slot)
{
    const ifn_qweight *w = c->w;
    if (w->kind != QW_W4) return (const uint8_t *)w->data + (size_t)rb * QW_ROWS * (size_t)w->k_pad * c->elem;
    compiler_barrier(); /* earlier tile loads of this panel come before its new contents */
    if (c->elem == 1) unpack_w4_int8((int8_t *)c->panel[slot], w, rb);
    else expand_w4_bf16((uint16_t *)c->panel[slot], w, rb);
    compiler_barrier();
    return c->panel[slot];
}

/* ---- Output ------------------------------------------------------------------------------ */

/* y[i0 + r][n0 + col] = tile[r][col] for r < rows, col < cols. */
static void store_tile(float *y, int64_t ldy, const float tile[16][16], int64_t i0, int rows, int64_t n0, int cols)
{
    __mmask16 mask = (__mmask16)((1u << cols) - 1);
    for (int r = 0; r < rows; r++)
        _mm512_mask_storeu_ps(y + (size_t)(i0 + r) * (size_t)ldy + n0, mask, _mm512_loadu_ps(tile[r]));
}

/* ---- A8: int8 tiles, float stage per group --------------------------------------------- */

/* C += A . B over inputs [k0, k1) in K-steps of kstep; a1/b1 NULL when the block is 1 tile wide. */
static void dot_int8(const uint8_t *a0, const uint8_t *a1, size_t lda, const uint8_t *b0, const uint8_t *b1,
                     int64_t k0, int64_t k1, int kstep)
{
    for (int64_t k = k0; k < k1; k += kstep) {
        _tile_loadd(TILE_A0, a0 + k, lda);
        _tile_loadd(TILE_B0, b0 + k * QW_ROWS, 64);
        _tile_dpbssd(TILE_C00, TILE_A0, TILE_B0);
        if (a1) {
            _tile_loadd(TILE_A1, a1 + k, lda);
            _tile_dpbssd(TILE_C10, TILE_A1, TILE_B0);
        }
        if (b1) {
            _tile_loadd(TILE_B1, b1 + k * QW_ROWS, 64);
            _tile_dpbssd(TILE_C01, TILE_A0, TILE_B1);
            if (a1) _tile_dpbssd(TILE_C11, TILE_A1, TILE_B1);
        }
    }
}

/* acc = fmadd(scale * act_scale, dot, acc) [+ fmadd(min * act_scale, gsum, acc)] for group g,
 * row block rb, activation rows i0.. */
static void apply_group(float acc[16][16], const int32_t dot[16][16], const amx_call *c, int64_t rb, int g,
                        int64_t i0, int rows)
{
    const ifn_qweight *w = c->w;
    size_t pi = ((size_t)rb * (size_t)w->n_groups + (size_t)g) * QW_ROWS;
    __m512 scale = _mm512_loadu_ps(w->scales + pi);
    for (int r = 0; r < rows; r++) {
        size_t ai = (size_t)(i0 + r) * (size_t)w->n_groups + (size_t)g;
        __m512 as = _mm512_set1_ps(c->a->scale[ai]);
        __m512 d = _mm512_cvtepi32_ps(_mm512_loadu_si512(dot[r]));
        __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(scale, as), d, _mm512_loadu_ps(acc[r]));
        if (w->asym)
            v = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_loadu_ps(w->mins + pi), as), _mm512_set1_ps((float)c->a->gsum[ai]), v);
        _mm512_storeu_ps(acc[r], v);
    }
}

/* y for A tiles t (and t + 1 if two_m) and row blocks rb (and rb + 1 if b1). */
static void block_a8(float *y, int64_t ldy, const amx_call *c, int64_t t, bool two_m, int64_t rb, const uint8_t *b0,
                     const uint8_t *b1)
{
    const ifn_qweight *w = c->w;
    const uint8_t *a0 = a_tile(c, t), *a1 = two_m ? a_tile(c, t + 1) : NULL;
    int kstep = w->group == 32 ? 32 : 64;
    int n_m = two_m ? 2 : 1, n_n = b1 ? 2 : 1;
    _Alignas(64) float acc[2][2][16][16]; /* [A tile][B tile][activation row][weight row] */
    _Alignas(64) int32_t dot[2][2][16][16];
    memset(acc, 0, sizeof acc);
    for (int g = 0; g < w->n_groups; g++) {
        int64_t k0 = (int64_t)g * w->group;
        _tile_zero(TILE_C00);
        _tile_zero(TILE_C01);
        _tile_zero(TILE_C10);
        _tile_zero(TILE_C11);
        dot_int8(a0, a1, c->lda, b0, b1, k0, k0 + w->group, kstep);
        _tile_stored(TILE_C00, dot[0][0], 64);
        _tile_stored(TILE_C01, dot[0][1], 64);
        _tile_stored(TILE_C10, dot[1][0], 64);
        _tile_stored(TILE_C11, dot[1][1], 64);
        for (int mi = 0; mi < n_m; mi++)
            for (int ni = 0; ni < n_n; ni++)
                apply_group(acc[mi][ni], dot[mi][ni], c, rb + ni, g, (t + mi) * TILE_ROWS, tile_rows_valid(c, t + mi));
    }
    for (int mi = 0; mi < n_m; mi++)
        for (int ni = 0; ni < n_n; ni++)
            store_tile(y, ldy, acc[mi][ni], (t + mi) * TILE_ROWS, tile_rows_valid(c, t + mi), (rb + ni) * QW_ROWS,
                       block_rows_valid(w, rb + ni));
}

/* ---- A16: bf16 tiles, fp32 across all of K ----------------------------------------------- */

static void block_a16(float *y, int64_t ldy, const amx_call *c, int64_t t, bool two_m, int64_t rb, const uint8_t *b0,
                      const uint8_t *b1)
{
    const ifn_qweight *w = c->w;
    const uint8_t *a0 = a_tile(c, t), *a1 = two_m ? a_tile(c, t + 1) : NULL;
    _tile_zero(TILE_C00);
    _tile_zero(TILE_C01);
    _tile_zero(TILE_C10);
    _tile_zero(TILE_C11);
    for (int64_t k = 0; k < w->k_pad; k += 32) { /* byte offsets: A 2k, B (k/2) * 64 */
        _tile_loadd(TILE_A0, a0 + 2 * k, c->lda);
        _tile_loadd(TILE_B0, b0 + 32 * k, 64);
        _tile_dpbf16ps(TILE_C00, TILE_A0, TILE_B0);
        if (a1) {
            _tile_loadd(TILE_A1, a1 + 2 * k, c->lda);
            _tile_dpbf16ps(TILE_C10, TILE_A1, TILE_B0);
        }
        if (b1) {
            _tile_loadd(TILE_B1, b1 + 32 * k, 64);
            _tile_dpbf16ps(TILE_C01, TILE_A0, TILE_B1);
            if (a1) _tile_dpbf16ps(TILE_C11, TILE_A1, TILE_B1);
        }
    }
    _Alignas(64) float out[2][2][16][16];
    _tile_stored(TILE_C00, out[0][0], 64);
    _tile_stored(TILE_C01, out[0][1], 64);
    _tile_stored(TILE_C10, out[1][0], 64);
    _tile_stored(TILE_C11, out[1][1], 64);
    for (int mi = 0; mi < (two_m ? 2 : 1); mi++)
        for (int ni = 0; ni < (b1 ? 2 : 1); ni++)
            store_tile(y, ldy, out[mi][ni], (t + mi) * TILE_ROWS, tile_rows_valid(c, t + mi), (rb + ni) * QW_ROWS,
                       block_rows_valid(w, rb + ni));
}

/* ---- Driver ------------------------------------------------------------------------------ */

static void amx_gemm(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    amx_call c;
    if (!call_begin(&c, a, w)) { /* the kernel cannot report an error: compute the same values the slow way */
        gemm_kernel ref;
        gemm_lookup_scalar(w, a->m, &ref);
        ref.fn(y, ldy, a, w, rb0, rb1);
        return;
    }
    bool a8 = w->compute == QW_COMPUTE_A8;
    _tile_loadconfig(a8 && w->group == 32 ? &config_k32 : &config_k64);
    int64_t chunk = CHUNK_BYTES / (TILE_ROWS * (int64_t)c.lda) / 2 * 2; /* whole 2-tile m blocks */
    if (chunk < 2) chunk = 2;
    for (int64_t t0 = 0; t0 < c.n_tiles; t0 += chunk) {
        int64_t t1 = t0 + chunk < c.n_tiles ? t0 + chunk : c.n_tiles;
        for (int64_t rb = rb0; rb < rb1; rb += 2) {
            const uint8_t *b0 = b_operand(&c, rb, 0), *b1 = rb + 1 < rb1 ? b_operand(&c, rb + 1, 1) : NULL;
            for (int64_t t = t0; t < t1; t += 2) {
                if (a8) block_a8(y, ldy, &c, t, t + 1 < t1, rb, b0, b1);
                else block_a16(y, ldy, &c, t, t + 1 < t1, rb, b0, b1);
            }
        }
    }
    _tile_release();
    call_end(&c);
}

bool gemm_lookup_amx(const ifn_qweight *w, int m, gemm_kernel *out)
{
    if (m < AMX_MIN_ROWS) return false;
    switch (w->kind) {
    case QW_W8: *out = (gemm_kernel){ amx_gemm, "amx-int8 w8a8 gemm", IFN_ISA_AMX }; return true;
    case QW_BF16: *out = (gemm_kernel){ amx_gemm, "amx-bf16 bf16 gemm", IFN_ISA_AMX }; return true;
    case QW_W4:
        if (w->compute == QW_COMPUTE_A8) *out = (gemm_kernel){ amx_gemm, "amx-int8 w4a8 gemm", IFN_ISA_AMX };
        else *out = (gemm_kernel){ amx_gemm, "amx-bf16 w4a16 gemm", IFN_ISA_AMX };
        return true;
    case QW_F32: case QW_F16: case QW_KIND_COUNT: break;
    }
    return false;
}
