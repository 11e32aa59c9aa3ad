/* Every GEMM path against the scalar reference (and the scalar reference against a double-
 * precision sum over qweight_value), on odd shapes, for every weight format and recipe, at
 * every ISA this machine can run (each forced as INFERNODE_ISA would force it).
 *
 * Tolerances:
 *  - A8: the integer dot products are exact, and kernels apply the group scales in the
 *    reference's fmaf order, so results must be bit-identical to the scalar reference.
 *  - A16 and F32: both sides sum K products of exactly representable values in fp32 in
 *    different orders; each is within K * 2^-24 * sum|x w| of the exact sum (Higham's bound
 *    for recursive summation; blocked sums are tighter), so they may differ by twice that.
 * usage: test_gemm [--quick] [--max-k K] [--isa NAME]
 *   --quick, --max-k K: fewer or smaller shapes, for runs by hand */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "test_random.h"

#ifdef IFN_TEST_AMX_EMULATED
/* This build links kernels/gemm_amx.c with its tile instructions emulated in C
 * (amx_emulate.h): it tests the AMX kernels, and only them, on any machine with AVX-512 (their
 * float stages need it), calling them directly instead of through the machine's ISA check. */
static const bool amx_emulated = true;
#else
static const bool amx_emulated = false;
#endif

static test_rng rng = { 0x9e3779b97f4a7c15ull };

/* A random source matrix of type src (rows of n_in) for packing. */
static void *make_source(ifn_dtype src, int64_t n_out, int64_t n_in)
{
    size_t rb = ifn_dtype_row_bytes(src, n_in);
    uint8_t *buf = malloc(rb * (size_t)n_out + 1);
    for (int64_t r = 0; r < n_out; r++) {
        uint8_t *row = buf + (size_t)r * rb;
        if (src == IFN_DTYPE_F32) {
            for (int64_t k = 0; k < n_in; k++) ((float *)row)[k] = test_gauss(&rng) * 0.5f;
        } else {
            /* GGUF blocks with random scales and integers. */
            size_t bb = ifn_dtype_block_bytes(src);
            for (int64_t b = 0; b < n_in / 32; b++) {
                uint8_t *p = row + (size_t)b * bb;
                uint16_t d = ifn_f32_to_fp16((float)(0.001 + 0.05 * test_uniform(&rng))), mn = ifn_f32_to_fp16(-0.3f * (float)test_uniform(&rng));
                memcpy(p, &d, 2);
                size_t off = 2;
                if (src == IFN_DTYPE_Q4_1) {
                    memcpy(p + 2, &mn, 2);
                    off = 4;
                }
                for (size_t j = off; j < bb; j++) p[j] = (uint8_t)(test_uniform(&rng) * 256);
                if (src == IFN_DTYPE_Q8_0)
                    for (size_t j = off; j < bb; j++)
                        if (p[j] == 0x80) p[j] = 0x81; /* q = -128 is outside Q8_0's range */
            }
        }
    }
    return buf;
}

typedef struct {
    const char *spec;
    ifn_dtype src;
} format_case;

static const format_case formats[] = {
    { "f32", IFN_DTYPE_F32 },          { "f16", IFN_DTYPE_F32 },          { "bf16", IFN_DTYPE_F32 },
    { "w8a8", IFN_DTYPE_F32 },         { "w8a8-g32", IFN_DTYPE_F32 },     { "w8a8-g32", IFN_DTYPE_Q8_0 },
    { "w4a8-g32", IFN_DTYPE_Q4_0 },    { "w4a8-g32-asym", IFN_DTYPE_Q4_1 }, { "w4a8-g64", IFN_DTYPE_F32 },
    { "w4a8-g128", IFN_DTYPE_F32 },    { "w4a8-pc", IFN_DTYPE_F32 },      { "w4a8-g128-asym", IFN_DTYPE_F32 },
    { "w4a8-pc-asym", IFN_DTYPE_F32 }, { "w4a16-g32", IFN_DTYPE_Q4_0 },   { "w4a16-g128", IFN_DTYPE_F32 },
    { "w4a16-g64-asym", IFN_DTYPE_F32 }, { "w4a16-pc", IFN_DTYPE_F32 },
};

static int failures, checks;

/* Compares y (from isa) with the scalar reference yr and checks yr against a double sum. */
static void compare(const char *what, const float *y, const float *yr, const double *bound, const qw_spec *spec,
                    int m, int64_t n_out)
{
    bool exact = spec->compute == QW_COMPUTE_A8;
    double worst = 0.0;
    int64_t bad = -1;
    for (int64_t i = 0; i < (int64_t)m * n_out; i++) {
        double err = fabs((double)y[i] - (double)yr[i]);
        double tol = exact ? 0.0 : 2.0 * bound[i];
        if (err > tol || isnan(y[i]) != isnan(yr[i])) {
            if (bad < 0) bad = i;
        }
        if (bound[i] > 0 && err / bound[i] > worst) worst = err / bound[i];
    }
    checks++;
    if (bad >= 0) {
        failures++;
        printf("FAIL %s: y[%lld] = %.9g, reference %.9g (tolerance %s)\n", what, (long long)bad, y[bad], yr[bad],
               exact ? "bit-exact" : "2 K 2^-24 sum|xw|");
    }
}

/* Every kernel up to max_isa (or only it) for w against the scalar reference's yr. */
static void check_kernels(const format_case *fc, const ifn_qweight *w, const float *x, int m, const float *yr,
                          const double *bound, gemm_scratch *s, ifn_isa max_isa, bool only, const char *note)
{
    qw_spec spec;
    if (qw_spec_parse(fc->spec, &spec) != IFN_OK) abort();
    float *y = malloc((size_t)m * w->n_out * sizeof *y);
    for (int isa = IFN_ISA_AVX2; isa <= (int)max_isa; isa++) {
        if (only && isa != (int)max_isa) continue;
        gemm_kernel k;
        bool has = false;
        switch (isa) {
        case IFN_ISA_AVX2: has = gemm_lookup_avx2(w, m, &k); break;
        case IFN_ISA_AVX512: has = gemm_lookup_avx512(w, m, &k); break;
        case IFN_ISA_AMX: has = gemm_lookup_amx(w, m, &k); break;
        }
        if (!has) continue;
        memset(y, 0xff, (size_t)m * w->n_out * sizeof *y);
        ifn_status st = amx_emulated ? gemm_run_kernel(y, x, m, w, s, &k) : gemm_run_isa(y, x, m, w, s, (ifn_isa)isa);
        if (st != IFN_OK) {
            printf("FAIL %s: %s\n", k.name, ifn_error_detail());
            failures++;
            continue;
        }
        char what[160];
        snprintf(what, sizeof what, "%s [%s%s] N=%lld K=%lld M=%d", k.name, fc->spec, note, (long long)w->n_out,
                 (long long)w->n_in, m);
        compare(what, y, yr, bound, &spec, m, w->n_out);
    }
    free(y);
}

static void run_case(const format_case *fc, int64_t n_out, int64_t n_in, int m, ifn_isa max_isa, bool only)
{
    qw_spec spec;
    if (qw_spec_parse(fc->spec, &spec) != IFN_OK) abort();
    if (spec.group && n_in % spec.group) return;
    if (fc->src != IFN_DTYPE_F32 && n_in % 32) return;
    void *src = make_source(fc->src, n_out, n_in);
    ifn_weight wsrc = { .type = fc->src, .n_out = n_out, .n_in = n_in, .data = src };
    ifn_qweight w;
    if (qweight_pack(&wsrc, &spec, &w) != IFN_OK) {
        printf("FAIL pack %s %lldx%lld: %s\n", fc->spec, (long long)n_out, (long long)n_in, ifn_error_detail());
        failures++;
        free(src);
        return;
    }
    float *x = malloc((size_t)m * n_in * sizeof *x);
    for (int64_t i = 0; i < (int64_t)m * n_in; i++) x[i] = test_gauss(&rng);
    float *yr = malloc((size_t)m * n_out * sizeof *yr);
    double *bound = malloc((size_t)m * n_out * sizeof *bound);
    gemm_scratch *s;
    if (gemm_scratch_create(&s) != IFN_OK || gemm_run_isa(yr, x, m, &w, s, IFN_ISA_SCALAR) != IFN_OK) abort();

    /* The scalar reference against a double-precision sum of what the recipe multiplies. */
    float *xr = malloc((size_t)n_in * sizeof *xr); /* one row of activations as the recipe rounds them */
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * n_in;
        for (int64_t k = 0; k < n_in; k++) xr[k] = spec.compute == QW_COMPUTE_A16 ? ifn_bf16_to_f32(ifn_f32_to_bf16(xi[k])) : xi[k];
        if (spec.compute == QW_COMPUTE_A8) /* dequantized with its group's scale */
            for (int64_t g0 = 0; g0 < n_in; g0 += w.group) {
                int64_t g1 = g0 + w.group < n_in ? g0 + w.group : n_in;
                float amax = 0.0f;
                for (int64_t k = g0; k < g1; k++) amax = fmaxf(amax, fabsf(xi[k]));
                for (int64_t k = g0; k < g1; k++)
                    xr[k] = amax > 0 ? (float)lrintf(xi[k] * (127.0f / amax)) * (amax / 127.0f) : 0.0f;
            }
        bool bad_row = false;
        for (int64_t n = 0; n < n_out && !bad_row; n++) {
            double sum = 0.0, abs_sum = 0.0;
            for (int64_t k = 0; k < n_in; k++) {
                double p = (double)xr[k] * qweight_value(&w, n, k);
                sum += p;
                abs_sum += fabs(p);
            }
            bound[(size_t)i * n_out + n] = (double)n_in * 0x1p-24 * abs_sum + 1e-30;
            /* A8 also rounds the scales' products: allow a few ulps of the absolute sum. */
            double tol = spec.compute == QW_COMPUTE_A8 ? 1e-5 * abs_sum + 1e-30 : bound[(size_t)i * n_out + n];
            double err = fabs(yr[(size_t)i * n_out + n] - sum);
            if (err > tol) {
                if (failures < 20)
                    printf("FAIL scalar %s %lldx%lld m=%d: y[%d][%lld] = %.9g, exact %.9g\n", fc->spec,
                           (long long)n_out, (long long)n_in, m, i, (long long)n, yr[(size_t)i * n_out + n], sum);
                failures++;
                bad_row = true;
            }
        }
        if (bad_row) break;
    }
    free(xr);

    /* GGUF blocks keep fp16 scales, so the packed weight has exact fp16 copies for the
     * kernels; the second pass runs them on the fp32 scales alone. */
    if (fc->src != IFN_DTYPE_F32 && spec.compute == QW_COMPUTE_A8 && (!w.scales_h || (w.asym && !w.mins_h))) {
        printf("FAIL pack %s from GGUF blocks %lldx%lld: no fp16 scales\n", fc->spec, (long long)n_out, (long long)n_in);
        failures++;
    }
    check_kernels(fc, &w, x, m, yr, bound, s, max_isa, only, "");
    if (w.scales_h) {
        free(w.scales_h);
        free(w.mins_h);
        w.scales_h = w.mins_h = NULL;
        check_kernels(fc, &w, x, m, yr, bound, s, max_isa, only, ", fp32 scales");
    }
    gemm_scratch_destroy(s);
    free(bound);
    free(yr);
    free(x);
    qweight_free(&w);
    free(src);
}

/* gemm_run_many on weights of the given specs and sources (same n_in) against gemm_run on
 * each: the same bits, whether they share one prepared input or fall back to a run each. */
static void run_many_case(const format_case *const fcs[3], const int64_t n_outs[3], int64_t n_in, int m)
{
    ifn_qweight w[3];
    void *src[3];
    float *y[3], *yr[3];
    float *x = malloc((size_t)m * n_in * sizeof *x);
    for (int64_t i = 0; i < (int64_t)m * n_in; i++) x[i] = test_gauss(&rng);
    gemm_scratch *s;
    if (gemm_scratch_create(&s) != IFN_OK) abort();
    for (int j = 0; j < 3; j++) {
        qw_spec spec;
        if (qw_spec_parse(fcs[j]->spec, &spec) != IFN_OK) abort();
        src[j] = make_source(fcs[j]->src, n_outs[j], n_in);
        ifn_weight wsrc = { .type = fcs[j]->src, .n_out = n_outs[j], .n_in = n_in, .data = src[j] };
        if (qweight_pack(&wsrc, &spec, &w[j]) != IFN_OK) abort();
        y[j] = malloc((size_t)m * n_outs[j] * sizeof *y[j]);
        yr[j] = malloc((size_t)m * n_outs[j] * sizeof *yr[j]);
        memset(y[j], 0xff, (size_t)m * n_outs[j] * sizeof *y[j]);
        if (gemm_run(yr[j], x, m, &w[j], s) != IFN_OK) abort();
    }
    if (gemm_run_many(y, x, m, (const ifn_qweight *const[]){ &w[0], &w[1], &w[2] }, 3, s) != IFN_OK) abort();
    for (int j = 0; j < 3; j++) {
        checks++;
        if (memcmp(y[j], yr[j], (size_t)m * n_outs[j] * sizeof *y[j]) != 0) {
            printf("FAIL gemm_run_many weight %d [%s, %s, %s] N=%lld K=%lld M=%d: differs from gemm_run\n", j,
                   fcs[0]->spec, fcs[1]->spec, fcs[2]->spec, (long long)n_outs[j], (long long)n_in, m);
            failures++;
        }
        qweight_free(&w[j]);
        free(src[j]);
        free(y[j]);
        free(yr[j]);
    }
    gemm_scratch_destroy(s);
    free(x);
}

static void run_many_cases(void)
{
    const format_case q4 = { "w4a8-g32", IFN_DTYPE_Q4_0 }, q8 = { "w8a8-g32", IFN_DTYPE_Q8_0 },
                      g128 = { "w4a8-g128", IFN_DTYPE_F32 }, f32 = { "f32", IFN_DTYPE_F32 };
    const format_case *const sets[][3] = { { &q4, &q4, &q4 }, { &q8, &q8, &q8 }, { &g128, &g128, &g128 },
                                           { &f32, &f32, &f32 }, { &q4, &q8, &q4 }, { &q4, &g128, &f32 } };
    static const int64_t outs[][3] = { { 1, 3, 7 }, { 17, 1, 127 }, { 260, 33, 33 } };
    static const int64_t ks[] = { 128, 384, 2048 };
    static const int ms[] = { 1, 3, 17 };
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++)
        for (size_t oi = 0; oi < sizeof outs / sizeof outs[0]; oi++)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) run_many_case(sets[si], outs[oi], ks[ki], ms[mi]);
}

int main(int argc, char **argv)
{
    bool quick = false, only = false;
    long max_k = 1L << 30;
    ifn_isa max_isa = ifn_isa_best();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (strcmp(argv[i], "--max-k") == 0 && i + 1 < argc) max_k = atol(argv[++i]);
        else if (strcmp(argv[i], "--isa") == 0 && i + 1 < argc) {
            if (ifn_isa_parse(argv[++i], &max_isa) != IFN_OK) return 2;
            only = true;
        }
    }
    if (amx_emulated) {
        if (ifn_isa_best() < IFN_ISA_AVX512) {
            printf("SKIP: the emulated AMX kernels need AVX-512 (best: %s)\n", ifn_isa_name(ifn_isa_best()));
            return 77;
        }
        max_isa = IFN_ISA_AMX;
        only = true;
    } else if (max_isa > ifn_isa_best()) {
        printf("SKIP: this machine cannot run %s kernels (best: %s)\n", ifn_isa_name(max_isa), ifn_isa_name(ifn_isa_best()));
        return 77;
    }
    printf("machine: best ISA %s; testing up to %s%s\n", ifn_isa_name(ifn_isa_best()), ifn_isa_name(max_isa),
           amx_emulated ? " (emulated)" : "");
    static const int64_t ks_any[] = { 1, 3, 7, 17, 127, 4095 };
    static const int64_t ks_grouped[] = { 32, 96, 128, 384, 4096 };
    static const int64_t ns[] = { 1, 3, 7, 17, 127 };
    static const int ms[] = { 1, 2, 3, 7, 17, 33 };
    for (size_t f = 0; f < sizeof formats / sizeof formats[0]; f++) {
        for (int set = 0; set < 2; set++) {
            const int64_t *ks = set ? ks_grouped : ks_any;
            size_t nk = set ? sizeof ks_grouped / sizeof ks_grouped[0] : sizeof ks_any / sizeof ks_any[0];
            for (size_t ki = 0; ki < nk; ki++)
                for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                        if (quick && (ks[ki] > 400 && (ns[ni] > 17 || ms[mi] > 7))) continue;
                        if (ks[ki] > max_k) continue;
                        if (ks[ki] > 1000 && ns[ni] * ms[mi] > 17 * 7) continue;
                        run_case(&formats[f], ns[ni], ks[ki], ms[mi], max_isa, only);
                    }
        }
        /* One larger shape per format, to cross the kernels' blocking boundaries. */
        if (max_k >= 1024) run_case(&formats[f], 260, 1024, 130, max_isa, only);
        else run_case(&formats[f], 260, max_k / 128 * 128, 130, max_isa, only);
    }
    if (!amx_emulated && !only) run_many_cases();
    printf("%d comparisons, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
