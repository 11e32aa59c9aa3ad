/* Every ops.h kernel of every ISA this machine can run against its scalar reference, on odd
 * sizes; attention (reference and SIMD) against a double-precision computation from the same
 * stored (rounded) K/V. Each ISA's table is called directly (as INFERNODE_ISA would choose
 * it), through the drivers that split work over threads, with 1 and 2 OpenMP threads.
 * Attention runs head_dim 8..128 (multiples of 16, of 8 only, neither), GQA ratios 1, 4, 8
 * (also one KV head), 1..1000 rows, one token and three causal tokens, masks (with a token
 * that sees nothing), token-major and head-major caches whose padding and unseen rows hold
 * NaN (so a read of them shows), and a sharply peaked softmax.
 *
 * Tolerances (u = 2^-24, gamma(n) = n u / (1 - n u), Higham's bound for n-term fp32 sums):
 *  - kv_store / kv_load: bit-identical (both round to nearest even; NaN not tested).
 *  - rmsnorm: relative 1e-6. Both sum squares in double, so only the last bit of the scale
 *    can differ (measured: 0 or 1 ulp).
 *  - softmax, silu_mul: relative 1e-6 (+1e-44 absolute for subnormal results): the SIMD exp
 *    is within ~2 ulp of expf, one division or product follows.
 *  - layernorm: |a - b| <= 1e-6 (|(x - mean) w / sigma| + |b|) + 2^-22 |mean| |w| / sigma: the
 *    kernels sum in double as the reference does, then subtract the fp32-rounded mean and
 *    scale in fp32 (a few roundings of the terms, and of the mean).
 *  - gelu (tanh): relative 2e-6 (1 + |u|), u = sqrt(2/pi)(x + 0.044715 x^3): the SIMD form
 *    x / (1 + exp(-2u)) rounds u, and for large negative u the result's relative error is
 *    ~2|u| times u's; plus 3e-37 absolute where exp(-2u) overflows fp32 (SIMD gives 0 there,
 *    the reference a value below 3e-37). ERF runs the reference itself on every ISA.
 *  - rope: |a - b| <= 2^-22 (|x_i| + |x_partner|): the reference rounds x0 c and x1 s
 *    separately, the SIMD kernels fuse one of them (FMA); each is within 2u of the exact
 *    rotation. fp16/bf16 cache rows: plus one unit in the last place of the stored type.
 *  - attention: for output d of a (token, head), with S = max_r scale sum_d |q_d k_rd| and
 *    P|V|_d = sum_r p_r |v_rd| (exact softmax weights p),
 *        |out - exact| <= (4 gamma(head_dim + 4) S + gamma(4 n_visible + 32)) P|V|_d
 *    Scores carry gamma(head_dim + 1) S each; exp turns an absolute score error into the
 *    same relative error of p, normalising doubles it, the online softmax's rescales add
 *    ~3u per block of rows, and the sums over rows add gamma(n). (The SIMD kernels drop
 *    weights below exp(-87) < 2^-125 of the largest: far inside the bound.) Both the
 *    reference and every SIMD path must meet it; 1 and 2 threads must agree bit for bit.
 * usage: test_ops [--quick] */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "ops_isa.h"
#include "test_random.h"

static test_rng rng = { 0x243f6a8885a308d3ull };

static void fill_gauss(float *x, size_t n, float sigma)
{
    for (size_t i = 0; i < n; i++) x[i] = test_gauss(&rng) * sigma;
}

static int failures, checks;
static double worst_attn_ratio; /* largest |error| / tolerance seen in attention */

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
    checks++;
    if (ok) return;
    if (failures++ < 30) {
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL: ");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
}

static const int sizes[] = { 1, 3, 7, 16, 17, 127, 4095, 4096 };
#define N_SIZES (int)(sizeof sizes / sizeof sizes[0])

/* Index of the element paired with d in a head. */
static int partner(int d, int head_dim, ifn_rope_layout layout)
{
    if (layout == IFN_ROPE_INTERLEAVED) return d ^ 1;
    return d < head_dim / 2 ? d + head_dim / 2 : d - head_dim / 2;
}

/* ---- rmsnorm, softmax, silu ------------------------------------------------------------- */

static bool rel_close(float a, float b, double rel, double abs_tol)
{
    return fabs((double)a - (double)b) <= rel * fabs((double)b) + abs_tol;
}

static void test_rmsnorm(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    for (int si = 0; si < N_SIZES; si++) {
        int n = sizes[si];
        for (float sigma = 1e-3f; sigma < 1e4f; sigma *= 100.0f) {
            float *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w), *y = malloc(n * sizeof *y),
                  *yr = malloc(n * sizeof *yr);
            fill_gauss(x, n, sigma);
            fill_gauss(w, n, 1.0f);
            ifn_rmsnorm_ref(yr, x, w, n, 1e-5f);
            k->rmsnorm(y, x, w, n, 1e-5f);
            int bad = 0;
            for (int i = 0; i < n; i++) bad += !rel_close(y[i], yr[i], 1e-6, 1e-30);
            check(!bad, "%s rmsnorm n=%d sigma=%g: %d elements off", isa, n, sigma, bad);
            k->rmsnorm(x, x, w, n, 1e-5f); /* in place */
            bad = 0;
            for (int i = 0; i < n; i++) bad += x[i] != y[i];
            check(!bad, "%s rmsnorm in place n=%d: %d elements differ", isa, n, bad);
            free(x), free(w), free(y), free(yr);
        }
    }
    /* many rows: the threaded driver */
    int rows = 37, n = 4095;
    float *x = malloc((size_t)rows * n * sizeof *x), *w = malloc(n * sizeof *w);
    float *y = malloc((size_t)rows * n * sizeof *y), *yr = malloc((size_t)rows * n * sizeof *yr);
    fill_gauss(x, (size_t)rows * n, 2.0f);
    fill_gauss(w, n, 1.0f);
    for (int r = 0; r < rows; r++) ifn_rmsnorm_ref(yr + (size_t)r * n, x + (size_t)r * n, w, n, 1e-6f);
    ops_rmsnorm_rows(k, y, x, w, rows, n, 1e-6f);
    int bad = 0;
    for (size_t i = 0; i < (size_t)rows * n; i++) bad += !rel_close(y[i], yr[i], 1e-6, 1e-30);
    check(!bad, "%s rmsnorm_rows %dx%d: %d elements off", isa, rows, n, bad);
    free(x), free(w), free(y), free(yr);
}

static void test_layernorm(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    for (int si = 0; si < N_SIZES; si++) {
        const int n = sizes[si];
        for (float sigma = 1e-3f; sigma < 1e4f; sigma *= 100.0f)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                float *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w), *b = malloc(n * sizeof *b);
                float *y = malloc(n * sizeof *y), *yr = malloc(n * sizeof *yr);
                fill_gauss(x, n, sigma);
                for (int i = 0; i < n; i++) x[i] += sigma * 0.5f; /* a mean that is not zero */
                fill_gauss(w, n, 1.0f);
                fill_gauss(b, n, 1.0f);
                const float *bb = with_bias ? b : NULL;
                ifn_layernorm_ref(yr, x, w, bb, n, 1e-5f);
                k->layernorm(y, x, w, bb, n, 1e-5f);
                double mean = 0.0, var = 0.0;
                for (int i = 0; i < n; i++) mean += x[i];
                mean /= n;
                for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
                const double inv = 1.0 / sqrt(var / n + 1e-5);
                int bad = 0;
                for (int i = 0; i < n; i++) {
                    double t = fabs((x[i] - mean) * inv * w[i]), bi = bb ? fabs(bb[i]) : 0.0;
                    double tol = 1e-6 * (t + bi) + ldexp(1.0, -22) * fabs(mean) * inv * fabs(w[i]) + 1e-30;
                    bad += !(fabs((double)y[i] - yr[i]) <= tol);
                }
                check(!bad, "%s layernorm n=%d sigma=%g bias=%d: %d elements off", isa, n, sigma, with_bias, bad);
                k->layernorm(x, x, w, bb, n, 1e-5f); /* in place */
                bad = 0;
                for (int i = 0; i < n; i++) bad += x[i] != y[i];
                check(!bad, "%s layernorm in place n=%d: %d elements differ", isa, n, bad);
                free(x), free(w), free(b), free(y), free(yr);
            }
    }
    int rows = 37, n = 4095; /* the threaded driver */
    float *x = malloc((size_t)rows * n * sizeof *x), *w = malloc(n * sizeof *w), *b = malloc(n * sizeof *b);
    float *y = malloc((size_t)rows * n * sizeof *y), *yr = malloc((size_t)rows * n * sizeof *yr);
    fill_gauss(x, (size_t)rows * n, 2.0f);
    fill_gauss(w, n, 1.0f);
    fill_gauss(b, n, 1.0f);
    for (int r = 0; r < rows; r++) k->layernorm(yr + (size_t)r * n, x + (size_t)r * n, w, b, n, 1e-6f);
    ops_layernorm_rows(k, y, x, w, b, rows, n, 1e-6f);
    int bad = 0;
    for (size_t i = 0; i < (size_t)rows * n; i++) bad += y[i] != yr[i];
    check(!bad, "%s layernorm_rows %dx%d: %d elements differ from the row kernel", isa, rows, n, bad);
    free(x), free(w), free(b), free(y), free(yr);
}

static void test_gelu(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    static const float extremes[] = { 0.0f, -0.0f, 1e-30f, -1e-30f, 5.0f, -5.0f, 10.0f, -10.0f, -12.0f, 30.0f,
                                      -30.0f, 1e4f, -1e4f, 3.0f, -3.0f };
    const int n_ext = (int)(sizeof extremes / sizeof extremes[0]);
    for (int si = 0; si <= N_SIZES; si++) {
        const int n = si < N_SIZES ? sizes[si] : 100003;
        for (int kind = IFN_GELU_TANH; kind <= IFN_GELU_ERF; kind++) {
            float *x = malloc(n * sizeof *x), *xr = malloc(n * sizeof *xr), *x0 = malloc(n * sizeof *x0);
            fill_gauss(x, n, 3.0f);
            for (int i = 0; i < n && i < n_ext; i++) x[(i * 7) % n] = extremes[i];
            memcpy(xr, x, n * sizeof *x);
            memcpy(x0, x, n * sizeof *x);
            ifn_gelu_ref(xr, n, (ifn_gelu_kind)kind);
            ops_gelu(k, x, n, (ifn_gelu_kind)kind);
            int bad = 0;
            for (int i = 0; i < n; i++) {
                double v = x0[i], u = 0.79788456080286535588 * (v + 0.044715 * v * v * v);
                bad += !rel_close(x[i], xr[i], kind == IFN_GELU_TANH ? 2e-6 * (1.0 + fabs(u)) : 0.0, 3e-37);
            }
            check(!bad, "%s gelu %s n=%d: %d elements off", isa, kind == IFN_GELU_TANH ? "tanh" : "erf", n, bad);
            free(x), free(xr), free(x0);
        }
    }
}

static void test_softmax(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    for (int si = 0; si < N_SIZES; si++) {
        int n = sizes[si];
        for (float sigma = 0.1f; sigma < 100.0f; sigma *= 10.0f) {
            float *x = malloc(n * sizeof *x), *xr = malloc(n * sizeof *xr);
            fill_gauss(x, n, sigma);
            memcpy(xr, x, n * sizeof *x);
            ifn_softmax_ref(xr, n);
            k->softmax(x, n);
            int bad = 0;
            for (int i = 0; i < n; i++) bad += !rel_close(x[i], xr[i], 1e-6, 1e-44);
            check(!bad, "%s softmax n=%d sigma=%g: %d elements off", isa, n, sigma, bad);
            free(x), free(xr);
        }
    }
}

static void test_silu(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    static const float extremes[] = { 0.0f, -0.0f, 1e-30f, -1e-30f, 88.5f, -88.5f, 89.5f, -89.5f, -100.0f, 100.0f,
                                      -87.0f, -103.0f, -105.0f, 20.0f, -20.0f };
    const int n_ext = (int)(sizeof extremes / sizeof extremes[0]);
    int big[] = { 100003 };
    for (int si = 0; si <= N_SIZES; si++) {
        int n = si < N_SIZES ? sizes[si] : big[0];
        float *g = malloc(n * sizeof *g), *up = malloc(n * sizeof *up), *gr = malloc(n * sizeof *gr);
        fill_gauss(g, n, 6.0f);
        fill_gauss(up, n, 1.0f);
        for (int i = 0; i < n && i < n_ext; i++) g[(i * 7) % n] = extremes[i];
        memcpy(gr, g, n * sizeof *g);
        ifn_silu_mul_ref(gr, up, n);
        ops_silu_mul(k, g, up, n);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += !rel_close(g[i], gr[i], 1e-6, 1e-44);
        check(!bad, "%s silu_mul n=%d: %d elements off", isa, n, bad);
        free(g), free(up), free(gr);
    }
}

/* ---- KV rows ---------------------------------------------------------------------------- */

static void test_kv_convert(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    static const float special[] = { 0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, -7e4f, 6e-8f, 3e-8f, 2.9e-8f,
                                     1e-5f, 1e-40f, -1e-40f, 3.4e38f, -3.4e38f, INFINITY, -INFINITY };
    const int n_sp = (int)(sizeof special / sizeof special[0]);
    for (int t = 0; t < IFN_KV_COUNT; t++)
        for (int si = 0; si < N_SIZES; si++) {
            int n = sizes[si];
            size_t bytes = (size_t)n * ifn_kv_type_size((ifn_kv_type)t);
            float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *yr = malloc(n * sizeof *yr);
            unsigned char *a = malloc(bytes + 2), *b = malloc(bytes + 2);
            for (int i = 0; i < n; i++) {
                double scale = pow(10.0, (int)(test_uniform(&rng) * 12) - 7);
                x[i] = (float)(test_gauss(&rng) * scale);
            }
            for (int i = 0; i < n && i < n_sp; i++) x[(i * 5) % n] = special[i];
            a[bytes] = b[bytes] = 0xa5; /* guard: nothing past n elements is written */
            ifn_kv_store_ref(a, x, n, (ifn_kv_type)t);
            k->kv_store(b, x, n, (ifn_kv_type)t);
            check(memcmp(a, b, bytes + 1) == 0, "%s kv_store %s n=%d: bytes differ", isa,
                  ifn_kv_type_name((ifn_kv_type)t), n);
            ifn_kv_load_ref(yr, a, n, (ifn_kv_type)t);
            k->kv_load(y, a, n, (ifn_kv_type)t);
            check(memcmp(y, yr, n * sizeof *y) == 0, "%s kv_load %s n=%d: values differ", isa,
                  ifn_kv_type_name((ifn_kv_type)t), n);
            free(x), free(y), free(yr), free(a), free(b);
        }
}

/* ---- RoPE ------------------------------------------------------------------------------- */

static const double positions[] = { 0, 1, 2, 17, 4095, 100000, -1, -17, -100000, 2.5 };
#define N_POS (int)(sizeof positions / sizeof positions[0])

/* The specs the RoPE tests cycle through: plain theta 1e4 and 5e5 (freq NULL), and scaled
 * frequencies (linear, Llama 3, YaRN) for head_dim hd in freq [3][IFN_OPS_HEAD_DIM_MAX / 2]. */
static ifn_rope_spec rope_spec(int which, int hd, ifn_rope_layout layout, double (*freq)[IFN_OPS_HEAD_DIM_MAX / 2])
{
    static const ifn_rope_scaling sc[3] = {
        { .kind = IFN_ROPE_SCALING_LINEAR, .factor = 4.0f, .attn_factor = 1.0f },
        { .kind = IFN_ROPE_SCALING_LLAMA3, .factor = 8.0f, .orig_ctx = 64, .low_freq_factor = 1.0f,
          .high_freq_factor = 4.0f, .attn_factor = 1.0f },
        { .kind = IFN_ROPE_SCALING_YARN, .factor = 4.0f, .orig_ctx = 64, .beta_fast = 32.0f, .beta_slow = 1.0f,
          .attn_factor = 1.1386f },
    };
    const float theta = which % 2 ? 500000.0f : 10000.0f;
    if (which < 2) return (ifn_rope_spec){ .layout = layout, .theta = theta };
    ifn_rope_freqs(freq[which - 2], hd, theta, &sc[which - 2], NULL);
    return (ifn_rope_spec){ .layout = layout, .theta = theta, .freq = freq[which - 2] };
}

static void test_rope(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    static const int dims[] = { 2, 6, 40, 64, 80, 128, 256 }, heads[] = { 1, 3, 32 };
    for (int layout = 0; layout < 2; layout++)
        for (int di = 0; di < 7; di++)
            for (int hi = 0; hi < 3; hi++)
                for (int pi = 0; pi < N_POS; pi++) {
                    int hd = dims[di], nh = heads[hi];
                    size_t n = (size_t)hd * nh;
                    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *yr = malloc(n * sizeof *yr);
                    fill_gauss(x, n, 3.0f);
                    memcpy(y, x, n * sizeof *x);
                    memcpy(yr, x, n * sizeof *x);
                    double freq[3][IFN_OPS_HEAD_DIM_MAX / 2];
                    const ifn_rope_spec rs = rope_spec((pi + di) % 5, hd, (ifn_rope_layout)layout, freq);
                    ifn_rope_ref(yr, nh, hd, positions[pi], &rs);
                    float cs[2 * IFN_OPS_HEAD_DIM_MAX];
                    ops_rope_table(cs, hd, positions[pi], &rs);
                    k->rope(y, nh, hd, cs, (ifn_rope_layout)layout);
                    int bad = 0;
                    for (size_t i = 0; i < n; i++) {
                        int d = (int)(i % hd);
                        size_t j = i - d + partner(d, hd, (ifn_rope_layout)layout);
                        double tol = ldexp(fabs(x[i]) + fabs(x[j]), -22);
                        bad += !(fabs((double)y[i] - yr[i]) <= tol);
                        if (k->isa == IFN_ISA_SCALAR) bad += y[i] != yr[i]; /* the same arithmetic */
                    }
                    check(!bad, "%s rope %s hd=%d heads=%d pos=%g: %d elements off", isa,
                          ifn_rope_layout_name((ifn_rope_layout)layout), hd, nh, positions[pi], bad);
                    free(x), free(y), free(yr);
                }
}

static void test_rope_rows(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    static const int rows_list[] = { 1, 5, 300 };
    for (int layout = 0; layout < 2; layout++)
        for (int ri = 0; ri < 3; ri++) {
            int rows = rows_list[ri], nh = 4, hd = 64;
            size_t stride = (size_t)nh * hd + 3, n = (size_t)rows * stride;
            float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *yr = malloc(n * sizeof *yr);
            fill_gauss(x, n, 1.0f);
            memcpy(y, x, n * sizeof *x);
            memcpy(yr, x, n * sizeof *x);
            double freq[3][IFN_OPS_HEAD_DIM_MAX / 2];
            const ifn_rope_spec rs = rope_spec((ri + 2 * layout) % 5, hd, (ifn_rope_layout)layout, freq);
            for (int r = 0; r < rows; r++) ifn_rope_ref(yr + r * stride, nh, hd, 1000 + r, &rs);
            ops_rope_rows(k, y, rows, stride, nh, hd, 1000, &rs);
            int bad = 0;
            for (size_t i = 0; i < n; i++) {
                size_t c = i % stride;
                if (c >= (size_t)nh * hd) {
                    bad += y[i] != x[i]; /* padding untouched */
                    continue;
                }
                int d = (int)(c % hd);
                size_t j = i - d + partner(d, hd, (ifn_rope_layout)layout);
                bad += !(fabs((double)y[i] - yr[i]) <= ldexp(fabs(x[i]) + fabs(x[j]), -22));
            }
            check(!bad, "%s rope_rows %s rows=%d: %d elements off", isa, ifn_rope_layout_name((ifn_rope_layout)layout),
                  rows, bad);
            free(x), free(y), free(yr);
        }
}

/* One unit in the last place of the stored type at magnitude |v|. */
static double type_ulp(ifn_kv_type t, double v)
{
    int e;
    frexp(fabs(v), &e);
    switch (t) {
    case IFN_KV_F16: return ldexp(1.0, (e - 11 > -24 ? e - 11 : -24));
    case IFN_KV_BF16: return ldexp(1.0, (e - 8 > -133 ? e - 8 : -133));
    default: return ldexp(1.0, (e - 24 > -149 ? e - 24 : -149));
    }
}

static void test_rope_kv(const ops_kernels *k)
{
    const char *isa = ifn_isa_name(k->isa);
    static const int dims[] = { 6, 64, 80, 128 }, rows_list[] = { 1, 3, 17, 600 };
    for (int t = 0; t < IFN_KV_COUNT; t++)
        for (int layout = 0; layout < 2; layout++)
            for (int di = 0; di < 4; di++)
                for (int ri = 0; ri < 4; ri++) {
                    ifn_kv_type type = (ifn_kv_type)t;
                    int hd = dims[di], rows = rows_list[ri], nh = 2;
                    size_t stride = (size_t)nh * hd + 2, n = (size_t)rows * stride, es = ifn_kv_type_size(type);
                    float *x = malloc(n * sizeof *x), *x0 = malloc(n * sizeof *x0), *y = malloc(n * sizeof *y),
                          *yr = malloc(n * sizeof *yr);
                    void *a = malloc(n * es), *b = malloc(n * es);
                    fill_gauss(x, n, 2.0f);
                    ifn_kv_store_ref(a, x, (int)n, type);
                    ifn_kv_load_ref(x0, a, (int)n, type); /* the stored values */
                    memcpy(b, a, n * es);
                    double delta = -(double)(17 + 31 * ri);
                    double freq[3][IFN_OPS_HEAD_DIM_MAX / 2];
                    const ifn_rope_spec rs = rope_spec((di + ri) % 5, hd, (ifn_rope_layout)layout, freq);
                    ifn_rope_kv_ref(a, type, rows, stride, nh, hd, delta, &rs);
                    ops_rope_kv(k, b, type, rows, stride, nh, hd, delta, &rs);
                    ifn_kv_load_ref(yr, a, (int)n, type);
                    ifn_kv_load_ref(y, b, (int)n, type);
                    int bad = 0;
                    for (size_t i = 0; i < n; i++) {
                        size_t c = i % stride;
                        if (c >= (size_t)nh * hd) {
                            bad += y[i] != x0[i];
                            continue;
                        }
                        int d = (int)(c % hd);
                        size_t j = i - d + partner(d, hd, (ifn_rope_layout)layout);
                        double tol = ldexp(fabs(x0[i]) + fabs(x0[j]), -22);
                        if (type != IFN_KV_F32) tol += type_ulp(type, fmax(fabs(y[i]), fabs(yr[i])));
                        bad += !(fabs((double)y[i] - yr[i]) <= tol);
                    }
                    check(!bad, "%s rope_kv %s %s hd=%d rows=%d: %d elements off", isa, ifn_kv_type_name(type),
                          ifn_rope_layout_name((ifn_rope_layout)layout), hd, rows, bad);
                    if (type == IFN_KV_F32) { /* rotating back restores the keys */
                        ops_rope_kv(k, b, type, rows, stride, nh, hd, -delta, &rs);
                        const float *z = b;
                        bad = 0;
                        for (size_t i = 0; i < n; i++) {
                            size_t c = i % stride;
                            int d = (int)(c % hd);
                            size_t j = c >= (size_t)nh * hd ? i : i - d + partner(d, hd, (ifn_rope_layout)layout);
                            bad += !(fabs((double)z[i] - x0[i]) <= ldexp(fabs(x0[i]) + fabs(x0[j]), -20));
                        }
                        check(!bad, "%s rope_kv back %s hd=%d rows=%d: %d elements off", isa,
                              ifn_rope_layout_name((ifn_rope_layout)layout), hd, rows, bad);
                    }
                    free(x), free(x0), free(y), free(yr), free(a), free(b);
                }
}

/* ---- attention -------------------------------------------------------------------------- */

typedef struct {
    int n_tokens, n_heads, n_kv_heads, head_dim, n_rows; /* n_kv_heads: those in the cache */
    ifn_attn_heads heads;
    ifn_kv_type type;
    bool masked, head_major;
    size_t row_stride, head_stride, size; /* element (r, g, d) at r row_stride + g head_stride + d */
    float *q;            /* [n_tokens][n_heads][head_dim] */
    void *k, *v;         /* [size] of type */
    float *kf, *vf;      /* the stored values, widened */
    uint8_t *mask;       /* [n_tokens][n_rows] or NULL */
    double *exact, *tol; /* [n_tokens][n_heads][head_dim] */
} attn_case;

static bool visible(const attn_case *c, int t, int r)
{
    return c->mask ? c->mask[(size_t)t * c->n_rows + r] != 0 : r <= c->n_rows - c->n_tokens + t;
}

static size_t kv_at(const attn_case *c, int r, int g) { return (size_t)r * c->row_stride + (size_t)g * c->head_stride; }

/* The cache's KV head that query head h reads. */
static int kv_of(const attn_case *c, int h) { return (c->heads.head0 + h) / c->heads.group - c->heads.kv_head0; }

static double gamma_n(double n)
{
    double nu = n * ldexp(1.0, -24);
    return nu / (1.0 - nu);
}

/* The exact (double) attention over the stored values, and the tolerance of the header. */
static void attn_exact(attn_case *c)
{
    const int hd = c->head_dim;
    const double scale = 1.0 / sqrt((double)hd);
    double *s = malloc(c->n_rows * sizeof *s), *sa = malloc(c->n_rows * sizeof *sa);
    for (int t = 0; t < c->n_tokens; t++)
        for (int h = 0; h < c->n_heads; h++) {
            const float *qh = c->q + ((size_t)t * c->n_heads + h) * hd;
            double max = -INFINITY, smax = 0.0;
            int n_vis = 0;
            for (int r = 0; r < c->n_rows; r++) {
                if (!visible(c, t, r)) continue;
                const float *kr = c->kf + kv_at(c, r, kv_of(c, h));
                double dot = 0.0, adot = 0.0;
                for (int d = 0; d < hd; d++) {
                    dot += (double)qh[d] * kr[d];
                    adot += fabs((double)qh[d] * kr[d]);
                }
                s[r] = dot * scale;
                sa[r] = adot * scale;
                if (s[r] > max) max = s[r];
                if (sa[r] > smax) smax = sa[r];
                n_vis++;
            }
            double sum = 0.0;
            for (int r = 0; r < c->n_rows; r++) {
                s[r] = visible(c, t, r) ? exp(s[r] - max) : 0.0; /* now the weight, unnormalised */
                sum += s[r];
            }
            double rel = 4.0 * gamma_n(hd + 4) * smax + gamma_n(4.0 * n_vis + 32);
            double *ex = c->exact + ((size_t)t * c->n_heads + h) * hd, *tl = c->tol + ((size_t)t * c->n_heads + h) * hd;
            for (int d = 0; d < hd; d++) {
                double o = 0.0, pv = 0.0;
                for (int r = 0; r < c->n_rows; r++) {
                    if (s[r] == 0.0) continue;
                    double p = s[r] / sum, vv = c->vf[kv_at(c, r, kv_of(c, h)) + d];
                    o += p * vv;
                    pv += p * fabs(vv);
                }
                ex[d] = n_vis ? o : 0.0;
                tl[d] = rel * pv + 1e-30;
            }
        }
    free(s), free(sa);
}

/* q ~ N(0, q_sigma^2): 2 gives a moderately peaked softmax; 40 puts most weights below
 * exp(-87), which the SIMD kernels flush to zero. The cache is token-major with 5 elements of
 * padding per row, or head-major with 3 per row and 7 per head; padding must never be read. */
static attn_case attn_make(int n_tokens, ifn_attn_heads heads, int hd, int n_rows, ifn_kv_type type, bool masked,
                           bool head_major, float q_sigma)
{
    heads.head_dim = hd;
    const int n_heads = heads.n_heads;
    const int n_kv_heads = (heads.head0 + n_heads - 1) / heads.group - heads.kv_head0 + 1;
    attn_case c = { .n_tokens = n_tokens, .n_heads = n_heads, .n_kv_heads = n_kv_heads, .head_dim = hd,
                    .n_rows = n_rows, .heads = heads, .type = type, .masked = masked, .head_major = head_major };
    if (head_major) {
        c.row_stride = (size_t)hd + 3;
        c.head_stride = (size_t)n_rows * c.row_stride + 7;
        c.size = (size_t)n_kv_heads * c.head_stride;
    } else {
        c.row_stride = (size_t)n_kv_heads * hd + 5;
        c.head_stride = (size_t)hd;
        c.size = (size_t)n_rows * c.row_stride;
    }
    size_t nq = (size_t)n_tokens * n_heads * hd, nkv = c.size, es = ifn_kv_type_size(type);
    c.q = malloc(nq * sizeof *c.q);
    c.kf = malloc(nkv * sizeof *c.kf);
    c.vf = malloc(nkv * sizeof *c.vf);
    c.k = malloc(nkv * es);
    c.v = malloc(nkv * es);
    c.exact = malloc(nq * sizeof *c.exact);
    c.tol = malloc(nq * sizeof *c.tol);
    fill_gauss(c.q, nq, q_sigma);
    fill_gauss(c.kf, nkv, 1.0f);
    fill_gauss(c.vf, nkv, 1.0f);
    if (masked) {
        c.mask = malloc((size_t)n_tokens * n_rows);
        for (int t = 0; t < n_tokens; t++)
            for (int r = 0; r < n_rows; r++)
                c.mask[(size_t)t * n_rows + r] = t == n_tokens - 1 && n_tokens > 1 ? 0 /* sees nothing */
                                                 : r % 5 == 3                      ? 0 /* a free ring slot */
                                                                                   : test_uniform(&rng) < 0.7;
    }
    ifn_kv_store_ref(c.k, c.kf, (int)nkv, type);
    ifn_kv_store_ref(c.v, c.vf, (int)nkv, type);
    ifn_kv_load_ref(c.kf, c.k, (int)nkv, type);
    ifn_kv_load_ref(c.vf, c.v, (int)nkv, type);
    attn_exact(&c);
    /* Poison what no token may read: padding, and rows no token sees. */
    uint8_t *read = calloc(nkv, 1);
    for (int r = 0; r < n_rows; r++) {
        bool seen = false;
        for (int t = 0; t < n_tokens; t++) seen |= visible(&c, t, r);
        for (int g = 0; seen && g < n_kv_heads; g++) memset(read + kv_at(&c, r, g), 1, (size_t)hd);
    }
    const float nan = NAN;
    uint16_t nan16 = type == IFN_KV_F16 ? 0x7e00 : 0x7fc0;
    for (size_t i = 0; i < nkv; i++) {
        if (read[i]) continue;
        if (type == IFN_KV_F32) {
            ((float *)c.k)[i] = nan;
            ((float *)c.v)[i] = nan;
        } else {
            ((uint16_t *)c.k)[i] = nan16;
            ((uint16_t *)c.v)[i] = nan16;
        }
    }
    free(read);
    return c;
}

static void attn_free(attn_case *c)
{
    free(c->q), free(c->kf), free(c->vf), free(c->k), free(c->v), free(c->exact), free(c->tol), free(c->mask);
}

/* out against the exact values; returns the number of elements beyond tolerance. */
static int attn_compare(const attn_case *c, const float *out)
{
    int bad = 0;
    size_t n = (size_t)c->n_tokens * c->n_heads * c->head_dim;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)out[i] - c->exact[i]);
        if (err / c->tol[i] > worst_attn_ratio) worst_attn_ratio = err / c->tol[i];
        bad += !(err <= c->tol[i]);
    }
    return bad;
}

static void test_attention_case(const ops_kernels *const *tables, int n_tables, int n_tokens, ifn_attn_heads heads,
                                int hd, int n_rows, ifn_kv_type type, bool masked, bool head_major, float q_sigma)
{
    attn_case c = attn_make(n_tokens, heads, hd, n_rows, type, masked, head_major, q_sigma);
    ifn_kv_rows kv = { .k = c.k, .v = c.v, .type = type, .row_stride = c.row_stride,
                       .head_stride = head_major ? c.head_stride : 0, .n_rows = n_rows };
    size_t nq = (size_t)n_tokens * c.n_heads * hd;
    float *out = malloc(nq * sizeof *out), *out2 = malloc(nq * sizeof *out2);
    char what[160];
    snprintf(what, sizeof what, "attention %s tokens=%d heads=%d/%d hd=%d rows=%d%s%s q_sigma=%g",
             ifn_kv_type_name(type), n_tokens, c.n_heads, c.n_kv_heads, hd, n_rows, masked ? " masked" : "",
             head_major ? " head-major" : "", q_sigma);
    ifn_attention_kv_ref(out, c.q, n_tokens, &c.heads, &kv, c.mask);
    int bad = attn_compare(&c, out);
    check(!bad, "%s (ifn_attention_kv_ref): %d elements beyond the bound", what, bad);
    for (int i = 0; i < n_tables; i++) {
        const ops_kernels *k = tables[i];
        omp_set_num_threads(1);
        ops_attention(k, out, c.q, n_tokens, &c.heads, &kv, c.mask);
        omp_set_num_threads(2);
        ops_attention(k, out2, c.q, n_tokens, &c.heads, &kv, c.mask);
        bad = attn_compare(&c, out);
        check(!bad, "%s %s: %d elements beyond the bound", ifn_isa_name(k->isa), what, bad);
        check(memcmp(out, out2, nq * sizeof *out) == 0, "%s %s: 1 and 2 threads differ", ifn_isa_name(k->isa), what);
    }
    free(out), free(out2);
    attn_free(&c);
}

/* Each case once (the exact values are the slow part), run by the reference and every table. */
static void test_attention(const ops_kernels *const *tables, int n_tables, bool quick)
{
    static const int dims[] = { 64, 80, 128, 40, 36, 16, 8 };
    /* n_heads, group (GQA ratio), head0, kv_head0: whole models with ratios 1, 4, 8, 8, and
     * tensor-parallel shards that start and end inside GQA groups */
    static const ifn_attn_heads gqa[] = {
        { .n_heads = 2, .group = 1 },  { .n_heads = 8, .group = 4 },
        { .n_heads = 8, .group = 8 },  { .n_heads = 32, .group = 8 },
        { .n_heads = 13, .group = 8, .head0 = 5, .kv_head0 = 0 }, /* KV heads 0..2 */
        { .n_heads = 10, .group = 8, .head0 = 11, .kv_head0 = 1 }, /* KV heads 1..2 */
        { .n_heads = 5, .group = 1, .head0 = 3, .kv_head0 = 3 },
    };
    const int n_gqa = (int)(sizeof gqa / sizeof gqa[0]);
    static const int rows_list[] = { 1, 2, 15, 16, 17, 100, 1000 };
    for (int di = 0; di < 7; di++)
        for (int gi = 0; gi < n_gqa; gi++)
            for (int ri = 0; ri < 7; ri++)
                for (int t = 0; t < IFN_KV_COUNT; t++) {
                    if (quick && (ri % 2 || gi == 3)) continue;
                    if ((dims[di] < 40 || (gi >= 4 && dims[di] != 64)) && rows_list[ri] > 100) continue;
                    int rows = rows_list[ri];
                    ifn_kv_type type = (ifn_kv_type)t;
                    bool hm = (ri + t + gi) % 2; /* half of the cases on a head-major cache */
                    test_attention_case(tables, n_tables, 1, gqa[gi], dims[di], rows, type, false, hm, 2.0f);
                    if (rows >= 3) test_attention_case(tables, n_tables, 3, gqa[gi], dims[di], rows, type, false, !hm, 2.0f);
                    test_attention_case(tables, n_tables, 3, gqa[gi], dims[di], rows, type, true, hm, 2.0f);
                    if (gi == 1 && rows >= 100)
                        test_attention_case(tables, n_tables, 1, gqa[gi], dims[di], rows, type, false, hm, 40.0f);
                }
}

int main(int argc, char **argv)
{
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    ifn_isa best = ifn_isa_best(), active;
    if (ifn_isa_active(&active) != IFN_OK) {
        printf("FAIL: %s\n", ifn_error_detail());
        return 1;
    }
    printf("machine: best ISA %s, active %s; testing scalar..%s\n", ifn_isa_name(best), ifn_isa_name(active),
           ifn_isa_name(best));
    check(ops_kernels_active() == ops_kernels_for(active), "the public functions do not use the %s table",
          ifn_isa_name(active));
    const ops_kernels *tables[IFN_ISA_COUNT];
    int n_tables = 0;
    for (int isa = IFN_ISA_SCALAR; isa <= (int)best && isa <= IFN_ISA_AVX512; isa++) {
        const ops_kernels *k = tables[n_tables++] = ops_kernels_for((ifn_isa)isa);
        int before = failures, checks_before = checks;
        test_kv_convert(k);
        test_rmsnorm(k);
        test_softmax(k);
        test_silu(k);
        test_layernorm(k);
        test_gelu(k);
        test_rope(k);
        test_rope_rows(k);
        test_rope_kv(k);
        printf("%-7s %5d checks, %d failures\n", ifn_isa_name((ifn_isa)isa), checks - checks_before, failures - before);
    }
    int before = failures, checks_before = checks;
    /* The scalar table's attend is the reference itself (and runs wherever no SIMD table
     * supports a head_dim, as with 36, and for items of <= 32 rows x head_dim, as with 8 and
     * 16), so only the SIMD tables run again; head_dim 8 and 40 run the AVX2 kernel at the
     * AVX-512 level. */
    test_attention(tables + 1, n_tables - 1, quick);
    printf("attention (reference and %d SIMD tables, 1 and 2 threads): %d checks, %d failures\n", n_tables - 1,
           checks - checks_before, failures - before);
    printf("attention: worst error / bound = %.3g\n", worst_attn_ratio);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
