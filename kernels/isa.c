#include "isa.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static const char *const names[IFN_ISA_COUNT] = { "scalar", "avx2", "avx512", "amx" };

const char *ifn_isa_name(ifn_isa isa) { return (unsigned)isa < IFN_ISA_COUNT ? names[isa] : "?"; }

ifn_status ifn_isa_parse(const char *s, ifn_isa *out)
{
    for (int i = 0; i < IFN_ISA_COUNT; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (ifn_isa)i;
            return IFN_OK;
        }
    return ifn_error_set(IFN_ERR_INVALID_ARG, "INFERNODE_ISA='%s' is not one of scalar, avx2, avx512, amx", s);
}

typedef struct {
    ifn_isa best;
} cpu_caps;

static cpu_caps caps;
static pthread_once_t caps_once = PTHREAD_ONCE_INIT;

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect(void)
{
    unsigned a, b, c, d;
    caps.best = IFN_ISA_SCALAR;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave) return;
    uint64_t xcr0 = xgetbv0();
    bool os_avx = (xcr0 & 0x6) == 0x6, os_avx512 = (xcr0 & 0xe6) == 0xe6;
    bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
    bool vnni = c & (1u << 11);
    bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24), amx_int8 = d & (1u << 25);
    unsigned a1 = 0, b1, c1, d1;
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    bool avx512_bf16 = os_avx512 && (a1 & (1u << 5));

    if (!(os_avx && avx2 && fma && f16c)) return;
    caps.best = IFN_ISA_AVX2;
    if (!(os_avx512 && avx512f && avx512bw && avx512vl && vnni && avx512_bf16)) return;
    caps.best = IFN_ISA_AVX512;
    if (!(os_amx && amx_tile && amx_int8 && amx_bf16)) return;
    /* Linux hands out AMX tile state only on request; a refusal means no AMX, not a crash. */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    caps.best = IFN_ISA_AMX;
}

ifn_isa ifn_isa_best(void)
{
    pthread_once(&caps_once, detect);
    return caps.best;
}

ifn_status ifn_isa_active(ifn_isa *out)
{
    ifn_isa best = ifn_isa_best();
    const char *env = getenv("INFERNODE_ISA");
    if (!env || !*env) {
        *out = best;
        return IFN_OK;
    }
    ifn_isa want;
    CHECK(ifn_isa_parse(env, &want));
    if (want > best)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "INFERNODE_ISA=%s, but this machine supports at most %s", env,
                             ifn_isa_name(best));
    *out = want;
    return IFN_OK;
}
