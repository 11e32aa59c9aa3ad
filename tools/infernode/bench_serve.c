/* infernode bench serve: what continuous batching buys. N requests arrive at once (a prompt of
 * --prompt random token ids each, --gen greedy tokens, end-of-generation ignored) and the
 * scheduler serves them together, as 'infernode serve' does, on a random-weight model of a
 * real shape over every rank of the launch. gRPC is left out: this measures the scheduler and
 * the batched forward steps, the part that decides tokens/s. Per N it prints the aggregate
 * generated tokens/s (all requests' generated tokens over the wall time from arrival to the
 * last token, prefill included), the decode tokens/s (the sum over requests of 1/TPOT), their
 * ratios to N = 1, and p50/p99 over the requests of TTFT (arrival to first token) and TPOT
 * (mean time per token after the first). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "clock.h"
#include "engine.h"
#include "scheduler.h"

typedef struct {
    double t_submit, t_first, t_last;
    int n;
    bool done;
} stream_times;

static void on_event(void *user, const sched_event *ev)
{
    stream_times *t = user;
    double now = ifn_seconds();
    if (ev->n_ids > 0) {
        if (t->n == 0) t->t_first = now;
        t->t_last = now;
        t->n += ev->n_ids;
    }
    if (ev->finish != SCHED_RUNNING) t->done = true;
}

/* The q-quantile of v[n] (sorts v), nearest rank. */
static double quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i];
}

/* Serves n streams at once; *tok_s, TTFT and TPOT quantiles out. */
static ifn_status run_streams(engine *e, int n, int prompt, int gen, double *tok_s, double *decode_tok_s, double ttft[2],
                              double tpot[2])
{
    sched_limits lim = { .max_queue = n, .max_step_tokens = engine_n_batch(e), .prefill_chunk = engine_n_batch(e) };
    scheduler *s;
    CHECK(scheduler_create(e, NULL, NULL, &lim, &s));
    stream_times *t = calloc((size_t)n, sizeof *t);
    double *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    ifn_status st = t && a && b ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for %d streams", n);
    const int vocab = engine_config(e)->vocab_size;
    double t0 = ifn_seconds();
    for (int i = 0; i < n && st == IFN_OK; i++) {
        int32_t *ids = malloc((size_t)prompt * sizeof *ids);
        if (!ids) {
            st = ifn_error_set(IFN_ERR_NOMEM, "no memory for a prompt");
            break;
        }
        for (int j = 0; j < prompt; j++) ids[j] = (int32_t)(((uint64_t)(i + 1) * 2654435761u + (uint64_t)j * 40503u) % (uint64_t)vocab);
        sched_request r = { .prompt = ids, .n_prompt = prompt, .max_new_tokens = gen, .sampling = sampler_params_default(),
                            .ignore_eos = true, .stream = true, .window = engine_ctx_size(e), .emit = on_event,
                            .check = bench_never_cancelled, .user = &t[i] };
        t[i].t_submit = ifn_seconds();
        st = scheduler_submit(s, &r);
        if (st != IFN_OK) free(ids);
    }
    while (st == IFN_OK && scheduler_pending(s) > 0) st = scheduler_step(s, 0);
    double wall = ifn_seconds() - t0;
    if (st == IFN_OK) {
        for (int i = 0; i < n; i++) {
            a[i] = t[i].t_first - t[i].t_submit;
            b[i] = t[i].n > 1 ? (t[i].t_last - t[i].t_first) / (t[i].n - 1) : 0.0;
        }
        *tok_s = (double)n * gen / wall;
        *decode_tok_s = 0;
        for (int i = 0; i < n; i++) *decode_tok_s += b[i] > 0 ? 1.0 / b[i] : 0.0;
        ttft[0] = quantile(a, n, 0.5);
        ttft[1] = quantile(a, n, 0.99);
        tpot[0] = quantile(b, n, 0.5);
        tpot[1] = quantile(b, n, 0.99);
    }
    free(a);
    free(b);
    free(t);
    scheduler_destroy(s);
    return st;
}

typedef struct {
    int streams[BENCH_MAX_LIST], n_runs, prompt, gen;
    char title[200];
} serve_bench;

/* Rank 0: a warm-up, then one row per stream count. */
static ifn_status run_table(engine *e, void *arg)
{
    const serve_bench *a = arg;
    printf("%s\n\n", a->title);
    printf("| streams | tokens/s | vs 1 stream | decode tokens/s | vs 1 stream | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
    double tok_s, dec_s, ttft[2], tpot[2], base = 0, dec_base = 0;
    ifn_status st = run_streams(e, 1, a->prompt, a->gen < 4 ? a->gen : 4, &tok_s, &dec_s, ttft, tpot); /* warm-up */
    for (int i = 0; i < a->n_runs && st == IFN_OK; i++) {
        st = run_streams(e, a->streams[i], a->prompt, a->gen, &tok_s, &dec_s, ttft, tpot);
        if (st != IFN_OK) break;
        if (a->streams[i] == 1) {
            base = tok_s;
            dec_base = dec_s;
        }
        char ratio[32] = "-", dec_ratio[32] = "-";
        if (base > 0) snprintf(ratio, sizeof ratio, "%.2fx", tok_s / base);
        if (dec_base > 0) snprintf(dec_ratio, sizeof dec_ratio, "%.2fx", dec_s / dec_base);
        printf("| %d | %.1f | %s | %.1f | %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms |\n", a->streams[i], tok_s, ratio,
               dec_s, dec_ratio, 1e3 * ttft[0], 1e3 * ttft[1], 1e3 * tpot[0], 1e3 * tpot[1]);
        fflush(stdout);
    }
    return st;
}

int bench_serve(comm *c, int argc, char **argv)
{
    static const struct option opts[] = { { "shape", required_argument, 0, 's' }, { "quant", required_argument, 0, 'q' },
                                          { "streams", required_argument, 0, 'n' }, { "prompt", required_argument, 0, 'p' },
                                          { "gen", required_argument, 0, 'g' }, { "help", no_argument, 0, 'h' },
                                          { "layers", required_argument, 0, 'l' }, { 0, 0, 0, 0 } };
    const char *shape_name = "tinyllama", *quant = "w4a8-g128";
    int streams[BENCH_MAX_LIST] = { 1, 4, 16 }, n_runs = 3, prompt = 32, gen = 32, layers = 0;
    bool talk = comm_rank(c) == 0;
    optind = 1;
    opterr = 0;
    int ch;
    int li;
    while ((li = -1, ch = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = "an integer in 1..65536"; /* what a refused value should have been */
        switch (ch) {
        case 's': shape_name = optarg; break;
        case 'q': quant = optarg; break;
        case 'n':
            ok = bench_parse_list(optarg, 1, 1024, streams, &n_runs);
            expect = "a comma-separated list of integers in 1..1024";
            break;
        case 'p': ok = cli_parse_int(optarg, 1, 1 << 16, &prompt); break;
        case 'g': ok = cli_parse_int(optarg, 1, 1 << 16, &gen); break;
        case 'l':
            ok = cli_parse_int(optarg, 1, 1024, &layers);
            expect = "an integer in 1..1024";
            break;
        case 'h':
            if (talk)
                printf("usage: infernode bench serve [--shape tinyllama|llama7b|codellama34b] [--layers N] [--quant Q]\n"
                       "                             [--streams 1,4,16] [--prompt 32] [--gen 32]\n"
                       "N requests at once through the scheduler (no gRPC) on random weights; aggregate\n"
                       "generated tokens/s and p50/p99 TTFT and TPOT per N.\n");
            return 0;
        default:
            if (talk)
                fprintf(stderr, "infernode: error: bench serve: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (!ok) return talk ? cli_bad_value(opts, li, ch, optarg, expect) : CLI_EXIT_USAGE;
    }
    const model_shape *shape = bench_shape(shape_name);
    if (!shape) {
        if (talk) fprintf(stderr, "infernode: error: --shape %s is not one of tinyllama, llama7b, codellama34b\n", shape_name);
        return CLI_EXIT_USAGE;
    }
    model_config cfg = shape->cfg;
    if (layers) cfg.n_layers = layers;
    int max_streams = 1;
    for (int i = 0; i < n_runs; i++)
        if (streams[i] > max_streams) max_streams = streams[i];
    int n_batch = max_streams * prompt < 512 ? 512 : max_streams * prompt;
    serve_bench a = { .n_runs = n_runs, .prompt = prompt, .gen = gen };
    memcpy(a.streams, streams, sizeof streams);
    snprintf(a.title, sizeof a.title, "%s%s, %s, KV f16, %d rank(s): %d prompt + %d generated tokens per stream, greedy",
             shape->label, layers ? " (cut)" : "", quant, comm_world(c), prompt, gen);
    engine_params ep = { .random_shape = &cfg, .quant = quant, .ctx_size = prompt + gen, .kv_type = IFN_KV_F16,
                         .n_batch = n_batch, .n_slots = max_streams };
    return bench_with_engine(c, &ep, run_table, &a, "bench serve");
}
