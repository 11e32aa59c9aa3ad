/* AVX-512 kernels (F/BW/VL/DQ + VNNI + BF16): the table of what this ISA level offers.
 * The kernels themselves, and the notes on their blocking and measured speed, are in
 * gemm_avx512_int8.c (the A8 recipe: W8, W4) and gemm_avx512_fp.c (A16: BF16, W4; F32: F32,
 * F16). This file is compiled with the same flags as they are but holds no vector code. */
#include "gemm_avx512_internal.h"

bool gemm_lookup_avx512(const ifn_qweight *w, int m, gemm_kernel *out)
{
    if (m < 1 || w->k_pad % QW_K_ALIGN != 0 || w->n_pad % QW_ROWS != 0) return false;
    if (w->compute == QW_COMPUTE_A8) return gemm_avx512_lookup_int8(w, m, out);
    return gemm_avx512_lookup_fp(w, m, out);
}
