/* C emulation of the AMX tile intrinsics that kernels/gemm_amx.c uses, so its kernels can be
 * tested on machines without AMX. gemm_amx.c includes this header (after <immintrin.h>) only
 * when built with -DIFN_AMX_EMULATE; nothing else in the kernel changes.
 *
 * Semantics follow the Intel SDM pseudo-code (vol. 2, LDTILECFG, TILELOADD, TILESTORED,
 * TILEZERO, TILERELEASE, TDPBSSD, TDPBF16PS) for palette 1 (8 tiles of at most 16 rows x 64
 * bytes):
 *   - loads/stores move rows x colsb bytes of the tile's configuration, row r at base + r *
 *     stride; a load zeroes the rest of each row and the rows past `rows`
 *     (write_row_and_zero, zero_upper_rows). Only those bytes are read, so a sanitizer sees
 *     the kernel's real footprint.
 *   - tdpbssd: C[m][n] += sum_k sum_{j<4} A[m][4k+j] * B[k][4n+j], int8 x int8 in int32 with
 *     wraparound, k < colsb(A)/4, n < colsb(C)/4.
 *   - tdpbf16ps (the SDM's order, which differs from the intrinsics guide's simplified one):
 *     per row m and column n, two fp32 partial sums start at 0; for each k, even += A[m][2k] *
 *     B[k][2n] and odd += A[m][2k+1] * B[k][2n+1], each a fused multiply-add; then C[m][n] +=
 *     (even + odd). Every step rounds to nearest even, treats denormal inputs as zero and
 *     flushes denormal results to zero (DAZ = FTZ = 1), whatever MXCSR says.
 *   - the shape checks of the AMX-E4 exception class (colsb multiple of 4, C.colsb = B.colsb,
 *     A.rows = C.rows, A.colsb / 4 = B.rows, at most 16 x 16 x 16 dwords) and of LDTILECFG
 *     (palette 1, reserved bytes zero, rows <= 16, colsb <= 64, rows and colsb both zero or
 *     both not, tiles 8..15 unused). Where the hardware would raise #UD or #GP the emulation
 *     prints what was wrong and aborts, as the hardware's signal would end the process.
 * Tile state is per thread, as on the hardware. Test-only code: not part of the product. */
#ifndef IFN_AMX_EMULATE_H
#define IFN_AMX_EMULATE_H

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbssd
#undef _tile_dpbf16ps
#define _tile_loadconfig(config) amx_emu_loadconfig(config)
#define _tile_release() amx_emu_release()
#define _tile_loadd(dst, base, stride) amx_emu_loadd(dst, base, (long)(stride))
#define _tile_stored(src, base, stride) amx_emu_stored(src, base, (long)(stride))
#define _tile_zero(dst) amx_emu_zero(dst)
#define _tile_dpbssd(dst, a, b) amx_emu_dpbssd(dst, a, b)
#define _tile_dpbf16ps(dst, a, b) amx_emu_dpbf16ps(dst, a, b)

enum { AMX_EMU_TILES = 8, AMX_EMU_ROWS = 16, AMX_EMU_COLSB = 64 };

typedef struct {
    bool configured;
    uint8_t rows[AMX_EMU_TILES];
    uint16_t colsb[AMX_EMU_TILES];
    uint8_t data[AMX_EMU_TILES][AMX_EMU_ROWS][AMX_EMU_COLSB];
} amx_emu_state;

static _Thread_local amx_emu_state amx_emu;

static inline void amx_emu_fault(const char *what, int tile)
{
    fprintf(stderr, "AMX emulation: %s (tile %d): the hardware would fault here\n", what, tile);
    abort();
}

static inline void amx_emu_check_tile(int t, const char *op)
{
    if (!amx_emu.configured) amx_emu_fault(op, t);
    if (t < 0 || t >= AMX_EMU_TILES || amx_emu.rows[t] == 0) amx_emu_fault(op, t);
}

static inline void amx_emu_loadconfig(const void *config)
{
    const uint8_t *p = config;
    uint16_t colsb[16];
    memcpy(colsb, p + 16, sizeof colsb);
    const uint8_t *rows = p + 48;
    if (p[0] == 0) { /* palette 0: the init state */
        memset(&amx_emu, 0, sizeof amx_emu);
        return;
    }
    if (p[0] != 1) amx_emu_fault("ldtilecfg: palette other than 1", -1);
    if (p[1] != 0) amx_emu_fault("ldtilecfg: start_row not 0", -1);
    for (int i = 2; i < 16; i++)
        if (p[i]) amx_emu_fault("ldtilecfg: reserved byte set", -1);
    for (int t = 0; t < 16; t++) {
        bool unused = rows[t] == 0 && colsb[t] == 0;
        if (t >= AMX_EMU_TILES && !unused) amx_emu_fault("ldtilecfg: palette 1 has 8 tiles", t);
        if (!unused && (rows[t] == 0 || colsb[t] == 0 || rows[t] > AMX_EMU_ROWS || colsb[t] > AMX_EMU_COLSB))
            amx_emu_fault("ldtilecfg: bad tile shape", t);
    }
    memset(&amx_emu, 0, sizeof amx_emu);
    amx_emu.configured = true;
    for (int t = 0; t < AMX_EMU_TILES; t++) {
        amx_emu.rows[t] = rows[t];
        amx_emu.colsb[t] = colsb[t];
    }
}

static inline void amx_emu_release(void) { memset(&amx_emu, 0, sizeof amx_emu); }

static inline void amx_emu_loadd(int t, const void *base, long stride)
{
    amx_emu_check_tile(t, "tileloadd");
    memset(amx_emu.data[t], 0, sizeof amx_emu.data[t]);
    for (int r = 0; r < amx_emu.rows[t]; r++)
        memcpy(amx_emu.data[t][r], (const uint8_t *)base + (long)r * stride, amx_emu.colsb[t]);
}

static inline void amx_emu_stored(int t, void *base, long stride)
{
    amx_emu_check_tile(t, "tilestored");
    for (int r = 0; r < amx_emu.rows[t]; r++)
        memcpy((uint8_t *)base + (long)r * stride, amx_emu.data[t][r], amx_emu.colsb[t]);
}

static inline void amx_emu_zero(int t)
{
    amx_emu_check_tile(t, "tilezero");
    memset(amx_emu.data[t], 0, sizeof amx_emu.data[t]);
}

/* The AMX-E4 shape checks shared by the dot products. */
static inline void amx_emu_check_dot(int c, int a, int b, const char *op)
{
    amx_emu_check_tile(c, op);
    amx_emu_check_tile(a, op);
    amx_emu_check_tile(b, op);
    if (amx_emu.colsb[c] % 4 || amx_emu.colsb[a] % 4 || amx_emu.colsb[b] % 4) amx_emu_fault(op, c);
    if (amx_emu.colsb[c] != amx_emu.colsb[b]) amx_emu_fault("dot product: C and B widths differ", c);
    if (amx_emu.rows[c] != amx_emu.rows[a]) amx_emu_fault("dot product: C and A heights differ", c);
    if (amx_emu.colsb[a] / 4 != amx_emu.rows[b]) amx_emu_fault("dot product: A width / 4 is not B's height", c);
    if (c == a || c == b || a == b) amx_emu_fault("dot product: operands must be distinct tiles", c);
}

static inline void amx_emu_dpbssd(int c, int a, int b)
{
    amx_emu_check_dot(c, a, b, "tdpbssd");
    int rows = amx_emu.rows[c], n_cols = amx_emu.colsb[c] / 4, n_k = amx_emu.colsb[a] / 4;
    for (int m = 0; m < rows; m++)
        for (int n = 0; n < n_cols; n++) {
            uint32_t acc;
            memcpy(&acc, &amx_emu.data[c][m][4 * n], 4);
            for (int k = 0; k < n_k; k++)
                for (int j = 0; j < 4; j++) {
                    int32_t x = (int8_t)amx_emu.data[a][m][4 * k + j], y = (int8_t)amx_emu.data[b][k][4 * n + j];
                    acc += (uint32_t)(x * y); /* int32 with wraparound */
                }
            memcpy(&amx_emu.data[c][m][4 * n], &acc, 4);
        }
}

/* Denormals to signed zero: the DAZ of inputs and the FTZ of results. */
static inline float amx_emu_flush(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x; }

static inline float amx_emu_bf16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return amx_emu_flush(f);
}

static inline void amx_emu_dpbf16ps(int c, int a, int b)
{
    amx_emu_check_dot(c, a, b, "tdpbf16ps");
    int rows = amx_emu.rows[c], n_cols = amx_emu.colsb[c] / 4, n_k = amx_emu.colsb[a] / 4;
    for (int m = 0; m < rows; m++)
        for (int n = 0; n < n_cols; n++) {
            float even = 0.0f, odd = 0.0f, dst;
            for (int k = 0; k < n_k; k++) {
                const uint8_t *x = &amx_emu.data[a][m][4 * k], *y = &amx_emu.data[b][k][4 * n];
                even = amx_emu_flush(fmaf(amx_emu_bf16(x), amx_emu_bf16(y), even));
                odd = amx_emu_flush(fmaf(amx_emu_bf16(x + 2), amx_emu_bf16(y + 2), odd));
            }
            memcpy(&dst, &amx_emu.data[c][m][4 * n], 4);
            dst = amx_emu_flush(amx_emu_flush(dst) + amx_emu_flush(even + odd));
            memcpy(&amx_emu.data[c][m][4 * n], &dst, 4);
        }
}

#endif
