#include "machine_profile.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "dtype.h"
#include "gemm.h"
#include "isa.h"
#include "probe.h"
#include "qweight.h"

/* The compute probe: an f16 matrix of GF_N x GF_N (2 MiB, in cache) times GF_M rows, the
 * verification step of one sequence proposing 7 tokens; GF_CALLS calls per timed batch.
 * Every figure is the best of many short batches: on a machine shared with other work a
 * batch that ran undisturbed is the machine's figure, and the mean would be the load's. */
#define GF_N 1024
#define GF_M 8
#define GF_CALLS 4
#define REGION_CALLS 50
#define BATCHES 40
#define BW_SECONDS 0.3 /* per working-set size, at least 3 probes */
#define FILE_HEADER "# infernode machine profile: measured once and read by every later start; delete it to measure again\n"

size_t machine_profile_bw_bytes(int i)
{
    return (size_t)4 << 20 << (2 * i);
}

void machine_profile_path(char *buf, size_t cap)
{
    const char *env = getenv("INFERNODE_MACHINE_PROFILE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (env && *env) snprintf(buf, cap, "%s", env);
    else if (xdg && *xdg) snprintf(buf, cap, "%s/infernode/machine-profile", xdg);
    else if (home && *home) snprintf(buf, cap, "%s/.cache/infernode/machine-profile", home);
    else if (cap) buf[0] = '\0';
}

/* Two significant digits: the figure both a measuring and a reading start use. */
static double round2(double x)
{
    char s[32];
    snprintf(s, sizeof s, "%.2g", x);
    return strtod(s, NULL);
}

static void profile_key(int threads, char *buf, size_t cap)
{
    char model[96] = "unknown cpu", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        snprintf(model, sizeof model, "%s", colon + 2);
        model[strcspn(model, "\n|")] = '\0';
        break;
    }
    if (f) fclose(f);
    snprintf(buf, cap, "%s|%s|%d", model, ifn_isa_name(ifn_isa_best()), threads);
}

/* GFLOP/s of the f16 kernel at GF_M rows: the best of BATCHES batches. */
static ifn_status measure_gflops(double *out)
{
    float *w32 = malloc((size_t)GF_N * GF_N * sizeof *w32);
    float *x = malloc((size_t)GF_M * GF_N * sizeof *x), *y = malloc((size_t)GF_M * GF_N * sizeof *y);
    ifn_qweight w = { 0 };
    gemm_scratch *sc = NULL;
    ifn_status st = w32 && x && y ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for the machine profile");
    for (size_t i = 0; st == IFN_OK && i < (size_t)GF_N * GF_N; i++) w32[i] = (float)(i % 7) * 0.01f;
    for (size_t i = 0; st == IFN_OK && i < (size_t)GF_M * GF_N; i++) x[i] = (float)(i % 5) * 0.1f;
    const ifn_weight src = { .type = IFN_DTYPE_F32, .n_out = GF_N, .n_in = GF_N, .data = w32 }; /* packed to f16 */
    if (st == IFN_OK) st = qweight_pack(&src, &(qw_spec){ .kind = QW_F16, .compute = QW_COMPUTE_F32 }, &w);
    if (st == IFN_OK) st = gemm_scratch_create(&sc);
    if (st == IFN_OK) st = gemm_run(y, x, GF_M, &w, sc); /* warm-up */
    double best = 0.0;
    for (int b = 0; st == IFN_OK && b < BATCHES; b++) {
        const double t0 = ifn_seconds();
        for (int c = 0; st == IFN_OK && c < GF_CALLS; c++) st = gemm_run(y, x, GF_M, &w, sc);
        const double rate = 2.0 * GF_M * GF_N * GF_N * GF_CALLS / (ifn_seconds() - t0) * 1e-9;
        if (rate > best) best = rate;
    }
    gemm_scratch_destroy(sc);
    qweight_free(&w);
    free(w32);
    free(x);
    free(y);
    *out = best;
    return st;
}

/* Microseconds of one parallel region (fork and join): the best of BATCHES batches. */
static double measure_region_us(int threads)
{
    double best = INFINITY;
    for (int b = 0; b < BATCHES; b++) {
        const double t0 = ifn_seconds();
        for (int c = 0; c < REGION_CALLS; c++) {
            #pragma omp parallel num_threads(threads)
            {
                __asm__ volatile("" ::: "memory");
            }
        }
        const double us = (ifn_seconds() - t0) / REGION_CALLS * 1e6;
        if (us < best) best = us;
    }
    return best;
}

/* The best of repeated bandwidth probes over `bytes`. */
static double measure_bandwidth(size_t bytes, int threads)
{
    double best = 0.0;
    const double t0 = ifn_seconds();
    for (int rep = 0; rep < 3 || ifn_seconds() - t0 < BW_SECONDS; rep++) {
        const double gbs = probe_read_bandwidth(bytes, threads);
        if (gbs > best) best = gbs;
    }
    return best;
}

static ifn_status measure(int threads, machine_profile *p)
{
    for (int i = MACHINE_BW_POINTS - 1; i >= 0; i--) {
        p->bw_gbs[i] = round2(measure_bandwidth(machine_profile_bw_bytes(i), threads));
        if (!(p->bw_gbs[i] > 0.0))
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "machine profile: no read bandwidth measured (the probe needs "
                                 "AVX-512)");
        /* a smaller working set never reads slower: a lower figure is a disturbed probe */
        if (i + 1 < MACHINE_BW_POINTS && p->bw_gbs[i] < p->bw_gbs[i + 1]) p->bw_gbs[i] = p->bw_gbs[i + 1];
    }
    CHECK(measure_gflops(&p->gflops));
    p->gflops = round2(p->gflops);
    p->region_us = round2(measure_region_us(threads));
    p->measured = true;
    return IFN_OK;
}

/* True if path holds a complete profile for p->key; fills p's figures. */
static bool read_profile(const char *path, machine_profile *p)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char line[256], name[32];
    int seen = 0;
    bool key_ok = false;
    while (fgets(line, sizeof line, f)) {
        double v;
        int i;
        if (strncmp(line, "key ", 4) == 0) {
            line[strcspn(line, "\n")] = '\0';
            key_ok = strcmp(line + 4, p->key) == 0;
        } else if (sscanf(line, "bw%d %lf", &i, &v) == 2 && i >= 0 && i < MACHINE_BW_POINTS && v > 0) {
            p->bw_gbs[i] = v;
            seen |= 1 << i;
        } else if (sscanf(line, "%31s %lf", name, &v) == 2 && v > 0 && strcmp(name, "gflops") == 0) {
            p->gflops = v;
            seen |= 1 << MACHINE_BW_POINTS;
        } else if (sscanf(line, "%31s %lf", name, &v) == 2 && v > 0 && strcmp(name, "region_us") == 0) {
            p->region_us = v;
            seen |= 2 << MACHINE_BW_POINTS;
        }
    }
    fclose(f);
    return key_ok && seen == (1 << (MACHINE_BW_POINTS + 2)) - 1;
}

/* Writes p to path through a temporary file (a concurrent reader sees the old or the new one). */
static bool write_profile(const char *path, const machine_profile *p)
{
    char dir[512], tmp[600];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        char *parent = strrchr(dir, '/');
        if (parent && parent != dir) { /* $XDG_CACHE_HOME itself may not exist yet */
            *parent = '\0';
            mkdir(dir, 0755);
            *parent = '/';
        }
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) return false;
    }
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return false;
    fprintf(f, FILE_HEADER "key %s\n", p->key);
    for (int i = 0; i < MACHINE_BW_POINTS; i++)
        fprintf(f, "bw%d %.2g   # GB/s reading %zu MiB\n", i, p->bw_gbs[i], machine_profile_bw_bytes(i) >> 20);
    fprintf(f, "gflops %.2g   # f16 kernel, %d rows\nregion_us %.2g   # one parallel region\n", p->gflops, GF_M,
            p->region_us);
    const bool ok = fclose(f) == 0 && rename(tmp, path) == 0;
    if (!ok) remove(tmp);
    return ok;
}

ifn_status machine_profile_get(const char *path, int threads, machine_profile *out)
{
    memset(out, 0, sizeof *out);
    out->threads = threads;
    profile_key(threads, out->key, sizeof out->key);
    const bool have_path = path && *path;
    if (have_path && read_profile(path, out)) {
        snprintf(out->path, sizeof out->path, "%s", path);
        return IFN_OK;
    }
    CHECK(measure(threads, out));
    if (have_path && write_profile(path, out)) snprintf(out->path, sizeof out->path, "%s", path);
    return IFN_OK;
}

double machine_profile_bandwidth(const machine_profile *p, double bytes)
{
    const double lo = (double)machine_profile_bw_bytes(0), hi = (double)machine_profile_bw_bytes(MACHINE_BW_POINTS - 1);
    if (bytes <= lo) return p->bw_gbs[0];
    if (bytes >= hi) return p->bw_gbs[MACHINE_BW_POINTS - 1];
    const double at = log2(bytes / lo) / 2.0; /* the points are 4x apart */
    const int i = (int)at;
    const double f = at - i;
    return p->bw_gbs[i] + f * (p->bw_gbs[i + 1] - p->bw_gbs[i]);
}

void machine_profile_describe(const machine_profile *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "read bandwidth %.2g / %.2g / %.2g / %.2g GB/s at 4 / 16 / 64 / 256 MiB, f16 kernel %.2g GFLOP/s "
             "at %d rows, parallel region %.2g us, %d threads (%s %s)", p->bw_gbs[0], p->bw_gbs[1], p->bw_gbs[2],
             p->bw_gbs[3], p->gflops, GF_M, p->region_us, p->threads, p->measured ? "measured now" : "read from",
             p->path[0] ? p->path : p->measured ? "not saved" : "?");
}
