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

/* How results are printed: a Markdown table, or one JSON object per test and line (field
 * names are stable; tools/bench/vs-llamacpp.sh reads them). */
typedef enum { BENCH_OUT_MD, BENCH_OUT_JSONL } bench_output;

/* One measured test, as printed. */
typedef struct {
    const char *model;  /* the shape's label, or the file's path */
    const char *arch;
    double size;        /* packed weight bytes, all ranks */
    double params;
    const char *quant;  /* the packing */
    int ranks, threads;
    bool prompt;        /* ppN, else tgN */
    int n, depth, reps;
    double mean, sd;    /* tokens/s over the timed repetitions */
    double allreduce_s; /* all-reduce seconds per timed token; < 0 in a single process */
} bench_row;

static void print_header(bench_output out, int world)
{
    if (out != BENCH_OUT_MD) return;
    print_machine(stdout);
    printf("ranks: %d%s\n", world, world > 1 ? " (tensor parallel; t/s counts tokens of the whole model)" : "");
    printf("\n| model | size | params | quant | ranks x threads | test | t/s | all-reduce/token |\n"
           "|---|---|---|---|---|---|---|---|\n");
}

static void print_row(bench_output out, const bench_row *r)
{
    char test[48];
    int len = snprintf(test, sizeof test, "%s%d", r->prompt ? "pp" : "tg", r->n);
    if (r->depth) snprintf(test + len, sizeof test - (size_t)len, "@d%d", r->depth);
    if (out == BENCH_OUT_JSONL) {
        printf("{\"engine\": \"infernode\", \"model\": ");
        cli_json_string(stdout, r->model);
        printf(", \"arch\": ");
        cli_json_string(stdout, r->arch);
        printf(", \"model_size\": %.0f, \"model_n_params\": %.0f, \"quant\": ", r->size, r->params);
        cli_json_string(stdout, r->quant);
        printf(", \"n_ranks\": %d, \"n_threads\": %d, \"test\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, "
               "\"reps\": %d, \"avg_ts\": %.4f, \"stddev_ts\": %.4f, \"allreduce_us\": ",
               r->ranks, r->threads, test, r->prompt ? r->n : 0, r->prompt ? 0 : r->n, r->depth, r->reps, r->mean, r->sd);
        if (r->allreduce_s >= 0) printf("%.3f}\n", r->allreduce_s * 1e6);
        else printf("null}\n");
    } else {
        char arb[32] = "-";
        if (r->allreduce_s >= 0) snprintf(arb, sizeof arb, "%.1f us", r->allreduce_s * 1e6);
        printf("| %s | %.2f GiB | %.2f B | %s | %d x %d | %s | %.2f ± %.2f | %s |\n", r->model, r->size / (1 << 30),
               r->params * 1e-9, r->quant, r->ranks, r->threads, test, r->mean, r->sd, arb);
    }
    fflush(stdout);
}

/* 'infernode bench [model] [FILE]' options. A count or reps of -1 was not given: its default
 * depends on the form (bench_args_finish). */
typedef struct {
    const char *shape_name; /* random weights of this shape (the form without a file) */
    const char *model_path; /* a model file: -m FILE or the one operand */
    const char *quants;     /* packings to measure; NULL with a file: as stored */
    int threads[BENCH_MAX_LIST], n_threads;
    int pps[BENCH_MAX_LIST], n_pp, tgs[BENCH_MAX_LIST], n_tg, depths[BENCH_MAX_LIST], n_depth;
    int reps, layers;
    bench_output output;
} bench_args;

#define BENCH_LIST_EXPECT "a list of 1..16 comma-separated integers in 1..1048576"

static void bench_model_usage(FILE *out)
{
    fputs("usage: infernode bench FILE [options]          a model file, measured like llama-bench\n"
          "       infernode bench [model] [options]       random weights at a real model's shape\n"
          "       infernode bench kernels|serve|kv|spec   (see 'infernode bench NAME --help')\n"
          "\n"
          "  FILE, -m, --model FILE  GGUF file, Hugging Face directory or llama2.c .bin\n"
          "  -s, --shape NAME        tinyllama (default), llama7b, codellama34b, starcoder15b,\n"
          "                          tinystarcoder (random weights; not with a file)\n"
          "  -l, --layers N          only the shape's first N layers\n"
          "  -q, --quant LIST        packings to measure, one load each: f32, bf16, w8a8,\n"
          "                          w4a8-g128, ... (default f32,bf16,w8a8,w4a8-g128,w4a16-g128;\n"
          "                          with a file: as stored)\n"
          "  -t, --threads LIST      OpenMP threads per rank (default 1,<CPUs>; with a file: the\n"
          "                          default team, OMP_NUM_THREADS or the CPUs allowed); a file\n"
          "                          is loaded once per value, its threads pinned as by serve\n"
          "  -p, --n-prompt LIST     ppN: N prompt tokens evaluated in one step (default 32,1024;\n"
          "                          with a file 512; 0: no pp test)\n"
          "  -n, --n-gen LIST        tgN: N tokens evaluated one step each from an empty context,\n"
          "                          each followed by the argmax (default 32; with a file 128;\n"
          "                          0: no tg test)\n"
          "  -d, --depth LIST        tgN@dD: after a context of D tokens evaluated untimed, i.e.\n"
          "                          the time per output token of a D-token prompt (default 0)\n"
          "  -r, --reps N            timed repetitions after a warm-up (default 3; with a file 5)\n"
          "  -o, --output md|jsonl   a Markdown table (default), or one JSON object per test:\n"
          "                          engine, model, arch, model_size (bytes), model_n_params,\n"
          "                          quant, n_ranks, n_threads, test (\"pp512\", \"tg128@d512\"),\n"
          "                          n_prompt, n_gen, n_depth, reps, avg_ts, stddev_ts (tokens/s),\n"
          "                          allreduce_us (per token; null in one process)\n"
          "\n"
          "t/s is the mean ± sample stddev over the repetitions, each from an empty KV cache\n"
          "(f16). With a file the defaults and the warm-up are llama-bench's (the whole prompt\n"
          "for pp, one token for tg), so that 'llama-bench -m FILE' measures the same tests;\n"
          "tools/bench/vs-llamacpp.sh runs both and prints the ratios.\n",
          out);
}

/* A -p/-n list: integers in 0..2^20, the zeros dropped (-p 0: no pp test). */
static bool parse_sizes(const char *s, int *out, int *n)
{
    int all[BENCH_MAX_LIST], n_all;
    if (!bench_parse_list(s, 0, 1 << 20, all, &n_all)) return false;
    *n = 0;
    for (int i = 0; i < n_all; i++)
        if (all[i] > 0) out[(*n)++] = all[i];
    return true;
}

/* Parses the options into *a. Returns -1 to go on, else the exit status (0 after --help). */
static int parse_bench_args(int argc, char **argv, bench_args *a)
{
    static const struct option opts[] = { { "shape", required_argument, 0, 's' }, { "quant", required_argument, 0, 'q' },
                                          { "threads", required_argument, 0, 't' }, { "n-prompt", required_argument, 0, 'p' },
                                          { "n-gen", required_argument, 0, 'n' }, { "reps", required_argument, 0, 'r' },
                                          { "layers", required_argument, 0, 'l' }, { "help", no_argument, 0, 'h' },
                                          { "depth", required_argument, 0, 'd' }, { "model", required_argument, 0, 'm' },
                                          { "output", required_argument, 0, 'o' }, { 0, 0, 0, 0 } };
    *a = (bench_args){ .n_threads = -1, .n_pp = -1, .n_tg = -1, .depths = { 0 }, .n_depth = 1, .reps = -1 };
    optind = 1;
    int c, tmp[BENCH_MAX_LIST], nt, li;
    while ((li = -1, c = getopt_long(argc, argv, "s:q:t:p:n:r:l:d:m:o:h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = BENCH_LIST_EXPECT; /* what a refused value should have been */
        switch (c) {
        case 's': a->shape_name = optarg; break;
        case 'q': a->quants = optarg; break;
        case 'm': a->model_path = optarg; break;
        case 't': ok = bench_parse_list(optarg, 1, 1 << 20, a->threads, &a->n_threads); break;
        case 'p':
        case 'n':
            ok = c == 'p' ? parse_sizes(optarg, a->pps, &a->n_pp) : parse_sizes(optarg, a->tgs, &a->n_tg);
            expect = "a list of 1..16 comma-separated integers in 0..1048576";
            break;
        case 'd':
            ok = bench_parse_list(optarg, 0, 1 << 20, a->depths, &a->n_depth);
            expect = "a list of 1..16 comma-separated integers in 0..1048576";
            break;
        case 'r':
        case 'l':
            ok = bench_parse_list(optarg, 1, 1 << 20, tmp, &nt) && nt == 1;
            expect = "an integer in 1..1048576";
            if (ok) *(c == 'r' ? &a->reps : &a->layers) = tmp[0];
            break;
        case 'o':
            ok = strcmp(optarg, "md") == 0 || strcmp(optarg, "jsonl") == 0;
            expect = "md or jsonl";
            a->output = strcmp(optarg, "jsonl") == 0 ? BENCH_OUT_JSONL : BENCH_OUT_MD;
            break;
        case 'h': bench_model_usage(stdout); return 0;
        default:
            fprintf(stderr, "usage: infernode bench [FILE | model] [--shape S] [--quant LIST] [--threads LIST] "
                            "[--n-prompt LIST] [--n-gen LIST] [--depth LIST] [--reps N] [--output md|jsonl]\n");
            return CLI_EXIT_USAGE;
        }
        if (!ok) return cli_bad_value(opts, li, c, optarg, expect);
    }
    return -1;
}

/* The model file operand, the form's exclusions and the defaults of what was not given.
 * Returns -1 to go on, else CLI_EXIT_USAGE (said on stderr by rank 0 only, when talk). */
static int bench_args_finish(int argc, char **argv, bool talk, bench_args *a)
{
    const char *refusal = NULL;
    if (optind < argc && (a->model_path || optind + 1 < argc)) refusal = "give one model file (-m FILE or FILE)";
    else if (optind < argc) a->model_path = argv[optind];
    if (!refusal && a->model_path && (a->shape_name || a->layers))
        refusal = "--shape and --layers are for random weights, not with a model file";
    if (!refusal && a->n_pp == 0 && a->n_tg == 0) refusal = "no test to run: --n-prompt and --n-gen are both 0";
    if (refusal) {
        if (talk) fprintf(stderr, "infernode: error: bench: %s\n", refusal);
        return CLI_EXIT_USAGE;
    }
    const bool file = a->model_path != NULL;
    if (a->n_threads < 0 && file) {
        a->threads[0] = omp_get_max_threads();
        a->n_threads = 1;
    } else if (a->n_threads < 0) {
        a->threads[0] = 1;
        a->threads[1] = omp_get_num_procs();
        a->n_threads = omp_get_num_procs() > 1 ? 2 : 1;
    }
    if (a->n_pp < 0) {
        a->pps[0] = file ? 512 : 32;
        a->pps[1] = 1024;
        a->n_pp = file ? 1 : 2;
    }
    if (a->n_tg < 0) {
        a->tgs[0] = file ? 128 : 32;
        a->n_tg = 1;
    }
    if (a->reps < 0) a->reps = file ? 5 : 3;
    if (!a->quants && !file) a->quants = "f32,bf16,w8a8,w4a8-g128,w4a16-g128";
    if (!a->shape_name) a->shape_name = "tinyllama";
    return -1;
}

/* The tests of one packing at every thread count, on random weights. */
static void run_random_tests(comm *cm, const model *m, const bench_args *a, bench_row *row)
{
    for (int t = 0; t < a->n_threads; t++) {
        omp_set_num_threads(a->threads[t]);
        row->threads = a->threads[t];
        for (int kind = 0; kind < 2; kind++)
            for (int i = 0; i < (kind ? a->n_tg * a->n_depth : a->n_pp); i++) {
                row->prompt = kind == 0;
                row->n = kind ? a->tgs[i / a->n_depth] : a->pps[i];
                row->depth = kind ? a->depths[i % a->n_depth] : 0;
                double ar;
                if (run_test(cm, m, row->prompt, row->n, row->depth, a->reps, &row->mean, &row->sd, &ar) != IFN_OK) {
                    fprintf(stderr, "infernode: error (rank %d): %s\n", comm_rank(cm), ifn_error_detail());
                    comm_abort(cm, CLI_EXIT_ERROR);
                }
                row->allreduce_s = comm_world(cm) > 1 ? ar : -1.0;
                if (comm_rank(cm) == 0) print_row(a->output, row);
            }
    }
}

/* Random weights at a shape, packed as each of a->quants, on every rank. */
static int bench_random(comm *cm, const bench_args *a)
{
    const model_shape *shape = bench_shape(a->shape_name);
    if (!shape) {
        fprintf(stderr, "infernode: error: --shape %s is not one of tinyllama, llama7b, codellama34b, starcoder15b, "
                "tinystarcoder\n", a->shape_name);
        return CLI_EXIT_USAGE;
    }
    model_config cfg = shape->cfg;
    if (a->layers > 0 && a->layers < cfg.n_layers) cfg.n_layers = a->layers;
    const bool talk = comm_rank(cm) == 0;
    const int world = comm_world(cm);
    if (talk) print_header(a->output, world);
    char label[64], quants[256];
    snprintf(label, sizeof label, "%s%s", shape->label, cfg.n_layers != shape->cfg.n_layers ? " (cut)" : "");
    snprintf(quants, sizeof quants, "%s", a->quants);
    for (char *save = NULL, *q = strtok_r(quants, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
        qw_spec spec;
        tp_plan plan;
        tp_model_dims dims = { cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim, cfg.vocab_size };
        if (qw_spec_parse(q, &spec) != IFN_OK ||
            tp_plan_build(&dims, world,
                          (tp_align){ qw_fit_group((int64_t)cfg.n_heads * cfg.head_dim, spec.group),
                                      qw_fit_group(cfg.ffn_dim, spec.group) },
                          &plan) != IFN_OK) {
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
        float size = (float)model_weight_bytes(m);
        if (world > 1 && comm_allreduce_sum(cm, &size, 1) != IFN_OK) comm_abort(cm, CLI_EXIT_ERROR);
        bench_row row = { .model = label, .arch = cfg.arch, .size = size, .params = model_params(&cfg), .quant = q,
                          .ranks = world, .reps = a->reps };
        run_random_tests(cm, m, a, &row);
        model_destroy(m);
    }
    return 0;
}

/* mean and sample standard deviation of x[n] */
static void mean_sd(const double *x, int n, double *mean, double *sd)
{
    double sum = 0.0, sum2 = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    *mean = sum / n;
    for (int i = 0; i < n; i++) sum2 += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(sum2 / (n - 1)) : 0.0;
}

/* One test of a model file through the engine (slot 0), as llama-bench defines it: ppN
 * evaluates N tokens in one step, tgN N tokens one step each (after `depth` tokens evaluated
 * untimed), each step returning the argmax of its last row. Every repetition starts from an
 * empty slot; a warm-up comes first: the whole prompt for pp, one token for tg. *allreduce_s
 * gets rank 0's all-reduce seconds per timed token. */
static ifn_status time_file_test(engine *e, comm *cm, bench_row *row, double *allreduce_s)
{
    const int n = row->n, depth = row->prompt ? 0 : row->depth, reps = row->reps;
    int32_t *tokens = malloc((size_t)(depth + n) * sizeof *tokens);
    double *tps = malloc((size_t)reps * sizeof *tps);
    ifn_status st = tokens && tps ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for a test of %d tokens", depth + n);
    for (int i = 0; st == IFN_OK && i < depth + n; i++)
        tokens[i] = (int32_t)((1 + (int64_t)i * 7919) % engine_config(e)->vocab_size);
    int32_t id;
    engine_output argmax = { .mode = ENGINE_LOGITS_ARGMAX, .ids = &id }, none = { .mode = ENGINE_LOGITS_NONE };
    double ar = 0.0;
    for (int r = -1; r < reps && st == IFN_OK; r++) { /* r = -1: the warm-up */
        engine_reset(e);
        if (depth > 0) st = engine_eval(e, tokens, depth, false, &none);
        const double ar0 = comm_allreduce_seconds(cm), t0 = ifn_seconds();
        if (row->prompt && st == IFN_OK) st = engine_eval(e, tokens, n, false, &argmax);
        for (int i = 0; !row->prompt && i < (r < 0 ? 1 : n) && st == IFN_OK; i++)
            st = engine_eval(e, &tokens[depth + i], 1, false, &argmax);
        if (r >= 0) {
            tps[r] = n / (ifn_seconds() - t0);
            ar += comm_allreduce_seconds(cm) - ar0;
        }
    }
    if (st == IFN_OK) mean_sd(tps, reps, &row->mean, &row->sd);
    *allreduce_s = ar / ((double)reps * n);
    free(tokens);
    free(tps);
    return st;
}

typedef struct {
    const bench_args *a;
    comm *cm;
    int threads; /* the team the engine was created (and its threads pinned) for */
} file_job;

/* Rank 0 with the engine loaded: every test. */
static ifn_status lead_file(engine *e, void *arg)
{
    const file_job *j = arg;
    const bench_args *a = j->a;
    const model_config *cfg = engine_config(e);
    bench_row row = { .model = a->model_path, .arch = cfg->arch, .size = (double)engine_weight_bytes(e),
                      .params = model_params(cfg), .quant = engine_quant_desc(e), .ranks = engine_ranks(e),
                      .threads = j->threads, .reps = a->reps };
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < (kind ? a->n_tg * a->n_depth : a->n_pp); i++) {
            row.prompt = kind == 0;
            row.n = kind ? a->tgs[i / a->n_depth] : a->pps[i];
            row.depth = kind ? a->depths[i % a->n_depth] : 0;
            double ar;
            CHECK(time_file_test(e, j->cm, &row, &ar));
            row.allreduce_s = row.ranks > 1 ? ar : -1.0;
            print_row(a->output, &row);
        }
    return IFN_OK;
}

/* The model file loaded as the engine loads it for serving (this rank's shard), packed as
 * quant (NULL: as stored), with room for the longest test, once per thread count: the engine
 * pins the threads of the team it is created with, as 'infernode serve -t N' does. */
static int bench_file_quant(comm *cm, const bench_args *a, const char *quant)
{
    int ctx = 1, batch = 1; /* positions of the longest test; tokens of the largest step */
    for (int i = 0; i < a->n_pp; i++)
        if (a->pps[i] > batch) batch = a->pps[i];
    for (int i = 0; i < a->n_depth; i++) {
        if (a->depths[i] > batch) batch = a->depths[i];
        for (int k = 0; k < a->n_tg; k++)
            if (a->depths[i] + a->tgs[k] > ctx) ctx = a->depths[i] + a->tgs[k];
    }
    if (batch > ctx) ctx = batch;
    engine_params ep = { .model_path = a->model_path, .quant = quant, .ctx_size = ctx, .n_batch = batch, .n_slots = 1,
                         .kv_type = IFN_KV_F16 };
    for (int t = 0; t < a->n_threads; t++) {
        file_job job = { .a = a, .cm = cm, .threads = a->threads[t] };
        omp_set_num_threads(job.threads);
        int rc = bench_with_engine(cm, &ep, lead_file, &job, "bench");
        if (rc != 0) return rc;
    }
    return 0;
}

static int bench_file(comm *cm, const bench_args *a)
{
    if (comm_rank(cm) == 0) print_header(a->output, comm_world(cm));
    if (!a->quants) return bench_file_quant(cm, a, NULL);
    char quants[256];
    snprintf(quants, sizeof quants, "%s", a->quants);
    for (char *save = NULL, *q = strtok_r(quants, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
        int rc = bench_file_quant(cm, a, q);
        if (rc != 0) return rc;
    }
    return 0;
}

static int bench_model(comm *cm, int argc, char **argv)
{
    bench_args a;
    int rc = parse_bench_args(argc, argv, &a);
    if (rc < 0) rc = bench_args_finish(argc, argv, comm_rank(cm) == 0, &a);
    if (rc >= 0) return rc;
    return a.model_path ? bench_file(cm, &a) : bench_random(cm, &a);
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
    /* Any other operand is a model file; a bare word that names no file is a mistyped benchmark. */
    if (argc >= 2 && argv[1][0] != '-' && !strpbrk(argv[1], "/.") && access(argv[1], F_OK) != 0) {
        fprintf(stderr, "infernode: unknown benchmark '%s' (kernels, model, serve, kv, spec; or a model file)\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    return bench_model(c, argc, argv);
}
