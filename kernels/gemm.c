#include "gemm.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct gemm_scratch {
    void *buf;   /* activations in the recipe's type */
    size_t cap;
    float *scale;
    int32_t *gsum;
    size_t cap_rows, cap_gsum;
    float *gathered; /* act-order weights: x's columns in the weight's stored order */
    size_t cap_gathered;
};

ifn_status gemm_scratch_create(gemm_scratch **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for gemm scratch");
}

void gemm_scratch_destroy(gemm_scratch *s)
{
    if (!s) return;
    free(s->buf);
    free(s->scale);
    free(s->gsum);
    free(s->gathered);
    free(s);
}

static ifn_status reserve(gemm_scratch *s, size_t buf_bytes, size_t rows, size_t gsums)
{
    if (buf_bytes > s->cap) {
        void *nb = aligned_alloc(64, (buf_bytes + 63) / 64 * 64);
        if (!nb) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %zu bytes of activations", buf_bytes);
        free(s->buf);
        s->buf = nb;
        s->cap = (buf_bytes + 63) / 64 * 64;
        memset(s->buf, 0, s->cap); /* resident now, not at the first large step */
    }
    if (rows > s->cap_rows) {
        float *ns = realloc(s->scale, rows * sizeof *ns);
        if (!ns) return ifn_error_set(IFN_ERR_NOMEM, "no memory for activation scales");
        memset(ns, 0, rows * sizeof *ns);
        s->scale = ns;
        s->cap_rows = rows;
    }
    if (gsums > s->cap_gsum) {
        int32_t *ng = realloc(s->gsum, gsums * sizeof *ng);
        if (!ng) return ifn_error_set(IFN_ERR_NOMEM, "no memory for activation sums");
        memset(ng, 0, gsums * sizeof *ng);
        s->gsum = ng;
        s->cap_gsum = gsums;
    }
    return IFN_OK;
}

static ifn_status reserve_gathered(gemm_scratch *s, size_t n)
{
    if (n <= s->cap_gathered) return IFN_OK;
    float *g = realloc(s->gathered, n * sizeof *g);
    if (!g) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %zu gathered activations", n);
    memset(g, 0, n * sizeof *g);
    s->gathered = g;
    s->cap_gathered = n;
    return IFN_OK;
}

ifn_status gemm_scratch_reserve(gemm_scratch *s, int m, const ifn_qweight *w)
{
    size_t n = (size_t)m * (size_t)w->k_pad, groups = (size_t)m * (size_t)w->n_groups;
    if (w->perm) CHECK(reserve_gathered(s, (size_t)m * (size_t)w->n_in));
    switch (w->compute) {
    case QW_COMPUTE_F32: return w->k_pad == w->n_in ? IFN_OK : reserve(s, n * sizeof(float), 0, 0);
    case QW_COMPUTE_A16: return reserve(s, n * sizeof(uint16_t), 0, 0);
    case QW_COMPUTE_A8: return reserve(s, n, groups, groups);
    case QW_COMPUTE_COUNT: break;
    }
    return ifn_error_set(IFN_ERR_INTERNAL, "unknown compute recipe %d", w->compute);
}

/* Per row and weight group: dynamic scale max|x|/127 over the group (or the weight's static
 * scale), q = round(x / scale). Scaling by group keeps an outlier from flattening a whole
 * row, and makes a tensor-parallel shard (which splits rows at group boundaries) quantize
 * exactly as the unsplit matrix does. */
int32_t gemm_quantize_group_ref(const float *x, int64_t n, float static_scale, int8_t *q, float *scale)
{
    float inv;
    *scale = static_scale;
    if (static_scale > 0.0f) {
        inv = 1.0f / static_scale;
    } else {
        float amax = 0.0f;
        for (int64_t k = 0; k < n; k++) amax = fmaxf(amax, fabsf(x[k]));
        *scale = amax / 127.0f;
        inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    }
    int32_t sum = 0;
    for (int64_t k = 0; k < n; k++) {
        float v = x[k] * inv;
        v = v >= -127.0f ? v : -127.0f; /* NaN goes to -127 too */
        v = v <= 127.0f ? v : 127.0f;
        q[k] = (int8_t)lrintf(v);
        sum += q[k];
    }
    return sum;
}

/* Below this many activations a call quantizes on one thread. */
#define QUANT_PARALLEL_MIN (1 << 15)

static void quantize_rows(const float *x, int m, const ifn_qweight *w, gemm_scratch *s, ifn_isa isa)
{
    int8_t *q = s->buf;
    int32_t (*group_fn)(const float *, int64_t, float, int8_t *, float *) =
        isa >= IFN_ISA_AVX512 ? gemm_quantize_group_avx512 : gemm_quantize_group_ref;
    const int64_t n_items = (int64_t)m * w->n_groups;
    #pragma omp parallel for schedule(static) if ((int64_t)m * w->n_in >= QUANT_PARALLEL_MIN)
    for (int64_t it = 0; it < n_items; it++) {
        int64_t i = it / w->n_groups, g = it % w->n_groups;
        int64_t k0 = g * w->group, k1 = k0 + w->group < w->n_in ? k0 + w->group : w->n_in;
        int8_t *qi = q + i * w->k_pad;
        s->gsum[it] = group_fn(x + i * w->n_in + k0, k1 - k0, w->act_scale, qi + k0, &s->scale[it]);
        if (g == w->n_groups - 1) memset(qi + w->n_in, 0, (size_t)(w->k_pad - w->n_in));
    }
}

static ifn_status prepare(const float *x, int m, const ifn_qweight *w, gemm_scratch *s, ifn_isa isa, gemm_act *a)
{
    memset(a, 0, sizeof *a);
    a->m = m;
    a->k_pad = w->k_pad;
    CHECK(gemm_scratch_reserve(s, m, w));
    if (w->perm) { /* x [m][n_inputs] -> gathered [m][n_in] in stored column order */
        for (int i = 0; i < m; i++)
            for (int64_t j = 0; j < w->n_in; j++) {
                int32_t p = w->perm[j];
                s->gathered[(size_t)i * w->n_in + j] = p >= 0 ? x[(size_t)i * w->n_inputs + p] : 0.0f;
            }
        x = s->gathered;
    }
    switch (w->compute) {
    case QW_COMPUTE_F32:
        if (w->k_pad == w->n_in) {
            a->f32 = x;
            return IFN_OK;
        }
        for (int i = 0; i < m; i++) {
            float *row = (float *)s->buf + (size_t)i * w->k_pad;
            memcpy(row, x + (size_t)i * w->n_in, (size_t)w->n_in * sizeof(float));
            memset(row + w->n_in, 0, (size_t)(w->k_pad - w->n_in) * sizeof(float));
        }
        a->f32 = s->buf;
        return IFN_OK;
    case QW_COMPUTE_A16:
        for (int i = 0; i < m; i++) {
            uint16_t *row = (uint16_t *)s->buf + (size_t)i * w->k_pad;
            for (int64_t k = 0; k < w->n_in; k++) row[k] = ifn_f32_to_bf16(x[(size_t)i * w->n_in + k]);
            memset(row + w->n_in, 0, (size_t)(w->k_pad - w->n_in) * sizeof(uint16_t));
        }
        a->bf16 = s->buf;
        return IFN_OK;
    case QW_COMPUTE_A8:
        quantize_rows(x, m, w, s, isa);
        a->q = s->buf;
        a->scale = s->scale;
        a->gsum = s->gsum;
        return IFN_OK;
    case QW_COMPUTE_COUNT: break;
    }
    return ifn_error_set(IFN_ERR_INTERNAL, "unknown compute recipe %d", w->compute);
}

static bool lookup(ifn_isa isa, const ifn_qweight *w, int m, gemm_kernel *k)
{
    switch (isa) {
    case IFN_ISA_SCALAR: return gemm_lookup_scalar(w, m, k);
    case IFN_ISA_AVX2: return gemm_lookup_avx2(w, m, k);
    case IFN_ISA_AVX512: return gemm_lookup_avx512(w, m, k);
    case IFN_ISA_AMX: return gemm_lookup_amx(w, m, k);
    case IFN_ISA_COUNT: break;
    }
    return false;
}

gemm_kernel gemm_choose(const ifn_qweight *w, int m, ifn_isa isa)
{
    gemm_kernel k;
    for (int level = (int)isa; level > IFN_ISA_SCALAR; level--)
        if (lookup((ifn_isa)level, w, m, &k)) return k;
    gemm_lookup_scalar(w, m, &k);
    return k;
}

/* Below this many multiply-adds a call runs on one thread: waking a team costs more. */
#define PARALLEL_MIN_WORK (1 << 18)

static void run_kernel(const gemm_kernel *k, float *y, const gemm_act *a, const ifn_qweight *w)
{
    int64_t n_rb = w->n_pad / QW_ROWS;
    double work = (double)a->m * (double)w->n_pad * (double)w->k_pad;
    #pragma omp parallel if (n_rb > 1 && work >= PARALLEL_MIN_WORK)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t per = (n_rb + nt - 1) / nt;
        int64_t rb0 = (int64_t)t * per, rb1 = rb0 + per < n_rb ? rb0 + per : n_rb;
        if (rb0 < rb1) k->fn(y, w->n_out, a, w, rb0, rb1);
    }
}

ifn_status gemm_run(float *y, const float *x, int m, const ifn_qweight *w, gemm_scratch *s)
{
    ifn_isa isa;
    CHECK(ifn_isa_active(&isa));
    gemm_kernel k = gemm_choose(w, m, isa);
    gemm_act a;
    CHECK(prepare(x, m, w, s, k.isa, &a));
    run_kernel(&k, y, &a, w);
    return IFN_OK;
}

/* Whether activations prepared for a serve b as well (prepare() reads only these fields). */
static bool same_recipe(const ifn_qweight *a, const ifn_qweight *b)
{
    return a->compute == b->compute && a->n_in == b->n_in && a->k_pad == b->k_pad && a->group == b->group &&
           a->n_groups == b->n_groups && a->act_scale == b->act_scale && !a->perm && !b->perm;
}

enum { RUN_MANY_MAX = 4 };

ifn_status gemm_run_many(float *const *y, const float *x, int m, const ifn_qweight *const *w, int n_w, gemm_scratch *s)
{
    ifn_isa isa;
    CHECK(ifn_isa_active(&isa));
    gemm_kernel k[RUN_MANY_MAX];
    bool shared = n_w <= RUN_MANY_MAX;
    double work = 0.0;
    for (int j = 0; j < n_w && shared; j++) {
        k[j] = gemm_choose(w[j], m, isa);
        /* the AVX-512 and scalar quantizers give the same bytes, but keep each kernel's own */
        shared = same_recipe(w[0], w[j]) && (k[j].isa >= IFN_ISA_AVX512) == (k[0].isa >= IFN_ISA_AVX512);
        work += (double)m * (double)w[j]->n_pad * (double)w[j]->k_pad;
    }
    if (!shared) {
        for (int j = 0; j < n_w; j++) CHECK(gemm_run(y[j], x, m, w[j], s));
        return IFN_OK;
    }
    gemm_act a;
    CHECK(prepare(x, m, w[0], s, k[0].isa, &a));
    #pragma omp parallel if (work >= PARALLEL_MIN_WORK)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        for (int j = 0; j < n_w; j++) {
            int64_t n_rb = w[j]->n_pad / QW_ROWS, per = (n_rb + nt - 1) / nt;
            int64_t rb0 = (int64_t)t * per, rb1 = rb0 + per < n_rb ? rb0 + per : n_rb;
            if (rb0 < rb1) k[j].fn(y[j], w[j]->n_out, &a, w[j], rb0, rb1);
        }
    }
    return IFN_OK;
}

ifn_status gemm_run_isa(float *y, const float *x, int m, const ifn_qweight *w, gemm_scratch *s, ifn_isa isa)
{
    if (isa > ifn_isa_best())
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "this machine cannot run %s kernels (best: %s)", ifn_isa_name(isa),
                             ifn_isa_name(ifn_isa_best()));
    gemm_kernel k;
    if (!lookup(isa, w, m, &k))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "no %s kernel for this weight format", ifn_isa_name(isa));
    return gemm_run_kernel(y, x, m, w, s, &k);
}

ifn_status gemm_run_kernel(float *y, const float *x, int m, const ifn_qweight *w, gemm_scratch *s, const gemm_kernel *k)
{
    gemm_act a;
    CHECK(prepare(x, m, w, s, k->isa, &a));
    run_kernel(k, y, &a, w);
    return IFN_OK;
}
