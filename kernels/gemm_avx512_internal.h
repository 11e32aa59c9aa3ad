/* Shared between the AVX-512 kernel files (gemm_avx512.c, gemm_avx512_int8.c,
 * gemm_avx512_fp.c); not part of the kernels' public interface. */
#ifndef IFN_GEMM_AVX512_INTERNAL_H
#define IFN_GEMM_AVX512_INTERNAL_H

#include "gemm.h"

/* Each file's share of gemm_lookup_avx512: false if it has no kernel for (w, m). */
bool gemm_avx512_lookup_int8(const ifn_qweight *w, int m, gemm_kernel *out);
bool gemm_avx512_lookup_fp(const ifn_qweight *w, int m, gemm_kernel *out);

#endif
