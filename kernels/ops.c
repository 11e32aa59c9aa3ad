/* ops.h: choice of the ISA table, RoPE tables, and the OpenMP split of each operation.
 * The kernels themselves are in ops_ref.c (scalar), ops_avx2.c and ops_avx512.c. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "ops_isa.h"

/* Below these sizes a call stays on one thread: starting an OpenMP team's work costs ~2-3 us
 * on 2 Zen 5 cores, more than the work. Measured there, one thread, AVX-512: SiLU·mul of 2^15
 * elements ~7 us, RMSNorm ~3 us; attention of 2^16 MACs (TinyLlama's 32 heads x 64 dims over
 * 32 rows) ~5 us, where 2 threads start to win (see the notes in ops_avx512.c). */
#define PARALLEL_MIN_ELEMS (1 << 15)     /* element-wise and row operations */
#define ATTN_PARALLEL_MIN_MACS (1 << 16) /* attention: tokens x heads x rows x head_dim */
#define ROPE_TRIG_COST 64                /* one cos+sin, in units of one element's rotation */
/* An fp32/bf16 attention item of at most this many rows x head_dim runs the scalar kernel: a
 * SIMD block of 8 or 16 rows costs more than a row or two of plain C (measured at head_dim 8
 * and 16, 4-8 heads: 0.2-0.4 us against 0.4-0.6 us). fp16 items do not: the reference widens
 * fp16 through dtype.c's out-of-line conversion and is slower than a SIMD block even there. */
#define ATTN_SCALAR_MAX_ELEMS 32

const char *ifn_rope_layout_name(ifn_rope_layout l)
{
    return l == IFN_ROPE_INTERLEAVED ? "interleaved" : "halves";
}

const char *ifn_kv_type_name(ifn_kv_type t)
{
    switch (t) {
    case IFN_KV_F32: return "f32";
    case IFN_KV_F16: return "f16";
    case IFN_KV_BF16: return "bf16";
    case IFN_KV_COUNT: break;
    }
    return "?";
}

size_t ifn_kv_type_size(ifn_kv_type t) { return t == IFN_KV_F32 ? 4 : 2; }

const ops_kernels *ops_kernels_for(ifn_isa isa)
{
    switch (isa) {
    case IFN_ISA_AVX2: return &ops_kernels_avx2;
    case IFN_ISA_AVX512:
    case IFN_ISA_AMX: return &ops_kernels_avx512;
    case IFN_ISA_SCALAR:
    case IFN_ISA_COUNT: break;
    }
    return &ops_kernels_scalar;
}

static const ops_kernels *active_kernels;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void choose_active(void)
{
    /* A bad INFERNODE_ISA is reported by gemm_run; here it only must not leave an error
     * detail pending that would mask the caller's next real error. */
    bool pending = ifn_error_detail()[0] != '\0';
    ifn_isa isa;
    if (ifn_isa_active(&isa) != IFN_OK) {
        isa = IFN_ISA_SCALAR;
        if (!pending) ifn_error_clear();
    }
    active_kernels = ops_kernels_for(isa);
}

const ops_kernels *ops_kernels_active(void)
{
    pthread_once(&active_once, choose_active);
    return active_kernels;
}

/* ---- RoPE frequencies and tables ------------------------------------------------------- */

const char *ifn_rope_scaling_name(ifn_rope_scaling_kind k)
{
    switch (k) {
    case IFN_ROPE_SCALING_NONE: return "none";
    case IFN_ROPE_SCALING_LINEAR: return "linear";
    case IFN_ROPE_SCALING_LLAMA3: return "llama3";
    case IFN_ROPE_SCALING_YARN: return "yarn";
    }
    return "?";
}

/* Llama 3.1: wavelengths longer than orig_ctx / low_freq_factor are divided by factor, shorter
 * than orig_ctx / high_freq_factor kept, and the band between blends the two linearly in
 * orig_ctx / wavelength. */
static double llama3_freq(double f, const ifn_rope_scaling *sc)
{
    const double pi = 3.14159265358979323846;
    const double wavelen = 2.0 * pi / f, orig = sc->orig_ctx;
    if (wavelen > orig / sc->low_freq_factor) return f / sc->factor;
    if (wavelen < orig / sc->high_freq_factor) return f;
    const double smooth = (orig / wavelen - sc->low_freq_factor) / (sc->high_freq_factor - sc->low_freq_factor);
    return (1.0 - smooth) * f / sc->factor + smooth * f;
}

/* YaRN: the pair index at which a frequency makes `rotations` turns over the original context. */
static double yarn_corr_dim(double rotations, int head_dim, double theta, int orig_ctx)
{
    const double pi = 3.14159265358979323846;
    return head_dim * log(orig_ctx / (rotations * 2.0 * pi)) / (2.0 * log(theta));
}

/* YaRN: pairs below low keep their frequency (extrapolation), above high take f / factor
 * (interpolation), a linear ramp between; low and high rounded outwards to whole pairs. */
static void yarn_freqs(double *freq, int head_dim, float theta, const ifn_rope_scaling *sc)
{
    double low = floor(yarn_corr_dim(sc->beta_fast, head_dim, theta, sc->orig_ctx));
    double high = ceil(yarn_corr_dim(sc->beta_slow, head_dim, theta, sc->orig_ctx));
    if (low < 0) low = 0;
    if (high > head_dim - 1) high = head_dim - 1;
    if (high == low) high += 0.001;
    for (int i = 0; i < head_dim / 2; i++) {
        double ramp = (i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        freq[i] = freq[i] / sc->factor * ramp + freq[i] * (1.0 - ramp);
    }
}

void ifn_rope_freqs(double *freq, int head_dim, float theta, const ifn_rope_scaling *sc, const float *pair_div)
{
    for (int i = 0; i < head_dim / 2; i++)
        freq[i] = pow((double)theta, -2.0 * i / head_dim) / (pair_div ? (double)pair_div[i] : 1.0);
    const ifn_rope_scaling_kind kind = sc ? sc->kind : IFN_ROPE_SCALING_NONE;
    if (kind == IFN_ROPE_SCALING_YARN) yarn_freqs(freq, head_dim, theta, sc);
    for (int i = 0; i < head_dim / 2; i++) {
        if (kind == IFN_ROPE_SCALING_LINEAR) freq[i] /= sc->factor;
        if (kind == IFN_ROPE_SCALING_LLAMA3) freq[i] = llama3_freq(freq[i], sc);
    }
}

/* freq[i] of rs: the same doubles ifn_rope_ref uses. */
static void rope_freqs(double *freq, int head_dim, const ifn_rope_spec *rs)
{
    if (rs->freq) memcpy(freq, rs->freq, (size_t)(head_dim / 2) * sizeof *freq);
    else ifn_rope_freqs(freq, head_dim, rs->theta, NULL, NULL);
}

static void rope_table_from(float *cs, const double *freq, int head_dim, double pos, ifn_rope_layout layout)
{
    float *C = cs, *S = cs + head_dim;
    const int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double angle = pos * freq[i];
        float c = (float)cos(angle), s = (float)sin(angle);
        int a = layout == IFN_ROPE_INTERLEAVED ? 2 * i : i;
        int b = layout == IFN_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        C[a] = C[b] = c;
        S[a] = -s;
        S[b] = s;
    }
}

void ops_rope_table(float *cs, int head_dim, double pos, const ifn_rope_spec *rs)
{
    double freq[IFN_OPS_HEAD_DIM_MAX / 2];
    rope_freqs(freq, head_dim, rs);
    rope_table_from(cs, freq, head_dim, pos, rs->layout);
}

/* ---- drivers ---------------------------------------------------------------------------- */

static bool may_fork(double work, double min_work)
{
    return work >= min_work && omp_get_max_threads() > 1 && !omp_in_parallel();
}

void ops_rmsnorm_rows(const ops_kernels *k, float *out, const float *x, const float *w, int n_rows, int n, float eps)
{
    if (n_rows > 1 && may_fork((double)n_rows * n, PARALLEL_MIN_ELEMS)) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < n_rows; r++) k->rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, eps);
    } else {
        for (int r = 0; r < n_rows; r++) k->rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, eps);
    }
}

static void rope_row(const ops_kernels *k, float *x, const double *freq, int n_heads, int head_dim, double pos,
                     ifn_rope_layout layout)
{
    float cs[2 * IFN_OPS_HEAD_DIM_MAX];
    rope_table_from(cs, freq, head_dim, pos, layout);
    k->rope(x, n_heads, head_dim, cs, layout);
}

void ops_rope_rows(const ops_kernels *k, float *x, int n_rows, size_t row_stride, int n_heads, int head_dim,
                   double pos0, const ifn_rope_spec *rs)
{
    if (head_dim > IFN_OPS_HEAD_DIM_MAX) {
        for (int r = 0; r < n_rows; r++) ifn_rope_ref(x + (size_t)r * row_stride, n_heads, head_dim, pos0 + r, rs);
        return;
    }
    const ifn_rope_layout layout = rs->layout;
    double freq[IFN_OPS_HEAD_DIM_MAX / 2];
    rope_freqs(freq, head_dim, rs);
    double row_cost = (double)head_dim / 2 * ROPE_TRIG_COST + (double)n_heads * head_dim;
    if (n_rows > 1 && may_fork(n_rows * row_cost, PARALLEL_MIN_ELEMS)) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < n_rows; r++) rope_row(k, x + (size_t)r * row_stride, freq, n_heads, head_dim, pos0 + r, layout);
    } else {
        for (int r = 0; r < n_rows; r++) rope_row(k, x + (size_t)r * row_stride, freq, n_heads, head_dim, pos0 + r, layout);
    }
}

/* Row r of a cache: fp32 rotates in place, fp16/bf16 one head at a time through fp32. */
static void rope_kv_row(const ops_kernels *k, void *x, ifn_kv_type type, int r, size_t row_stride, int n_heads,
                        int head_dim, const float *cs, ifn_rope_layout layout)
{
    const size_t es = ifn_kv_type_size(type);
    char *row = (char *)x + (size_t)r * row_stride * es;
    if (type == IFN_KV_F32) {
        k->rope((float *)row, n_heads, head_dim, cs, layout);
        return;
    }
    float buf[IFN_OPS_HEAD_DIM_MAX];
    for (int h = 0; h < n_heads; h++) {
        char *head = row + (size_t)h * head_dim * es;
        k->kv_load(buf, head, head_dim, type);
        k->rope(buf, 1, head_dim, cs, layout);
        k->kv_store(head, buf, head_dim, type);
    }
}

void ops_rope_kv(const ops_kernels *k, void *x, ifn_kv_type type, int n_rows, size_t row_stride, int n_heads,
                 int head_dim, double delta, const ifn_rope_spec *rs)
{
    if (head_dim > IFN_OPS_HEAD_DIM_MAX) {
        ifn_rope_kv_ref(x, type, n_rows, row_stride, n_heads, head_dim, delta, rs);
        return;
    }
    const ifn_rope_layout layout = rs->layout;
    float cs[2 * IFN_OPS_HEAD_DIM_MAX];
    ops_rope_table(cs, head_dim, delta, rs);
    if (n_rows > 1 && may_fork((double)n_rows * n_heads * head_dim, PARALLEL_MIN_ELEMS)) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < n_rows; r++) rope_kv_row(k, x, type, r, row_stride, n_heads, head_dim, cs, layout);
    } else {
        for (int r = 0; r < n_rows; r++) rope_kv_row(k, x, type, r, row_stride, n_heads, head_dim, cs, layout);
    }
}

/* This thread's share [*lo, *hi) of n elements inside a parallel region: chunks of whole cache
 * lines, so that no two threads write one line. */
static void thread_chunk(long n, long *lo, long *hi)
{
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    long per = (n + nt - 1) / nt;
    per = (per + 15) / 16 * 16;
    *lo = (long)t * per;
    *hi = *lo + per < n ? *lo + per : n;
}

void ops_silu_mul(const ops_kernels *k, float *gate, const float *up, int n)
{
    if (!may_fork(n, PARALLEL_MIN_ELEMS)) {
        k->silu_mul(gate, up, n);
        return;
    }
    #pragma omp parallel
    {
        long lo, hi;
        thread_chunk(n, &lo, &hi);
        if (lo < hi) k->silu_mul(gate + lo, up + lo, (int)(hi - lo));
    }
}

static void gelu_part(const ops_kernels *k, float *x, int n, ifn_gelu_kind kind)
{
    if (kind == IFN_GELU_TANH) k->gelu_tanh(x, n);
    else ifn_gelu_ref(x, n, kind);
}

void ops_gelu(const ops_kernels *k, float *x, int n, ifn_gelu_kind kind)
{
    if (!may_fork(n, PARALLEL_MIN_ELEMS)) {
        gelu_part(k, x, n, kind);
        return;
    }
    #pragma omp parallel
    {
        long lo, hi;
        thread_chunk(n, &lo, &hi);
        if (lo < hi) gelu_part(k, x + lo, (int)(hi - lo), kind);
    }
}

void ops_layernorm_rows(const ops_kernels *k, float *out, const float *x, const float *w, const float *b, int n_rows,
                        int n, float eps)
{
    if (n_rows > 1 && may_fork((double)n_rows * n, PARALLEL_MIN_ELEMS)) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < n_rows; r++) k->layernorm(out + (size_t)r * n, x + (size_t)r * n, w, b, n, eps);
    } else {
        for (int r = 0; r < n_rows; r++) k->layernorm(out + (size_t)r * n, x + (size_t)r * n, w, b, n, eps);
    }
}

/* One attention call's split: item i = (token t, KV head j of the ones read, subgroup sub);
 * it runs query heads [h0, h0 + nq) of KV head j's run of consecutive query heads. */
typedef struct {
    float *out;
    const float *q;
    int n_tokens;
    const ifn_attn_heads *heads;
    int kv_first, n_groups; /* global KV head of query head 0; KV heads read */
    int per_item, n_sub;    /* query heads per item; items per KV head */
    const ifn_kv_rows *kv;
    const uint8_t *mask;
    const ops_kernels *k;
} attn_call;

static void attn_item(const attn_call *c, long i)
{
    const ifn_attn_heads *H = c->heads;
    const long per_token = (long)c->n_groups * c->n_sub;
    const int t = (int)(i / per_token), j = (int)(i % per_token) / c->n_sub, sub = (int)(i % per_token) % c->n_sub;
    const int kvg = c->kv_first + j; /* global KV head */
    int h_begin = kvg * H->group - H->head0, h_end = (kvg + 1) * H->group - H->head0;
    if (h_begin < 0) h_begin = 0;
    if (h_end > H->n_heads) h_end = H->n_heads;
    const int h0 = h_begin + sub * c->per_item;
    if (h0 >= h_end) return; /* a shorter run at the shard's edge */
    const int nq = h_end - h0 < c->per_item ? h_end - h0 : c->per_item;
    const ifn_kv_rows *kv = c->kv;
    size_t head_stride = kv->head_stride ? kv->head_stride : (size_t)H->head_dim;
    size_t kv_off = (size_t)(kvg - H->kv_head0) * head_stride * ifn_kv_type_size(kv->type);
    ops_attn_item it = {
        .k = (const char *)kv->k + kv_off,
        .v = (const char *)kv->v + kv_off,
        .type = kv->type,
        .row_stride = kv->row_stride,
        .n_rows = c->mask ? kv->n_rows : kv->n_rows - c->n_tokens + 1 + t,
        .mask = c->mask ? c->mask + (size_t)t * kv->n_rows : NULL,
        .head_dim = H->head_dim,
        .scale = 1.0f / sqrtf((float)H->head_dim),
    };
    size_t off = ((size_t)t * H->n_heads + (size_t)h0) * H->head_dim;
    bool tiny = kv->type != IFN_KV_F16 && (long)it.n_rows * H->head_dim <= ATTN_SCALAR_MAX_ELEMS;
    const ops_kernels *k = tiny ? &ops_kernels_scalar : c->k;
    k->attend(c->out + off, c->q + off, nq, &it);
}

void ops_attention(const ops_kernels *k, float *out, const float *q, int n_tokens, const ifn_attn_heads *heads,
                   const ifn_kv_rows *kv, const uint8_t *mask)
{
    const ifn_attn_heads *H = heads;
    if (n_tokens < 1 || H->n_heads < 1) return;
    /* A head_dim this table's kernel cannot do goes to the next lower ISA's (scalar does all). */
    while (!k->attend_supports(H->head_dim)) k = ops_kernels_for((ifn_isa)(k->isa - 1));
    attn_call c = {
        .out = out, .q = q, .n_tokens = n_tokens, .heads = H, .kv = kv, .mask = mask, .k = k,
        .kv_first = H->head0 / H->group,
        .n_groups = (H->head0 + H->n_heads - 1) / H->group - H->head0 / H->group + 1,
    };
    /* An item takes a whole run of query heads on one KV head, so each K/V row is widened once
     * for all of them. With fewer (token, KV head) pairs than threads, runs are split. */
    const int max_run = H->group < H->n_heads ? H->group : H->n_heads;
    double rows = mask ? kv->n_rows : kv->n_rows - (n_tokens - 1) / 2.0;
    bool par = may_fork((double)n_tokens * H->n_heads * H->head_dim * rows, ATTN_PARALLEL_MIN_MACS);
    long pairs = (long)n_tokens * c.n_groups;
    c.per_item = max_run;
    if (par && pairs < omp_get_max_threads()) {
        long split = (omp_get_max_threads() + pairs - 1) / pairs;
        if (split > max_run) split = max_run;
        c.per_item = (int)((max_run + split - 1) / split);
    }
    c.n_sub = (max_run + c.per_item - 1) / c.per_item;
    long n_items = pairs * c.n_sub;
    if (par && n_items > 1) {
        /* Later tokens see more rows: hand them out first so the tail of the loop is short. */
        #pragma omp parallel for schedule(dynamic, 1)
        for (long i = 0; i < n_items; i++) attn_item(&c, n_items - 1 - i);
    } else {
        for (long i = 0; i < n_items; i++) attn_item(&c, i);
    }
}

/* ---- the public entry points ------------------------------------------------------------ */

void ifn_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    ops_kernels_active()->rmsnorm(out, x, w, n, eps);
}

void ifn_rmsnorm_rows(float *out, const float *x, const float *w, int n_rows, int n, float eps)
{
    ops_rmsnorm_rows(ops_kernels_active(), out, x, w, n_rows, n, eps);
}

void ifn_rope(float *x, int n_heads, int head_dim, double pos, const ifn_rope_spec *rs)
{
    if (head_dim > IFN_OPS_HEAD_DIM_MAX) {
        ifn_rope_ref(x, n_heads, head_dim, pos, rs);
        return;
    }
    float cs[2 * IFN_OPS_HEAD_DIM_MAX];
    ops_rope_table(cs, head_dim, pos, rs);
    ops_kernels_active()->rope(x, n_heads, head_dim, cs, rs->layout);
}

void ifn_rope_rows(float *x, int n_rows, size_t row_stride, int n_heads, int head_dim, double pos0,
                   const ifn_rope_spec *rs)
{
    ops_rope_rows(ops_kernels_active(), x, n_rows, row_stride, n_heads, head_dim, pos0, rs);
}

void ifn_rope_kv(void *x, ifn_kv_type type, int n_rows, size_t row_stride, int n_heads, int head_dim, double delta,
                 const ifn_rope_spec *rs)
{
    ops_rope_kv(ops_kernels_active(), x, type, n_rows, row_stride, n_heads, head_dim, delta, rs);
}

void ifn_softmax(float *x, int n) { ops_kernels_active()->softmax(x, n); }

void ifn_silu_mul(float *gate, const float *up, int n) { ops_silu_mul(ops_kernels_active(), gate, up, n); }

void ifn_gelu(float *x, int n, ifn_gelu_kind kind) { ops_gelu(ops_kernels_active(), x, n, kind); }

void ifn_layernorm_rows(float *out, const float *x, const float *w, const float *b, int n_rows, int n, float eps)
{
    ops_layernorm_rows(ops_kernels_active(), out, x, w, b, n_rows, n, eps);
}

/* Memory-bound and cheap: vectorized by the compiler, one thread. */
void ifn_add_bias_rows(float *x, const float *b, int n_rows, int n)
{
    for (int r = 0; r < n_rows; r++) {
        float *xr = x + (size_t)r * n;
        for (int i = 0; i < n; i++) xr[i] += b[i];
    }
}

void ifn_kv_store(void *dst, const float *src, int n, ifn_kv_type type)
{
    ops_kernels_active()->kv_store(dst, src, n, type);
}

void ifn_kv_load(float *dst, const void *src, int n, ifn_kv_type type)
{
    ops_kernels_active()->kv_load(dst, src, n, type);
}

void ifn_attention_kv(float *out, const float *q, int n_tokens, const ifn_attn_heads *heads, const ifn_kv_rows *kv,
                      const uint8_t *mask)
{
    ops_attention(ops_kernels_active(), out, q, n_tokens, heads, kv, mask);
}

