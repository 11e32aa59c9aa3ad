/* Runs the scalar references of ops.h on fixed random inputs and writes inputs and outputs for
 * test_ops_ref.py, which recomputes them with NumPy from the textbook formulas.
 *
 * File format: a sequence of records
 *   u32 name_len, name (no NUL), u32 ndim, u32 dims[ndim], f64 data[prod(dims)]
 * Every value written is an fp32 (or an integer, or a parameter) held exactly in f64.
 * Case groups are named "<op>/<index>/<field>".
 * usage: ops_dump OUT_FILE */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "test_random.h"

static test_rng rng = { 0x13198a2e03707344ull };

static FILE *out;
static int write_errors;

static void put_u32(uint32_t v) { write_errors += fwrite(&v, sizeof v, 1, out) != 1; }

static void put_header(const char *name, int ndim, const int *dims)
{
    put_u32((uint32_t)strlen(name));
    write_errors += fwrite(name, 1, strlen(name), out) != strlen(name);
    put_u32((uint32_t)ndim);
    for (int i = 0; i < ndim; i++) put_u32((uint32_t)dims[i]);
}

static void put_f32(const char *name, const float *x, int ndim, const int *dims)
{
    put_header(name, ndim, dims);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        write_errors += fwrite(&v, sizeof v, 1, out) != 1;
    }
}

static void put_f64(const char *name, const double *x, int n)
{
    put_header(name, 1, &n);
    write_errors += fwrite(x, sizeof *x, (size_t)n, out) != (size_t)n;
}

static void put_scalar(const char *name, double v)
{
    int one = 1;
    put_header(name, 1, &one);
    write_errors += fwrite(&v, sizeof v, 1, out) != 1;
}

static void put_u8(const char *name, const uint8_t *x, int ndim, const int *dims)
{
    put_header(name, ndim, dims);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        write_errors += fwrite(&v, sizeof v, 1, out) != 1;
    }
}

static float *gauss_array(size_t n, float sigma)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = test_gauss(&rng) * sigma;
    return x;
}

static void dump_rmsnorm(void)
{
    static const int ns[] = { 1, 7, 4095 };
    for (int c = 0; c < 3; c++) {
        int n = ns[c];
        float *x = gauss_array(n, 2.0f), *w = gauss_array(n, 1.0f), *y = malloc(n * sizeof *y);
        ifn_rmsnorm_ref(y, x, w, n, 1e-5f);
        char name[64];
        snprintf(name, sizeof name, "rmsnorm/%d/x", c), put_f32(name, x, 1, &n);
        snprintf(name, sizeof name, "rmsnorm/%d/w", c), put_f32(name, w, 1, &n);
        snprintf(name, sizeof name, "rmsnorm/%d/eps", c), put_scalar(name, 1e-5f);
        snprintf(name, sizeof name, "rmsnorm/%d/out", c), put_f32(name, y, 1, &n);
        free(x), free(w), free(y);
    }
}

static void dump_rope(void)
{
    static const int dims[] = { 64, 80 };
    static const double positions[] = { 0, 1, 17, 4095, 100000, -5 };
    int c = 0;
    for (int layout = 0; layout < 2; layout++)
        for (int di = 0; di < 2; di++)
            for (int pi = 0; pi < 6; pi++, c++) {
                int nh = 3, hd = dims[di], shape[2] = { nh, hd };
                float theta = pi % 2 ? 500000.0f : 10000.0f;
                float *x = gauss_array((size_t)nh * hd, 1.0f), *y = malloc((size_t)nh * hd * sizeof *y);
                memcpy(y, x, (size_t)nh * hd * sizeof *y);
                const ifn_rope_spec rs = { .layout = (ifn_rope_layout)layout, .theta = theta };
                ifn_rope_ref(y, nh, hd, positions[pi], &rs);
                char name[64];
                snprintf(name, sizeof name, "rope/%d/x", c), put_f32(name, x, 2, shape);
                snprintf(name, sizeof name, "rope/%d/pos", c), put_scalar(name, positions[pi]);
                snprintf(name, sizeof name, "rope/%d/theta", c), put_scalar(name, theta);
                snprintf(name, sizeof name, "rope/%d/interleaved", c), put_scalar(name, layout == IFN_ROPE_INTERLEAVED);
                snprintf(name, sizeof name, "rope/%d/out", c), put_f32(name, y, 2, shape);
                ifn_rope_ref(y, nh, hd, -positions[pi], &rs);
                snprintf(name, sizeof name, "rope/%d/back", c), put_f32(name, y, 2, shape);
                free(x), free(y);
            }
}

/* ifn_rope_freqs of each scaling variant, with its parameters, for head dims 64 and 128, and
 * with per-pair divisors (GGUF's rope_freqs) under linear scaling. */
static void dump_rope_freqs(void)
{
    const ifn_rope_scaling sc[] = {
        { .kind = IFN_ROPE_SCALING_NONE },
        { .kind = IFN_ROPE_SCALING_LINEAR, .factor = 4.0f },
        { .kind = IFN_ROPE_SCALING_LLAMA3, .factor = 8.0f, .orig_ctx = 8192, .low_freq_factor = 1.0f,
          .high_freq_factor = 4.0f },
        { .kind = IFN_ROPE_SCALING_LLAMA3, .factor = 4.0f, .orig_ctx = 64, .low_freq_factor = 1.0f,
          .high_freq_factor = 4.0f },
        { .kind = IFN_ROPE_SCALING_YARN, .factor = 4.0f, .orig_ctx = 32768, .beta_fast = 32.0f, .beta_slow = 1.0f },
        { .kind = IFN_ROPE_SCALING_YARN, .factor = 2.5f, .orig_ctx = 64, .beta_fast = 16.0f, .beta_slow = 2.0f },
    };
    static const int dims[] = { 64, 128 };
    int c = 0;
    for (size_t v = 0; v < sizeof sc / sizeof sc[0]; v++)
        for (int di = 0; di < 2; di++)
            for (int with_div = 0; with_div < 2; with_div++) {
                if (with_div && sc[v].kind != IFN_ROPE_SCALING_LINEAR) continue;
                const int hd = dims[di], half = hd / 2;
                const float theta = di ? 500000.0f : 10000.0f;
                float div[IFN_OPS_HEAD_DIM_MAX / 2];
                double freq[IFN_OPS_HEAD_DIM_MAX / 2], div64[IFN_OPS_HEAD_DIM_MAX / 2];
                for (int i = 0; i < half; i++) div[i] = with_div ? 1.0f + (float)(i % 5) * 0.75f : 1.0f;
                for (int i = 0; i < half; i++) div64[i] = div[i];
                ifn_rope_freqs(freq, hd, theta, &sc[v], with_div ? div : NULL);
                char name[64];
                snprintf(name, sizeof name, "rope_freqs/%d/kind", c), put_scalar(name, sc[v].kind);
                snprintf(name, sizeof name, "rope_freqs/%d/theta", c), put_scalar(name, theta);
                snprintf(name, sizeof name, "rope_freqs/%d/factor", c), put_scalar(name, sc[v].factor);
                snprintf(name, sizeof name, "rope_freqs/%d/orig_ctx", c), put_scalar(name, sc[v].orig_ctx);
                snprintf(name, sizeof name, "rope_freqs/%d/low", c), put_scalar(name, sc[v].low_freq_factor);
                snprintf(name, sizeof name, "rope_freqs/%d/high", c), put_scalar(name, sc[v].high_freq_factor);
                snprintf(name, sizeof name, "rope_freqs/%d/beta_fast", c), put_scalar(name, sc[v].beta_fast);
                snprintf(name, sizeof name, "rope_freqs/%d/beta_slow", c), put_scalar(name, sc[v].beta_slow);
                snprintf(name, sizeof name, "rope_freqs/%d/div", c), put_f64(name, div64, half);
                snprintf(name, sizeof name, "rope_freqs/%d/freq", c), put_f64(name, freq, half);
                c++;
            }
}

/* Cached rows of every type, rotated by delta: out is the stored result widened. */
static void dump_rope_kv(void)
{
    int c = 0;
    for (int t = 0; t < IFN_KV_COUNT; t++)
        for (int layout = 0; layout < 2; layout++, c++) {
            int rows = 5, nh = 2, hd = 64, stride = nh * hd + 4, shape[2] = { rows, stride };
            size_t n = (size_t)rows * stride, es = ifn_kv_type_size((ifn_kv_type)t);
            float *x = gauss_array(n, 1.0f), *y = malloc(n * sizeof *y);
            void *buf = malloc(n * es);
            ifn_kv_store_ref(buf, x, (int)n, (ifn_kv_type)t);
            ifn_kv_load_ref(x, buf, (int)n, (ifn_kv_type)t);
            const ifn_rope_spec rs = { .layout = (ifn_rope_layout)layout, .theta = 10000.0f };
            ifn_rope_kv_ref(buf, (ifn_kv_type)t, rows, (size_t)stride, nh, hd, -1000.0, &rs);
            ifn_kv_load_ref(y, buf, (int)n, (ifn_kv_type)t);
            char name[64];
            snprintf(name, sizeof name, "rope_kv/%d/x", c), put_f32(name, x, 2, shape);
            snprintf(name, sizeof name, "rope_kv/%d/type", c), put_scalar(name, t);
            snprintf(name, sizeof name, "rope_kv/%d/heads", c), put_scalar(name, nh);
            snprintf(name, sizeof name, "rope_kv/%d/head_dim", c), put_scalar(name, hd);
            snprintf(name, sizeof name, "rope_kv/%d/delta", c), put_scalar(name, -1000.0);
            snprintf(name, sizeof name, "rope_kv/%d/theta", c), put_scalar(name, 10000.0);
            snprintf(name, sizeof name, "rope_kv/%d/interleaved", c), put_scalar(name, layout == IFN_ROPE_INTERLEAVED);
            snprintf(name, sizeof name, "rope_kv/%d/out", c), put_f32(name, y, 2, shape);
            free(x), free(y), free(buf);
        }
}

static void dump_softmax_silu(void)
{
    static const int ns[] = { 1, 5, 1000 };
    for (int c = 0; c < 3; c++) {
        int n = ns[c];
        float *x = gauss_array(n, 10.0f), *y = malloc(n * sizeof *y);
        memcpy(y, x, n * sizeof *y);
        ifn_softmax_ref(y, n);
        char name[64];
        snprintf(name, sizeof name, "softmax/%d/x", c), put_f32(name, x, 1, &n);
        snprintf(name, sizeof name, "softmax/%d/out", c), put_f32(name, y, 1, &n);
        float *g = gauss_array(n, 8.0f), *up = gauss_array(n, 1.0f);
        if (n > 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = -88.0f, g[3] = 0.0f;
        snprintf(name, sizeof name, "silu/%d/gate", c), put_f32(name, g, 1, &n);
        snprintf(name, sizeof name, "silu/%d/up", c), put_f32(name, up, 1, &n);
        ifn_silu_mul_ref(g, up, n);
        snprintf(name, sizeof name, "silu/%d/out", c), put_f32(name, g, 1, &n);
        free(x), free(y), free(g), free(up);
    }
}

static void dump_layernorm_gelu(void)
{
    static const int ns[] = { 1, 5, 1000 };
    for (int c = 0; c < 3; c++) {
        int n = ns[c];
        float *x = gauss_array(n, 3.0f), *w = gauss_array(n, 1.0f), *b = gauss_array(n, 1.0f), *y = malloc(n * sizeof *y);
        for (int i = 0; i < n; i++) x[i] += 2.0f;
        ifn_layernorm_ref(y, x, w, b, n, 1e-5f);
        char name[64];
        snprintf(name, sizeof name, "layernorm/%d/x", c), put_f32(name, x, 1, &n);
        snprintf(name, sizeof name, "layernorm/%d/w", c), put_f32(name, w, 1, &n);
        snprintf(name, sizeof name, "layernorm/%d/b", c), put_f32(name, b, 1, &n);
        snprintf(name, sizeof name, "layernorm/%d/eps", c), put_scalar(name, 1e-5f);
        snprintf(name, sizeof name, "layernorm/%d/out", c), put_f32(name, y, 1, &n);
        for (int kind = IFN_GELU_TANH; kind <= IFN_GELU_ERF; kind++) {
            float *g = gauss_array(n, 4.0f);
            if (n > 4) g[0] = -30.0f, g[1] = 30.0f, g[2] = -8.0f, g[3] = 0.0f;
            const char *kn = kind == IFN_GELU_TANH ? "gelu_tanh" : "gelu_erf";
            snprintf(name, sizeof name, "%s/%d/x", kn, c), put_f32(name, g, 1, &n);
            ifn_gelu_ref(g, n, (ifn_gelu_kind)kind);
            snprintf(name, sizeof name, "%s/%d/out", kn, c), put_f32(name, g, 1, &n);
            free(g);
        }
        free(x), free(w), free(b), free(y);
    }
}

static void dump_kv_store(void)
{
    int n = 4096;
    float *x = malloc(n * sizeof *x);
    for (int i = 0; i < n; i++) x[i] = (float)(test_gauss(&rng) * pow(10.0, (int)(test_uniform(&rng) * 14) - 9));
    x[0] = 65519.0f, x[1] = 65520.0f, x[2] = 1e-40f, x[3] = -0.0f, x[4] = 2.98e-8f, x[5] = 1e6f;
    uint16_t h[4096], b[4096];
    float hf[4096], bf[4096];
    ifn_kv_store_ref(h, x, n, IFN_KV_F16);
    ifn_kv_store_ref(b, x, n, IFN_KV_BF16);
    for (int i = 0; i < n; i++) hf[i] = (float)h[i], bf[i] = (float)b[i];
    put_f32("kv_store/0/x", x, 1, &n);
    put_f32("kv_store/0/f16_bits", hf, 1, &n);
    put_f32("kv_store/0/bf16_bits", bf, 1, &n);
    free(x);
}

/* Attention: causal over the last rows, and with a mask; GQA 1, 4, 8 and a tensor-parallel
 * shard (13 heads from global head 5, group 8: KV heads 0..2); every KV type. */
static void dump_attention(void)
{
    static const ifn_attn_heads cfg[] = {
        { .n_heads = 4, .group = 1 }, { .n_heads = 8, .group = 4 }, { .n_heads = 8, .group = 8 },
        { .n_heads = 13, .group = 8, .head0 = 5, .kv_head0 = 0 },
    };
    int c = 0;
    for (int t = 0; t < IFN_KV_COUNT; t++)
        for (int gi = 0; gi < 4; gi++)
            for (int masked = 0; masked < 2; masked++, c++) {
                ifn_attn_heads heads = cfg[gi];
                heads.head_dim = 64;
                int n_tokens = 3, nh = heads.n_heads, hd = heads.head_dim, rows = 37;
                int nkv = (heads.head0 + nh - 1) / heads.group - heads.kv_head0 + 1;
                int stride = nkv * hd + 2;
                size_t nq = (size_t)n_tokens * nh * hd, nkvv = (size_t)rows * stride, es = ifn_kv_type_size((ifn_kv_type)t);
                float *q = gauss_array(nq, 2.0f), *k = gauss_array(nkvv, 1.0f), *v = gauss_array(nkvv, 1.0f);
                float *o = malloc(nq * sizeof *o);
                void *kb = malloc(nkvv * es), *vb = malloc(nkvv * es);
                ifn_kv_store_ref(kb, k, (int)nkvv, (ifn_kv_type)t);
                ifn_kv_store_ref(vb, v, (int)nkvv, (ifn_kv_type)t);
                ifn_kv_load_ref(k, kb, (int)nkvv, (ifn_kv_type)t);
                ifn_kv_load_ref(v, vb, (int)nkvv, (ifn_kv_type)t);
                uint8_t *mask = malloc((size_t)n_tokens * rows);
                for (int i = 0; i < n_tokens * rows; i++) mask[i] = test_uniform(&rng) < 0.6;
                ifn_kv_rows kv = { .k = kb, .v = vb, .type = (ifn_kv_type)t, .row_stride = (size_t)stride, .n_rows = rows };
                ifn_attention_kv_ref(o, q, n_tokens, &heads, &kv, masked ? mask : NULL);
                int qs[3] = { n_tokens, nh, hd }, ks[2] = { rows, stride }, ms[2] = { n_tokens, rows };
                char name[64];
                snprintf(name, sizeof name, "attention/%d/q", c), put_f32(name, q, 3, qs);
                snprintf(name, sizeof name, "attention/%d/k", c), put_f32(name, k, 2, ks);
                snprintf(name, sizeof name, "attention/%d/v", c), put_f32(name, v, 2, ks);
                snprintf(name, sizeof name, "attention/%d/group", c), put_scalar(name, heads.group);
                snprintf(name, sizeof name, "attention/%d/head0", c), put_scalar(name, heads.head0);
                snprintf(name, sizeof name, "attention/%d/kv_head0", c), put_scalar(name, heads.kv_head0);
                if (masked) snprintf(name, sizeof name, "attention/%d/mask", c), put_u8(name, mask, 2, ms);
                snprintf(name, sizeof name, "attention/%d/out", c), put_f32(name, o, 3, qs);
                free(q), free(k), free(v), free(o), free(kb), free(vb), free(mask);
            }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: ops_dump OUT_FILE\n");
        return 2;
    }
    out = fopen(argv[1], "wb");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    dump_rmsnorm();
    dump_rope();
    dump_rope_kv();
    dump_rope_freqs();
    dump_softmax_silu();
    dump_layernorm_gelu();
    dump_kv_store();
    dump_attention();
    if (fclose(out) != 0 || write_errors) {
        fprintf(stderr, "%s: write failed\n", argv[1]);
        return 1;
    }
    return 0;
}
