/* infernode bench: kernel and model-level benchmarks. Figures are meant as ratios within one
 * run (machine probes and kernels are measured together); absolute numbers belong to the
 * machine named in the header line. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "clock.h"
#include "gemm.h"
#include "model.h"
#include "probe.h"
#include "tp_plan.h"


/* "1,2,4" → ints; false on anything else. */
sched_finish bench_never_cancelled(void *user)
{
    (void)user;
    return SCHED_RUNNING;
}

int bench_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bool bench_parse_list(const char *s, int min_value, int max_value, int *out, int *n)
{
    *n = 0;
    while (*s && *n < BENCH_MAX_LIST) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < min_value || v > max_value) return false;
        out[(*n)++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return false;
        s = end;
    }
    return *n > 0 && !*s;
}

static void cpu_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown cpu");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[256];
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (v) {
                snprintf(buf, cap, "%s", v + 2);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    fclose(fp);
}

static void print_machine(FILE *out)
{
    char cpu[128];
    cpu_name(cpu, sizeof cpu);
    fprintf(out, "machine: %s, %d hardware threads, best ISA %s\n", cpu, omp_get_num_procs(),
            ifn_isa_name(ifn_isa_best()));
}

/* ---------------------------------------------------------------- kernels */

typedef struct {
    int n, k;
} gemm_shape;

static const gemm_shape llama7b_shapes[] = { { 4096, 4096 }, { 11008, 4096 }, { 4096, 11008 } };

typedef struct {
    double bw[BENCH_MAX_LIST];    /* GB/s per thread count */
    double peak[PROBE_COUNT][BENCH_MAX_LIST];
} machine_probe;

/* The compute ceiling a kernel is judged against. */
static probe_op ceiling_for(const gemm_kernel *k, const ifn_qweight *w)
{
    if (w->compute == QW_COMPUTE_A8) return k->isa == IFN_ISA_AMX ? PROBE_AMX_INT8 : PROBE_VNNI_INT8;
    if (w->compute == QW_COMPUTE_A16) return k->isa == IFN_ISA_AMX ? PROBE_AMX_BF16 : PROBE_BF16_DOT;
    return PROBE_FP32_FMA;
}

/* Seconds per call: the median of enough repetitions to fill ~0.25 s. Calls rotate through
 * n_w copies of the weights, so that a decode-sized call streams them from memory instead of
 * finding them in the last-level cache. */
static double time_gemm(float *y, const float *x, int m, const ifn_qweight *w, int n_w, gemm_scratch *s)
{
    double t0 = ifn_seconds();
    if (gemm_run(y, x, m, &w[0], s) != IFN_OK) return -1.0;
    double first = ifn_seconds() - t0;
    int reps = first > 0.08 ? 3 : (int)(0.25 / (first + 1e-9));
    if (reps > 200) reps = 200;
    if (reps < 3) reps = 3;
    double times[200];
    for (int r = 0; r < reps; r++) {
        t0 = ifn_seconds();
        gemm_run(y, x, m, &w[(r + 1) % n_w], s);
        times[r] = ifn_seconds() - t0;
    }
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
            double t = times[j];
            times[j] = times[j - 1];
            times[j - 1] = t;
        }
    return times[reps / 2];
}

/* Copies of a matrix needed for their total to be 4x the last-level cache (at most 64). */
static int copies_beyond_cache(size_t matrix_bytes)
{
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = 64L << 20;
    size_t n = (4 * (size_t)llc + matrix_bytes - 1) / matrix_bytes;
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static int bench_kernels(int argc, char **argv)
{
    const char *json_path = "bench-kernels.json";
    const char *paths_arg = "f32,bf16,w8a8,w8a8-g32,w4a8-g128,w4a8-g32,w4a16-g128";
    int threads[BENCH_MAX_LIST] = { 1, omp_get_num_procs() }, n_threads = omp_get_num_procs() > 1 ? 2 : 1;
    int ms[BENCH_MAX_LIST] = { 1, 2, 4, 8, 16, 32, 128, 1024 }, n_ms = 8;
    static const struct option opts[] = { { "json", required_argument, 0, 'j' }, { "threads", required_argument, 0, 't' },
                                          { "m", required_argument, 0, 'm' }, { "paths", required_argument, 0, 'p' },
                                          { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    optind = 1;
    int c, li;
    while ((li = -1, c = getopt_long(argc, argv, "j:t:m:p:h", opts, &li)) != -1) {
        switch (c) {
        case 'j': json_path = optarg; break;
        case 't':
            if (!bench_parse_list(optarg, 1, 1 << 20, threads, &n_threads))
                return cli_bad_value(opts, li, c, optarg, "a list of 1..16 comma-separated integers in 1..1048576");
            break;
        case 'm':
            if (!bench_parse_list(optarg, 1, 1 << 20, ms, &n_ms))
                return cli_bad_value(opts, li, c, optarg, "a list of 1..16 comma-separated integers in 1..1048576");
            break;
        case 'p': paths_arg = optarg; break;
        case 'h':
            printf("usage: infernode bench kernels [--threads 1,2] [--m 1,2,...] [--paths f32,w4a8-g128,...] [--json FILE]\n"
                   "Measures read bandwidth and compute peaks, then every path on the Llama-7B shapes;\n"
                   "calls rotate through copies of each matrix totalling 4x the last-level cache.\n");
            return 0;
        default: goto usage;
        }
    }

    print_machine(stdout);
    machine_probe mp = { 0 };
    printf("\n| probe | threads | result |\n|---|---|---|\n");
    for (int t = 0; t < n_threads; t++) {
        mp.bw[t] = probe_read_bandwidth((size_t)1 << 30, threads[t]);
        printf("| read bandwidth (1 GiB, 8 streams/thread) | %d | %.1f GB/s |\n", threads[t], mp.bw[t]);
        for (int op = 0; op < PROBE_COUNT; op++) {
            mp.peak[op][t] = probe_peak((probe_op)op, threads[t]);
            if (probe_available((probe_op)op))
                printf("| %s peak | %d | %.0f GOPS |\n", probe_op_name((probe_op)op), threads[t], mp.peak[op][t]);
            else
                printf("| %s peak | %d | n/a on this machine |\n", probe_op_name((probe_op)op), threads[t]);
        }
    }

    FILE *json = fopen(json_path, "w");
    if (!json) {
        fprintf(stderr, "infernode: error: cannot write %s: %s\n", json_path, strerror(errno));
        return CLI_EXIT_ERROR;
    }
    fprintf(json, "{\"bandwidth_gbs\": [");
    for (int t = 0; t < n_threads; t++) fprintf(json, "%s{\"threads\": %d, \"gbs\": %.2f}", t ? ", " : "", threads[t], mp.bw[t]);
    fprintf(json, "], \"results\": [");
    int n_results = 0;

    printf("\n| path | N x K | M | threads | kernel | time (us) | weights GB/s | %% of bw | GOPS | %% of peak | t(M)/t(1) |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    char paths[256];
    snprintf(paths, sizeof paths, "%s", paths_arg);
    gemm_scratch *scratch;
    if (gemm_scratch_create(&scratch) != IFN_OK) return cli_fail(NULL);
    int max_m = 1;
    for (int i = 0; i < n_ms; i++) max_m = ms[i] > max_m ? ms[i] : max_m;
    for (char *save = NULL, *path = strtok_r(paths, ",", &save); path; path = strtok_r(NULL, ",", &save)) {
        qw_spec spec;
        if (qw_spec_parse(path, &spec) != IFN_OK) {
            fprintf(stderr, "infernode: error: %s\n", ifn_error_detail());
            gemm_scratch_destroy(scratch);
            fclose(json);
            return CLI_EXIT_USAGE;
        }
        for (size_t si = 0; si < sizeof llama7b_shapes / sizeof llama7b_shapes[0]; si++) {
            gemm_shape sh = llama7b_shapes[si];
            float *src = malloc((size_t)sh.n * sh.k * sizeof *src);
            float *x = malloc((size_t)max_m * sh.k * sizeof *x), *y = malloc((size_t)max_m * sh.n * sizeof *y);
            if (!src || !x || !y) {
                fprintf(stderr, "infernode: error: no memory for shape %dx%d\n", sh.n, sh.k);
                return CLI_EXIT_ERROR;
            }
            for (size_t i = 0; i < (size_t)sh.n * sh.k; i++) src[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
            for (size_t i = 0; i < (size_t)max_m * sh.k; i++) x[i] = (float)((i * 40503u) % 1001) / 500.0f - 1.0f;
            ifn_weight raw = { .type = IFN_DTYPE_F32, .n_out = sh.n, .n_in = sh.k, .data = src };
            ifn_qweight w[64];
            if (qweight_pack(&raw, &spec, &w[0]) != IFN_OK) return cli_fail(path);
            int n_w = copies_beyond_cache(qweight_bytes(&w[0]));
            for (int i = 1; i < n_w; i++)
                if (qweight_pack(&raw, &spec, &w[i]) != IFN_OK) return cli_fail(path);
            free(src);
            for (int t = 0; t < n_threads; t++) {
                omp_set_num_threads(threads[t]);
                double t1 = 0.0;
                for (int mi = 0; mi < n_ms; mi++) {
                    int m = ms[mi];
                    ifn_isa isa;
                    if (ifn_isa_active(&isa) != IFN_OK) return cli_fail(NULL);
                    gemm_kernel k = gemm_choose(&w[0], m, isa);
                    if (k.isa == IFN_ISA_SCALAR && m > 8) continue; /* the reference is too slow to time here */
                    double sec = time_gemm(y, x, m, w, n_w, scratch);
                    if (sec < 0) return cli_fail(path);
                    if (m == 1) t1 = sec;
                    double gbs = (double)qweight_bytes(&w[0]) / sec * 1e-9;
                    double gops = 2.0 * m * sh.n * (double)sh.k / sec * 1e-9;
                    double peak = mp.peak[ceiling_for(&k, &w[0])][t];
                    char pk[16] = "n/a", ratio[16] = "";
                    if (peak > 0) snprintf(pk, sizeof pk, "%.0f%%", 100.0 * gops / peak);
                    if (t1 > 0) snprintf(ratio, sizeof ratio, "%.2f", sec / t1);
                    printf("| %s | %d x %d | %d | %d | %s | %.1f | %.1f | %.0f%% | %.1f | %s | %s |\n", path, sh.n, sh.k, m,
                           threads[t], k.name, sec * 1e6, gbs, mp.bw[t] > 0 ? 100.0 * gbs / mp.bw[t] : 0.0, gops, pk, ratio);
                    fprintf(json,
                            "%s\n  {\"path\": \"%s\", \"n\": %d, \"k\": %d, \"m\": %d, \"threads\": %d, \"kernel\": \"%s\", "
                            "\"seconds\": %.9f, \"weights_gbs\": %.3f, \"bw_fraction\": %.4f, \"gops\": %.3f, "
                            "\"peak_fraction\": %.4f, \"time_vs_m1\": %.4f}",
                            n_results++ ? "," : "", path, sh.n, sh.k, m, threads[t], k.name, sec, gbs,
                            mp.bw[t] > 0 ? gbs / mp.bw[t] : 0.0, gops, peak > 0 ? gops / peak : 0.0,
                            t1 > 0 ? sec / t1 : 0.0);
                }
            }
            for (int i = 0; i < n_w; i++) qweight_free(&w[i]);
            free(x);
            free(y);
        }
    }
    fprintf(json, "\n]}\n");
    fclose(json);
    gemm_scratch_destroy(scratch);
    printf("\nJSON: %s\n", json_path);
    return 0;
usage:
    fprintf(stderr, "usage: infernode bench kernels [--threads 1,2] [--m 1,2,...] [--paths LIST] [--json FILE]\n");
    return CLI_EXIT_USAGE;
}

/* ---------------------------------------------------------------- model */

static const model_shape model_shapes[] = {
    { "tinyllama", "TinyLlama-1.1B shape",
      { .arch = "llama", .n_layers = 22, .dim = 2048, .n_heads = 32, .n_kv_heads = 4, .head_dim = 64, .ffn_dim = 5632,
        .vocab_size = 32000, .ctx_len = 2048, .rope_theta = 10000.0f, .norm_eps = 1e-5f } },
    { "llama7b", "Llama-2-7B shape",
      { .arch = "llama", .n_layers = 32, .dim = 4096, .n_heads = 32, .n_kv_heads = 32, .head_dim = 128, .ffn_dim = 11008,
        .vocab_size = 32000, .ctx_len = 4096, .rope_theta = 10000.0f, .norm_eps = 1e-5f } },
    { "codellama34b", "CodeLlama-34B shape",
      { .arch = "llama", .n_layers = 48, .dim = 8192, .n_heads = 64, .n_kv_heads = 8, .head_dim = 128, .ffn_dim = 22016,
        .vocab_size = 32000, .ctx_len = 16384, .rope_theta = 1000000.0f, .norm_eps = 1e-5f } },
#define STARCODER .arch = "starcoder", .n_kv_heads = 1, .vocab_size = 49152, .ctx_len = 8192, .norm_eps = 1e-5f, \
                  .rope_theta = 10000.0f, .norm = MODEL_NORM_LAYER, .ffn = MODEL_FFN_GELU, .gelu = IFN_GELU_TANH, \
                  .pos = MODEL_POS_LEARNED, .biases = true, .qkv_fused = true
    { "starcoder15b", "StarCoder-15B shape",
      { STARCODER, .n_layers = 40, .dim = 6144, .n_heads = 48, .head_dim = 128, .ffn_dim = 24576 } },
    { "tinystarcoder", "tiny_starcoder_py shape",
      { STARCODER, .n_layers = 20, .dim = 768, .n_heads = 12, .head_dim = 64, .ffn_dim = 3072, .tied_output = true } },
#undef STARCODER
};

const model_shape *bench_shape(const char *name)
{
    for (size_t i = 0; i < sizeof model_shapes / sizeof model_shapes[0]; i++)
        if (strcmp(model_shapes[i].name, name) == 0) return &model_shapes[i];
    return NULL;
}

static double model_params(const model_config *c)
{
    const double q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    const double ffn_mats = c->ffn == MODEL_FFN_GELU ? 2.0 : 3.0, norms = c->norm == MODEL_NORM_LAYER ? 2.0 : 1.0;
    double layer = c->dim * (q + 2 * kv) + q * c->dim + ffn_mats * c->dim * c->ffn_dim + 2.0 * norms * c->dim;
    if (c->biases) layer += q + 2 * kv + c->dim + c->ffn_dim + c->dim;
    const double pos = c->pos == MODEL_POS_LEARNED ? (double)c->ctx_len * c->dim : 0.0;
    return c->n_layers * layer + (c->tied_output ? 1.0 : 2.0) * c->vocab_size * c->dim + norms * c->dim + pos;
}

/* Tokens per second of one test: pp N evaluates N prompt tokens in one call; tg N generates N
 * tokens one at a time, each followed by the argmax reduction greedy decoding does, after
 * `depth` context tokens evaluated untimed (tg N @ depth: the time per output token of a request
 * with a prompt of that length). Each repetition starts from an empty sequence. Every rank
 * runs the same calls (the forward pass's all-reduces pair them up). *allreduce_s gets the
 * mean all-reduce time per timed token. */
static ifn_status run_test(comm *cm, const model *m, bool prompt, int n, int depth, int reps, double *mean, double *sd,
                           double *allreduce_s)
{
    int vocab0, n_vocab;
    model_vocab_slice(m, &vocab0, &n_vocab);
    if (prompt) depth = 0;
    int32_t *tokens = malloc((size_t)(depth + n) * sizeof *tokens);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    ifn_status st = tokens && logits ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory");
    for (int i = 0; i < depth + n && st == IFN_OK; i++) tokens[i] = (int32_t)((i * 7919) % model_get_config(m)->vocab_size);
    double sum = 0.0, sum2 = 0.0, ar0 = 0.0;
    for (int r = 0; r <= reps && st == IFN_OK; r++) { /* repetition 0 warms up */
        model_ctx *ctx;
        st = model_ctx_create(m, 1, depth + n + 1, prompt ? n : depth > 0 ? depth : 1, IFN_KV_F16, &ctx); /* the server's default */
        if (st != IFN_OK) break;
        if (depth > 0) {
            model_batch_seq ctx_tokens = { .slot = 0, .pos0 = 0, .n_tokens = depth, .tokens = tokens, .n_out = 1 };
            st = model_batch_eval(ctx, &ctx_tokens, 1, logits);
        }
        if (r == 1) ar0 = comm_allreduce_seconds(cm);
        double t0 = ifn_seconds();
        if (prompt) {
            model_batch_seq all = { .slot = 0, .pos0 = 0, .n_tokens = n, .tokens = tokens, .n_out = 1 };
            st = model_batch_eval(ctx, &all, 1, logits);
        }
        for (int i = 0; !prompt && i < n && st == IFN_OK; i++) {
            model_batch_seq one = { .slot = 0, .pos0 = depth + i, .n_tokens = 1, .tokens = &tokens[depth + i], .n_out = 1 };
            st = model_batch_eval(ctx, &one, 1, logits);
            int32_t best = 0, id;
            float value;
            for (int j = 1; j < n_vocab; j++)
                if (logits[j] > logits[best]) best = j;
            int32_t gid = vocab0 + best;
            if (st == IFN_OK) st = comm_argmax(cm, &logits[best], &gid, 1, &value, &id);
        }
        double tps = n / (ifn_seconds() - t0);
        model_ctx_destroy(ctx);
        if (r > 0) {
            sum += tps;
            sum2 += tps * tps;
        }
    }
    *mean = sum / reps;
    *sd = reps > 1 ? sqrt(fmax(0.0, (sum2 - sum * sum / reps) / (reps - 1))) : 0.0;
    *allreduce_s = (comm_allreduce_seconds(cm) - ar0) / ((double)reps * n);
    free(tokens);
    free(logits);
    return st;
}

static int bench_model(comm *cm, int argc, char **argv)
{
    const char *shape_name = "tinyllama", *quants_arg = "f32,bf16,w8a8,w4a8-g128,w4a16-g128";
    int threads[BENCH_MAX_LIST] = { 1, omp_get_num_procs() }, n_threads = omp_get_num_procs() > 1 ? 2 : 1;
    int pps[BENCH_MAX_LIST] = { 32, 1024 }, n_pp = 2, tgs[BENCH_MAX_LIST] = { 32 }, n_tg = 1, reps = 3, layers = 0;
    int depths[BENCH_MAX_LIST] = { 0 }, n_depth = 1;
    static const struct option opts[] = { { "shape", required_argument, 0, 's' }, { "quant", required_argument, 0, 'q' },
                                          { "threads", required_argument, 0, 't' }, { "n-prompt", required_argument, 0, 'p' },
                                          { "n-gen", required_argument, 0, 'n' }, { "reps", required_argument, 0, 'r' },
                                          { "layers", required_argument, 0, 'l' }, { "help", no_argument, 0, 'h' },
                                          { "depth", required_argument, 0, 'd' }, { 0, 0, 0, 0 } };
    optind = 1;
    int c, tmp[BENCH_MAX_LIST], nt, li;
    while ((li = -1, c = getopt_long(argc, argv, "s:q:t:p:n:r:l:d:h", opts, &li)) != -1) {
        bool ok = true;
        /* what a refused value should have been */
        const char *expect = "a list of 1..16 comma-separated integers in 1..1048576";
        switch (c) {
        case 's': shape_name = optarg; break;
        case 'q': quants_arg = optarg; break;
        case 't': ok = bench_parse_list(optarg, 1, 1 << 20, threads, &n_threads); break;
        case 'p': ok = bench_parse_list(optarg, 1, 1 << 20, pps, &n_pp); break;
        case 'n': ok = bench_parse_list(optarg, 1, 1 << 20, tgs, &n_tg); break;
        case 'd':
            ok = bench_parse_list(optarg, 0, 1 << 20, depths, &n_depth);
            expect = "a list of 1..16 comma-separated integers in 0..1048576";
            break;
        case 'r':
            ok = bench_parse_list(optarg, 1, 1 << 20, tmp, &nt) && nt == 1;
            expect = "an integer in 1..1048576";
            if (ok) reps = tmp[0];
            break;
        case 'l':
            ok = bench_parse_list(optarg, 1, 1 << 20, tmp, &nt) && nt == 1;
            expect = "an integer in 1..1048576";
            if (ok) layers = tmp[0];
            break;
        case 'h':
            printf("usage: infernode bench [model] [--shape tinyllama|llama7b|codellama34b|starcoder15b|tinystarcoder]\n"
                   "       [--layers N]\n"
                   "       [--quant f32,bf16,w8a8,...] [--threads 1,2] [--n-prompt 32,1024] [--n-gen 32]\n"
                   "       [--depth 0,1024] [--reps 3]\n"
                   "Random weights at a real model's shape; prints tokens/s like llama-bench.\n"
                   "tgN@dD: N tokens generated one at a time after a context of D tokens (untimed),\n"
                   "i.e. the time per output token of a request with a D-token prompt.\n");
            return 0;
        default: goto usage;
        }
        if (!ok) return cli_bad_value(opts, li, c, optarg, expect);
    }
    const model_shape *shape = bench_shape(shape_name);
    if (!shape) {
        fprintf(stderr, "infernode: error: --shape %s is not one of tinyllama, llama7b, codellama34b, starcoder15b, "
                "tinystarcoder\n", shape_name);
        return CLI_EXIT_USAGE;
    }
    model_config cfg = shape->cfg;
    if (layers > 0 && layers < cfg.n_layers) cfg.n_layers = layers;

    bool talk = comm_rank(cm) == 0;
    int world = comm_world(cm);
    if (talk) {
        print_machine(stdout);
        printf("ranks: %d%s\n", world, world > 1 ? " (tensor parallel; t/s counts tokens of the whole model)" : "");
        printf("\n| model | size | params | quant | ranks x threads | test | t/s | all-reduce/token |\n"
               "|---|---|---|---|---|---|---|---|\n");
    }
    char quants[256];
    snprintf(quants, sizeof quants, "%s", quants_arg);
    for (char *save = NULL, *q = strtok_r(quants, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
        qw_spec spec;
        tp_plan plan;
        tp_model_dims dims = { cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim, cfg.vocab_size };
        if (qw_spec_parse(q, &spec) != IFN_OK || tp_plan_build(&dims, world, spec.group ? spec.group : 1, &plan) != IFN_OK) {
            if (talk) cli_fail(q);
            return CLI_EXIT_USAGE;
        }
        model_options mo = { .quant = q, .shard = world > 1 ? &plan.shards[comm_rank(cm)] : NULL,
                             .comm = world > 1 ? cm : NULL };
        model *m;
        if (model_create_random(&cfg, &mo, 42, &m) != IFN_OK) {
            fprintf(stderr, "infernode: error (rank %d): %s\n", comm_rank(cm), ifn_error_detail());
            comm_abort(cm, CLI_EXIT_ERROR);
        }
        double size = (double)model_weight_bytes(m);
        if (world > 1) {
            float total = (float)size;
            if (comm_allreduce_sum(cm, &total, 1) != IFN_OK) comm_abort(cm, CLI_EXIT_ERROR);
            size = total;
        }
        for (int t = 0; t < n_threads; t++) {
            omp_set_num_threads(threads[t]);
            for (int kind = 0; kind < 2; kind++)
                for (int i = 0; i < (kind ? n_tg * n_depth : n_pp); i++) {
                    int n = kind ? tgs[i / n_depth] : pps[i], depth = kind ? depths[i % n_depth] : 0;
                    double mean, sd, ar;
                    if (run_test(cm, m, kind == 0, n, depth, reps, &mean, &sd, &ar) != IFN_OK) {
                        fprintf(stderr, "infernode: error (rank %d): %s\n", comm_rank(cm), ifn_error_detail());
                        comm_abort(cm, CLI_EXIT_ERROR);
                    }
                    if (talk) {
                        char arb[32] = "-";
                        if (world > 1) snprintf(arb, sizeof arb, "%.1f us", ar * 1e6);
                        char at[24] = "";
                        if (depth) snprintf(at, sizeof at, "@d%d", depth);
                        printf("| %s%s | %.2f GiB | %.2f B | %s | %d x %d | %s%d%s | %.2f ± %.2f | %s |\n", shape->label,
                               cfg.n_layers != shape->cfg.n_layers ? " (cut)" : "", size / (1 << 30),
                               model_params(&cfg) * 1e-9, q, world, threads[t], kind ? "tg" : "pp", n, at, mean, sd, arb);
                        fflush(stdout);
                    }
                }
        }
        model_destroy(m);
    }
    return 0;
usage:
    fprintf(stderr, "usage: infernode bench [model] [--shape S] [--quant LIST] [--threads LIST] [--n-prompt LIST] [--n-gen LIST] "
                    "[--depth LIST]\n");
    return CLI_EXIT_USAGE;
}

int bench_with_engine(comm *c, const engine_params *ep, ifn_status (*lead)(engine *e, void *arg), void *arg,
                      const char *what)
{
    engine *e;
    if (engine_create(c, ep, &e) != IFN_OK) {
        if (*ifn_error_detail()) cli_fail(NULL);
        return CLI_EXIT_ERROR;
    }
    int rc = 0;
    if (comm_rank(c) != 0) {
        rc = engine_serve(e) == IFN_OK ? 0 : cli_fail(NULL);
    } else {
        fprintf(stderr, "infernode: %s\n", engine_describe(e));
        if (lead(e, arg) != IFN_OK) rc = cli_fail(what);
        if (engine_stop(e) != IFN_OK && rc == 0) rc = cli_fail(NULL);
    }
    engine_destroy(e);
    return rc;
}

int cli_bench(comm *c, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "kernels") == 0) {
        if (comm_world(c) > 1) {
            if (comm_rank(c) == 0) fprintf(stderr, "infernode: error: 'bench kernels' runs in one process, not under mpirun\n");
            return CLI_EXIT_USAGE;
        }
        return bench_kernels(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "model") == 0) return bench_model(c, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return bench_serve(c, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "kv") == 0) return bench_kv(c, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "spec") == 0) return bench_spec(c, argc - 1, argv + 1);
    if (argc >= 2 && argv[1][0] != '-') {
        fprintf(stderr, "infernode: unknown benchmark '%s' (kernels, model, serve, kv, spec)\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    return bench_model(c, argc, argv);
}
