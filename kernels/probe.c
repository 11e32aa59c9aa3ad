#include "probe.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "isa.h"

const char *probe_op_name(probe_op op)
{
    static const char *const names[PROBE_COUNT] = { "fp32 fma", "avx512 vnni int8", "avx512 bf16 dot",
                                                    "amx int8", "amx bf16" };
    return (unsigned)op < PROBE_COUNT ? names[op] : "?";
}

bool probe_available(probe_op op)
{
    ifn_isa best = ifn_isa_best();
    if (op == PROBE_AMX_INT8 || op == PROBE_AMX_BF16) return best >= IFN_ISA_AMX;
    return best >= IFN_ISA_AVX512;
}

double probe_peak(probe_op op, int threads)
{
    if (!probe_available(op)) return 0.0;
    bool amx = op == PROBE_AMX_INT8 || op == PROBE_AMX_BF16;
    long iters = amx ? 2000000 : 20000000;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double ops = 0.0, t0 = ifn_seconds();
        #pragma omp parallel num_threads(threads) reduction(+ : ops)
        ops += amx ? probe_loop_amx(op, iters) : probe_loop_avx512(op, iters);
        double rate = ops / (ifn_seconds() - t0) * 1e-9;
        if (rate > best) best = rate;
    }
    return best;
}

double probe_read_bandwidth(size_t bytes, int threads)
{
    if (ifn_isa_best() < IFN_ISA_AVX512) return 0.0;
    unsigned char *buf = aligned_alloc(64, bytes);
    if (!buf) return 0.0;
    memset(buf, 1, bytes); /* fault every page in before timing */
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = ifn_seconds();
        #pragma omp parallel num_threads(threads)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            size_t share = bytes / (size_t)nt / 4096 * 4096;
            probe_read_avx512(buf + (size_t)t * share, share);
        }
        double gbs = (double)bytes / (ifn_seconds() - t0) * 1e-9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}
