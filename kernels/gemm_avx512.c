/* avx512 kernels: none yet; every call falls back to a lower ISA. */
#include "gemm.h"

bool gemm_lookup_avx512(const ifn_qweight *w, int m, gemm_kernel *out)
{
    (void)w;
    (void)m;
    (void)out;
    return false;
}
