/* AVX-512 VNNI kernels for the A8 recipe (W8 and W4 weights, int8 activations).
 *
 * Notes
 * -----
 * Lanes are the 16 rows of a row block, as the VNNI layout of qweight.h puts them: one
 * 64-byte weight vector is 16 rows x 4 inputs, and
 *     vpdpbusd acc, w (unsigned), broadcast(4 activation bytes of row i) (signed)
 * adds 4 products to each of 16 row sums. The weight is always the unsigned operand:
 *   W4: nibbles u are 0..15 already; the 64 bytes of step s carry k4 = 2s (low nibbles,
 *       "and 0x0f") and k4 = 2s + 1 (high nibbles, "srli 4; and 0x0f");
 *   W8: q xor 0x80 = q + 128 as an unsigned byte (two 64-byte vectors per step).
 * So sum(u * x) = dot + bias * gsum, with bias 8 (W4 symmetric), 0 (W4 asymmetric) or 128
 * (W8) and gsum the group sum of the int8 activations that gemm.c prepares: each group's
 * int32 accumulator starts at -bias * gsum[i][g] and ends at the exact dot (vpdpbusd wraps
 * rather than saturates, and the true sum fits in int32). Taking gsum rather than the
 * weight's row_sums (with activations + 128) costs one xor per weight vector, shared by all
 * rows of a tile, instead of one per broadcast.
 *
 * The float part is the reference's, lane by lane and in its order (bit-identical):
 *     sum = fmadd(scale * act_scale, cvt(dot), sum)
 *     asymmetric: sum = fmadd(min * act_scale, (float)gsum, sum)
 * and the last group's sum is stored with a lane mask past n_out. The scales (and mins) come
 * from the weight's fp16 copies when it has them (qweight.h: exact, so the same fp32 values):
 * for the g32 formats the scales are a fifth of a W4 matrix in fp32 and a ninth in fp16, and
 * GEMV is bound by the bytes it streams (GGUF Q4_0: 20 -> 18 bytes per 32 weights, as the
 * file stores them; Q8_0: 36 -> 34). One vcvtph2ps per group and row block is free beside it.
 *
 * A tile is mt activation rows x nb row blocks over all of k, group by group, 8 inputs a step:
 *   acc[mt][nb]   int32 group sums, plus acc2[mt][nb] for the step's second vector when
 *                 mt * nb <= 4, so that 8 or more vpdpbusd chains are in flight (latency 4
 *                 cycles, 2 issued per cycle)
 *   sum[mt][nb]   fp32 sums over groups: in registers up to mt * nb = 8, beyond that in an
 *                 L1 scratch tile of whole vectors (y itself would need masked stores, which
 *                 do not forward to the next group's load: that stall cost 20-30%)
 *   v0, v1 [nb]   the step's two unsigned weight vectors per row block
 *   x0, x1        broadcast activation dwords
 * GEMV (m <= 8): mt = m, nb = 1, each thread reading its row blocks once as one sequential
 *   stream, software-prefetched 16 KiB ahead (and the scales as far ahead). Measured: one
 *   stream + prefetch reads 20-40% faster than two interleaved streams, or than one without
 *   prefetch, whose hardware prefetcher falls behind once the loop has work to do. W8
 *   prefetches into L2 (prefetcht1), W4 into L1: on a TinyLlama-shape Q8_0 file, decode at
 *   1 / 2 threads went from 19.5 / 37.2 to 22.1 / 39.6 tokens/s (load 1.2-1.9, old/new/old/
 *   new, `infernode bench FILE -t 1,2 -p 0 -n 64 -r 3`), while W4 (Q4_0) lost 1-2% with it;
 *   8 KiB or 32 KiB ahead instead of 16 changed nothing measurable. W4 with
 *   m >= 5 is compute-bound and takes the GEMM's 8x2 tile, which halves the broadcasts per
 *   vpdpbusd (16 int32 sums + 4 weight vectors + 2 broadcasts = 22 zmm).
 * GEMM (m > 8): tiles of 8 rows x 2 row blocks: per W4 step, 2 loads and 6 unpack operations
 *   feed 32 vpdpbusd. The tiles walk all m rows for one pair of row blocks (16 k_pad bytes of
 *   W4: L2) before the next pair; the first tile's prefetch streams the pair in. 8x2
 *   measured best of 4x2, 6x2, 8x2, 4x4 and 8x1 (by 5-25%, most for W8).
 * The switch at m = 8 is measured: at m = 5..8 the one-stream GEMV beats the 8x2 GEMM by
 *   ~20% for W8 (W4 runs the same tile either way); the GEMV tile has no registers for a
 *   ninth row.
 * gcc 12 needs -fno-tree-coalesce-vars on this file (kernels/CMakeLists.txt): without it, it
 * copies most accumulators to other registers and back on every trip of the step loop.
 *
 * Measured
 * --------
 * AMD EPYC Zen 5 (KVM), 2 cores, load average 0.9-1.1 while measuring (a training job on about
 * one core). Each figure is the best of 61 calls of gemm_run_isa (so it includes gemm.c's
 * scalar activation quantization: 16 us at m = 1, 120 us at m = 8, 16 ms at m = 1024 for
 * K = 4096), with the weights rotated over >= 512 MiB of copies so that every call streams
 * them from DRAM; GB/s = qweight_bytes / time. Read baseline: best AVX-512 sum over 256 MiB
 * (41.4 GB/s on 1 thread, 73.5 GB/s on 2). Peaks: 12 chains of vpdpbusd / vdpbf16ps.
 *
 *   decode, m = 1          4096 x 4096    11008 x 4096   4096 x 11008   (GB/s, % of read)
 *   W4 g128   1 thread     34.7  84%      36.0  87%      34.6  84%
 *             2 threads    63.9  87%      69.2  94%      64.7  88%
 *   W8        1 thread     38.6  93%      38.4  93%      37.3  90%
 *             2 threads    72.5  99%      73.9 101%      70.5  96%
 *   BF16      1 thread     40.2  97%      38.0  92%      37.2  90%
 *             2 threads    78.2 106%      73.8 100%      73.1  99%
 *   W4A16 g128 1 thread    21.8  53%      21.0  51%      21.2  51%  (expansion-bound)
 *   time(m) / time(1), 1 thread, m = 2 / 4 / 8:
 *   W4 g128                0.97 1.01 1.66  1.03 0.96 1.42  1.03 1.03 1.61
 *   W8                     1.03 1.11 1.21  1.02 1.12 1.15  1.05 1.17 1.27
 *   BF16                   1.04 1.02 1.04  1.04 1.05 1.08  1.01 1.07 1.07
 *   (W4 at m = 8 is VNNI-bound: 16 vpdpbusd per 64 bytes; the kernel alone is ~1.45x.)
 *   prefill, m = 1024, kernel alone (GOPS, % of peak; 1 thread: VNNI 1001, BF16 458):
 *   W4 g128   1 thread     775  77%       792  79%       820  82%
 *             2 threads   1559  76%      1511  74%      1565  76%
 *   W8        1 thread     911  91%       873  87%       900  90%
 *             2 threads   1808  88%      1695  83%      1745  85%
 *   BF16      1 thread     420  92%       425  93%       332  72%
 *   W4A16     1 thread     430  94%       423  92%       376  82%
 * In-repo re-measurement (it also rotates copies; it reports medians, lower under load):
 *   OMP_PROC_BIND=close OMP_WAIT_POLICY=ACTIVE INFERNODE_ISA=avx512 \
 *     build/infernode bench kernels --paths w4a8-g128,w8a8,bf16 --m 1,2,4,8,1024
 */
#include <immintrin.h>
#include <string.h>

#include "gemm_avx512_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

enum {
    GEMV_MAX_ROWS = 8,      /* m up to this streams each row block once (see the notes) */
    PREFETCH_BYTES = 16384, /* software prefetch distance in each weight stream */
    TILE_ROWS = 8,          /* GEMM tile: activation rows ... */
    TILE_BLOCKS = 2,        /* ... x row blocks */
    MAX_TILE_ROWS = 8,      /* array bounds for the tile's registers */
    MAX_TILE_BLOCKS = 2,
};

/* The weight formats, a constant in each compiled tile. */
typedef enum { A8_W8, A8_W4, A8_W4_ASYM } a8_format;

/* The unsigned weight operand minus the signed weight integer. */
ALWAYS_INLINE int32_t a8_bias(a8_format f) { return f == A8_W8 ? 128 : f == A8_W4 ? 8 : 0; }

/* What a tile needs to know about the weight, gathered once per kernel call. */
typedef struct {
    const uint8_t *data;
    const float *scales, *mins; /* [row block][group][16] */
    const uint16_t *scales_h, *mins_h; /* the same in fp16, when the weight has them */
    int64_t block_bytes;        /* one row block: 16 k_pad (W8) or 8 k_pad (W4) */
    int64_t n_out;
    int n_groups;
    int steps;           /* 8-input steps per group */
    int prefetch_groups; /* groups ahead for the scales' prefetch: PREFETCH_BYTES of weights */
} a8_weight;

static a8_weight a8_weight_of(const ifn_qweight *w)
{
    bool w4 = w->kind == QW_W4;
    return (a8_weight){
        .data = w->data,
        .scales = w->scales,
        .mins = w->mins,
        .scales_h = w->scales_h,
        .mins_h = w->mins_h,
        .block_bytes = (w4 ? 8 : 16) * w->k_pad,
        .n_out = w->n_out,
        .n_groups = w->n_groups,
        .steps = w->group / 8,
        .prefetch_groups = PREFETCH_BYTES / ((w4 ? 8 : 16) * w->group) + 1,
    };
}

ALWAYS_INLINE __m512i broadcast_dword(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* The two unsigned weight vectors of one 8-input step at p: inputs 4k4..4k4+3 and the next 4. */
ALWAYS_INLINE void load_step(const uint8_t *p, a8_format f, __m512i *v0, __m512i *v1)
{
    if (f != A8_W8) {
        const __m512i low4 = _mm512_set1_epi8(0x0f);
        __m512i packed = _mm512_load_si512(p);
        *v0 = _mm512_and_si512(packed, low4);
        *v1 = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4);
    } else {
        const __m512i sign = _mm512_set1_epi8((char)0x80);
        *v0 = _mm512_xor_si512(_mm512_load_si512(p), sign);
        *v1 = _mm512_xor_si512(_mm512_load_si512(p + 64), sign);
    }
}

/* The 16 fp32 scales (or mins) of one row block and group at index pi: from the fp16 copy
 * when the weight has one (exact, so the sums are the same bits; a branch that always goes
 * the same way costs less than a second compiled copy of every tile), else from the fp32
 * array; each stream prefetched as far ahead as the weights'. */
ALWAYS_INLINE __m512 load_params(const float *p32, const uint16_t *p16, size_t pi, size_t ahead)
{
    if (p16) {
        _mm_prefetch((const char *)(p16 + pi + ahead), _MM_HINT_T0);
        return _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(p16 + pi)));
    }
    _mm_prefetch((const char *)(p32 + pi + ahead), _MM_HINT_T0);
    return _mm512_load_ps(p32 + pi);
}

/* y for activation rows [i0, i0 + mt) and row blocks [rb, rb + nb), all of k. mt, nb and f
 * are constants at every call site, so the arrays below live in registers. */
ALWAYS_INLINE void a8_tile(float *y, int64_t ldy, const gemm_act *a, const a8_weight *w, int64_t rb, int i0, int mt,
                           int nb, a8_format f)
{
    const bool split = mt * nb <= 4;
    /* Large tiles keep the fp32 sums over groups in an L1 scratch tile, not in registers
     * (whole vectors, so each store forwards to the next group's load). */
    const bool sums_in_memory = mt * nb > 8;
    const int64_t step_bytes = f == A8_W8 ? 128 : 64;
    const int n_groups = w->n_groups;
    const float *act_scale = a->scale + (size_t)i0 * (size_t)n_groups; /* [mt][n_groups] */
    const int32_t *gsum = a->gsum + (size_t)i0 * (size_t)n_groups;     /* [mt][n_groups] */
    float *y0 = y + (size_t)i0 * (size_t)ldy + (size_t)(rb * QW_ROWS);
    const uint8_t *block_end = w->data + (size_t)(rb + 1) * (size_t)w->block_bytes;
    __m512 facc[MAX_TILE_ROWS][MAX_TILE_BLOCKS];
    _Alignas(64) float sums[MAX_TILE_ROWS][MAX_TILE_BLOCKS][QW_ROWS];
    __mmask16 mask[MAX_TILE_BLOCKS];
    const int8_t *x[MAX_TILE_ROWS];
    const uint8_t *wp[MAX_TILE_BLOCKS];
#pragma GCC unroll 2
    for (int b = 0; b < nb; b++) {
        int64_t n0 = (rb + b) * QW_ROWS;
        mask[b] = n0 + QW_ROWS <= w->n_out ? (__mmask16)0xffff : (__mmask16)((1u << (w->n_out - n0)) - 1);
        wp[b] = w->data + (size_t)(rb + b) * (size_t)w->block_bytes;
    }
#pragma GCC unroll 8
    for (int i = 0; i < mt; i++) {
        x[i] = a->q + (size_t)(i0 + i) * (size_t)a->k_pad;
#pragma GCC unroll 2
        for (int b = 0; b < nb; b++) {
            facc[i][b] = _mm512_setzero_ps();
            if (sums_in_memory) _mm512_store_ps(sums[i][b], facc[i][b]);
        }
    }

    for (int g = 0; g < n_groups; g++) {
        __m512i acc[MAX_TILE_ROWS][MAX_TILE_BLOCKS], acc2[MAX_TILE_ROWS][MAX_TILE_BLOCKS];
#pragma GCC unroll 8
        for (int i = 0; i < mt; i++) {
            __m512i start = f == A8_W4_ASYM ? _mm512_setzero_si512()
                                            : _mm512_set1_epi32(-a8_bias(f) * gsum[(size_t)i * n_groups + g]);
#pragma GCC unroll 2
            for (int b = 0; b < nb; b++) {
                acc[i][b] = start;
                acc2[i][b] = _mm512_setzero_si512();
            }
        }
        /* A do-while: a group has at least one step, and saying so keeps gcc from copying
         * every accumulator around the loop for the zero-trip case. */
        int s = 0;
        do {
            __m512i v0[MAX_TILE_BLOCKS], v1[MAX_TILE_BLOCKS];
            /* Each stream prefetches PREFETCH_BYTES ahead; past the end of its row block that
             * lands in the tile's next block, which another stream is reading, so it skips
             * ahead to its own block of the next tile. */
            size_t skip = wp[0] + PREFETCH_BYTES >= block_end ? (size_t)(nb - 1) * (size_t)w->block_bytes : 0;
#pragma GCC unroll 2
            for (int b = 0; b < nb; b++) {
                /* W8 streams twice W4's bytes per step: into L2 only, its demand loads keep
                 * the L1's miss buffers (W4 into L1; see the notes) */
                if (f == A8_W8) {
                    _mm_prefetch((const char *)wp[b] + PREFETCH_BYTES + skip, _MM_HINT_T1);
                    _mm_prefetch((const char *)wp[b] + PREFETCH_BYTES + skip + 64, _MM_HINT_T1);
                } else {
                    _mm_prefetch((const char *)wp[b] + PREFETCH_BYTES + skip, _MM_HINT_T0);
                }
                load_step(wp[b], f, &v0[b], &v1[b]);
                wp[b] += step_bytes;
            }
#pragma GCC unroll 8
            for (int i = 0; i < mt; i++) {
                __m512i x0 = broadcast_dword(x[i]), x1 = broadcast_dword(x[i] + 4);
                x[i] += 8;
#pragma GCC unroll 2
                for (int b = 0; b < nb; b++) {
                    acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], v0[b], x0);
                    if (split) acc2[i][b] = _mm512_dpbusd_epi32(acc2[i][b], v1[b], x1);
                    else acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], v1[b], x1);
                }
            }
        } while (++s < w->steps);

        __m512 scale[MAX_TILE_BLOCKS], min[MAX_TILE_BLOCKS];
#pragma GCC unroll 2
        for (int b = 0; b < nb; b++) {
            size_t pi = ((size_t)(rb + b) * (size_t)n_groups + (size_t)g) * QW_ROWS;
            size_t ahead = (size_t)w->prefetch_groups * QW_ROWS;
            scale[b] = load_params(w->scales, w->scales_h, pi, ahead);
            if (f == A8_W4_ASYM) min[b] = load_params(w->mins, w->mins_h, pi, ahead);
        }
        bool last = g == n_groups - 1;
#pragma GCC unroll 8
        for (int i = 0; i < mt; i++) {
            __m512 as = _mm512_set1_ps(act_scale[(size_t)i * n_groups + g]);
#pragma GCC unroll 2
            for (int b = 0; b < nb; b++) {
                __m512i dot = split ? _mm512_add_epi32(acc[i][b], acc2[i][b]) : acc[i][b];
                __m512 sum = sums_in_memory ? _mm512_load_ps(sums[i][b]) : facc[i][b];
                sum = _mm512_fmadd_ps(_mm512_mul_ps(scale[b], as), _mm512_cvtepi32_ps(dot), sum);
                if (f == A8_W4_ASYM) {
                    __m512 group_sum = _mm512_set1_ps((float)gsum[(size_t)i * n_groups + g]);
                    sum = _mm512_fmadd_ps(_mm512_mul_ps(min[b], as), group_sum, sum);
                }
                if (last) _mm512_mask_storeu_ps(y0 + (size_t)i * (size_t)ldy + (size_t)b * QW_ROWS, mask[b], sum);
                else if (sums_in_memory) _mm512_store_ps(sums[i][b], sum);
                else facc[i][b] = sum;
            }
        }
    }
}

/* a8_tile for any mt in 1..MAX_TILE_ROWS (nb and f constant). */
ALWAYS_INLINE void a8_tile_rows(float *y, int64_t ldy, const gemm_act *a, const a8_weight *w, int64_t rb, int i0,
                                int mt, int nb, a8_format f)
{
    switch (mt) {
    case 1: a8_tile(y, ldy, a, w, rb, i0, 1, nb, f); break;
    case 2: a8_tile(y, ldy, a, w, rb, i0, 2, nb, f); break;
    case 3: a8_tile(y, ldy, a, w, rb, i0, 3, nb, f); break;
    case 4: a8_tile(y, ldy, a, w, rb, i0, 4, nb, f); break;
    case 5: a8_tile(y, ldy, a, w, rb, i0, 5, nb, f); break;
    case 6: a8_tile(y, ldy, a, w, rb, i0, 6, nb, f); break;
    case 7: a8_tile(y, ldy, a, w, rb, i0, 7, nb, f); break;
    case 8: a8_tile(y, ldy, a, w, rb, i0, 8, nb, f); break;
    default: break;
    }
}

/* m <= GEMV_MAX_ROWS: each row block once, against all m rows, in one sequential stream
 * (one stream plus software prefetch reads faster than two interleaved ones). Only W4 with
 * m >= 5 is compute-bound enough to prefer tiles of two row blocks, which halve the
 * broadcasts per vpdpbusd. */
ALWAYS_INLINE void a8_gemv(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *qw, int64_t rb0, int64_t rb1,
                           a8_format f)
{
    a8_weight w = a8_weight_of(qw);
    if (a->m > GEMV_MAX_ROWS) __builtin_unreachable(); /* the lookup sends larger m to a8_gemm */
    int64_t rb = rb0;
    if (f != A8_W8 && a->m >= 5)
        for (; rb + 2 <= rb1; rb += 2) a8_tile_rows(y, ldy, a, &w, rb, 0, a->m, 2, f);
    for (; rb < rb1; rb++) a8_tile_rows(y, ldy, a, &w, rb, 0, a->m, 1, f);
}

/* m > GEMV_MAX_ROWS: for each TILE_BLOCKS row blocks, every tile of TILE_ROWS activation rows. */
ALWAYS_INLINE void a8_gemm(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *qw, int64_t rb0, int64_t rb1,
                           a8_format f)
{
    a8_weight w = a8_weight_of(qw);
    for (int64_t rb = rb0; rb < rb1; rb += TILE_BLOCKS) {
        int nb = rb1 - rb < TILE_BLOCKS ? (int)(rb1 - rb) : TILE_BLOCKS;
        for (int i = 0; i < a->m; i += TILE_ROWS) {
            int mt = a->m - i < TILE_ROWS ? a->m - i : TILE_ROWS;
            if (mt < 1 || mt > TILE_ROWS || nb < 1 || nb > TILE_BLOCKS) __builtin_unreachable();
            if (nb == 2) a8_tile_rows(y, ldy, a, &w, rb, i, mt, 2, f);
            else a8_tile_rows(y, ldy, a, &w, rb, i, mt, 1, f);
        }
    }
}

static void w8a8_gemv(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    a8_gemv(y, ldy, a, w, rb0, rb1, A8_W8);
}

static void w4a8_gemv(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    if (w->asym) a8_gemv(y, ldy, a, w, rb0, rb1, A8_W4_ASYM);
    else a8_gemv(y, ldy, a, w, rb0, rb1, A8_W4);
}

static void w8a8_gemm(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    a8_gemm(y, ldy, a, w, rb0, rb1, A8_W8);
}

static void w4a8_gemm(float *y, int64_t ldy, const gemm_act *a, const ifn_qweight *w, int64_t rb0, int64_t rb1)
{
    if (w->asym) a8_gemm(y, ldy, a, w, rb0, rb1, A8_W4_ASYM);
    else a8_gemm(y, ldy, a, w, rb0, rb1, A8_W4);
}

bool gemm_avx512_lookup_int8(const ifn_qweight *w, int m, gemm_kernel *out)
{
    /* The tiles walk whole 8-input steps inside one group. */
    if (w->compute != QW_COMPUTE_A8 || w->group % 8 != 0) return false;
    bool gemv = m <= GEMV_MAX_ROWS;
    switch (w->kind) {
    case QW_W8:
        *out = gemv ? (gemm_kernel){ w8a8_gemv, "avx512-vnni w8a8 gemv", IFN_ISA_AVX512 }
                    : (gemm_kernel){ w8a8_gemm, "avx512-vnni w8a8 gemm 8x2", IFN_ISA_AVX512 };
        return true;
    case QW_W4:
        *out = gemv ? (gemm_kernel){ w4a8_gemv, "avx512-vnni w4a8 gemv", IFN_ISA_AVX512 }
                    : (gemm_kernel){ w4a8_gemm, "avx512-vnni w4a8 gemm 8x2", IFN_ISA_AVX512 };
        return true;
    default: return false;
    }
}

int32_t gemm_quantize_group_avx512(const float *x, int64_t n, float static_scale, int8_t *q, float *scale)
{
    float inv;
    *scale = static_scale;
    if (static_scale > 0.0f) {
        inv = 1.0f / static_scale;
    } else {
        /* max(|x|, acc): a NaN in x leaves acc (the second operand), as fmaxf ignores NaN */
        __m512 vmax = _mm512_setzero_ps();
        for (int64_t k = 0; k < n; k += 16) {
            __mmask16 mk = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
            vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(mk, x + k)), vmax);
        }
        float amax = _mm512_reduce_max_ps(vmax);
        *scale = amax / 127.0f;
        inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    }
    const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    __m512i vsum = _mm512_setzero_si512();
    for (int64_t k = 0; k < n; k += 16) {
        __mmask16 mk = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + k), vinv);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* NaN: max gives lo, the second operand */
        __m512i qi = _mm512_cvtps_epi32(v);          /* round to nearest even, as lrintf */
        vsum = _mm512_add_epi32(vsum, _mm512_maskz_mov_epi32(mk, qi));
        _mm512_mask_cvtepi32_storeu_epi8(q + k, mk, qi);
    }
    return _mm512_reduce_add_epi32(vsum);
}
