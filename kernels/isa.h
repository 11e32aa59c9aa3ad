/* Run-time choice of instruction set, in three layers (ggml-cpu's scheme): every kernel
 * variant is compiled into the build with its own flags; at run time CPUID, the OS's XSAVE
 * state (XCR0) and, for AMX, the arch_prctl(ARCH_REQ_XCOMP_PERM) permission decide what can
 * run; INFERNODE_ISA=scalar|avx2|avx512|amx lowers the choice so tests can force each path. */
#ifndef IFN_ISA_H
#define IFN_ISA_H

#include <stdbool.h>

#include "status.h"

/* Ordered: each level implies the ones below it. */
typedef enum {
    IFN_ISA_SCALAR = 0, /* portable C, the reference */
    IFN_ISA_AVX2,       /* AVX2 + FMA + F16C */
    IFN_ISA_AVX512,     /* AVX-512 F/BW/VL + VNNI + BF16 */
    IFN_ISA_AMX,        /* AVX512 level + AMX tile/int8/bf16, permission granted */
    IFN_ISA_COUNT
} ifn_isa;

const char *ifn_isa_name(ifn_isa isa);

/* Parses "scalar", "avx2", "avx512", "amx". */
ifn_status ifn_isa_parse(const char *s, ifn_isa *out);

/* The best level this machine and OS allow (detected once; thread-safe). */
ifn_isa ifn_isa_best(void);

/* The level kernels use: ifn_isa_best(), lowered by INFERNODE_ISA if set. Asking for more
 * than the machine has fails with a message naming what is missing; an unknown value too. */
ifn_status ifn_isa_active(ifn_isa *out);

#endif
