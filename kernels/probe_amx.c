/* AMX peak loops. Tile map: tmm0-3 accumulators (16 x 16 int32/fp32), tmm4-5 A (16 rows x
 * 64 bytes), tmm6-7 B (16 rows x 64 bytes); four independent tdp per iteration keep the
 * tile unit busy. Operands stay in tiles, so this is the compute ceiling, not a kernel. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "probe.h"

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

double probe_loop_amx(probe_op op, long iters)
{
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    _Alignas(64) uint8_t operand[16 * 64];
    memset(operand, 1, sizeof operand);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, operand, 64);
    _tile_loadd(5, operand, 64);
    _tile_loadd(6, operand, 64);
    _tile_loadd(7, operand, 64);
    double per_instr;
    if (op == PROBE_AMX_INT8) {
        for (long i = 0; i < iters; i++) {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
        per_instr = 2.0 * 16 * 16 * 64;
    } else {
        for (long i = 0; i < iters; i++) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        per_instr = 2.0 * 16 * 16 * 32;
    }
    _Alignas(64) int32_t out[16 * 16];
    _tile_stored(0, out, 64);
    _tile_release();
    return per_instr * 4.0 * (double)iters;
}
