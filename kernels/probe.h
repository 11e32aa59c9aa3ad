/* Machine probes for the benchmarks: what this machine can do, measured in the same run as
 * the kernels so that kernel figures can be given as fractions of it. */
#ifndef IFN_PROBE_H
#define IFN_PROBE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PROBE_FP32_FMA,   /* AVX-512 (or AVX2) fp32 FMA, GFLOPS (2 per FMA lane) */
    PROBE_VNNI_INT8,  /* AVX-512 VNNI vpdpbusd, int8 GOPS (2 per multiply-add) */
    PROBE_BF16_DOT,   /* AVX-512 BF16 vdpbf16ps, GFLOPS */
    PROBE_AMX_INT8,   /* AMX tdpbssd, int8 GOPS */
    PROBE_AMX_BF16,   /* AMX tdpbf16ps, GFLOPS */
    PROBE_COUNT
} probe_op;

const char *probe_op_name(probe_op op);
bool probe_available(probe_op op);

/* Peak throughput of op over `threads` OpenMP threads (each running independent chains from
 * registers), in G-operations per second; 0 if unavailable. */
double probe_peak(probe_op op, int threads);

/* Read bandwidth in GB/s: `threads` threads each summing its share of a `bytes` buffer with
 * several independent streams (the way the GEMV kernels read weights). */
double probe_read_bandwidth(size_t bytes, int threads);

/* Per-ISA loops (probe_avx512.c, probe_amx.c): run `iters` iterations, return ops done. */
double probe_loop_avx512(probe_op op, long iters);
double probe_loop_amx(probe_op op, long iters);
double probe_read_avx512(const void *buf, size_t bytes);

#endif
