/* infernode bench kv: what the KV ring and sessions buy, through the scheduler as 'infernode
 * serve' runs it (gRPC left out), on a random-weight model of a real shape over every rank of
 * the launch.
 *
 * Long generation: one greedy request generates --multiples' largest times --ctx tokens in a
 * ring of --ctx positions (n_keep 4, n_discard half the rest). At each multiple k it prints
 * the mean time per token over the last --ctx tokens (TPOT), its ratio to k = 1, rank 0's
 * resident memory and the ring's discards so far: a ring that works keeps both flat.
 *
 * Sessions: turn 1 starts a session with a prompt of --history tokens and generates --gen;
 * turn 2 sends --turn-prompt new tokens on that session. Its time to first token is compared
 * with a request that sends the whole conversation again (turn 1's prompt and reply and
 * turn 2's prompt) without the session. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "clock.h"
#include "engine.h"
#include "mapped_file.h"
#include "scheduler.h"

#define N_KEEP 4

typedef struct {
    double *t;          /* [cap] when each generated token arrived */
    int32_t *ids;       /* [cap] */
    int n, cap;
    const int *marks;   /* token counts at which to sample memory */
    int n_marks;
    double *rss_mib;    /* [n_marks] */
    int discards;
    char session[SCHED_SESSION_ID_LEN + 1];
    double t_submit, ttft;
    bool done;
} bench_req;

static void on_event(void *user, const sched_event *ev)
{
    bench_req *b = user;
    double now = ifn_seconds();
    for (int i = 0; i < ev->n_ids && b->n < b->cap; i++) {
        if (b->n == 0) b->ttft = now - b->t_submit;
        b->t[b->n] = now;
        b->ids[b->n++] = ev->ids[i];
        for (int m = 0; m < b->n_marks; m++)
            if (b->n == b->marks[m]) b->rss_mib[m] = (double)process_rss_bytes() / (1 << 20);
    }
    if (ev->session_id) snprintf(b->session, sizeof b->session, "%s", ev->session_id);
    if (ev->finish != SCHED_RUNNING) {
        b->discards = ev->kv_discards;
        b->done = true;
    }
}

/* Runs one request to its end: prompt[n_prompt] (copied), gen greedy tokens. */
static ifn_status run_request(scheduler *s, const int32_t *prompt, int n_prompt, int gen, int window, int n_discard,
                              bool new_session, const char *session, bench_req *b)
{
    int32_t *ids = malloc((size_t)n_prompt * sizeof *ids);
    if (!ids) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a prompt");
    memcpy(ids, prompt, (size_t)n_prompt * sizeof *ids);
    sched_request r = { .prompt = ids, .n_prompt = n_prompt, .max_new_tokens = gen, .sampling = sampler_params_default(),
                        .ignore_eos = true, .stream = true, .window = window, .n_keep = N_KEEP, .n_discard = n_discard,
                        .new_session = new_session, .session = session, .emit = on_event, .check = bench_never_cancelled,
                        .user = b };
    b->n = 0;
    b->done = false;
    b->t_submit = ifn_seconds();
    ifn_status st = scheduler_submit(s, &r);
    if (st != IFN_OK) {
        free(ids);
        return st;
    }
    while (st == IFN_OK && !b->done) st = scheduler_step(s, 0);
    return st;
}

static double mean_interval(const double *t, int from, int to)
{
    return to > from ? (t[to] - t[from]) / (to - from) : 0.0;
}

static void prompt_ids(int32_t *ids, int n, int vocab, uint64_t salt)
{
    for (int j = 0; j < n; j++) ids[j] = (int32_t)((salt * 2654435761u + (uint64_t)j * 40503u) % (uint64_t)vocab);
}

typedef struct {
    int ctx, mult[BENCH_MAX_LIST], n_mult, history, turn_prompt, gen;
    char title[160];
} kv_bench;

static ifn_status run_bench(engine *e, void *arg)
{
    const kv_bench *a = arg;
    const int ctx = a->ctx, *mult = a->mult, n_mult = a->n_mult, history = a->history, turn_prompt = a->turn_prompt,
              gen = a->gen;
    printf("%s\n\n", a->title);
    fflush(stdout);
    const int vocab = engine_config(e)->vocab_size, n_discard = (ctx - N_KEEP) / 2;
    int longest = 0;
    for (int i = 0; i < n_mult; i++)
        if (mult[i] * ctx > longest) longest = mult[i] * ctx;
    sched_limits lim = { .max_queue = 4, .max_step_tokens = engine_n_batch(e), .prefill_chunk = engine_n_batch(e) };
    scheduler *s;
    CHECK(scheduler_create(e, NULL, NULL, &lim, &s));
    int marks[BENCH_MAX_LIST];
    for (int i = 0; i < n_mult; i++) marks[i] = mult[i] * ctx;
    const int cap = longest > history + gen + turn_prompt ? longest : history + gen + turn_prompt;
    bench_req b = { .t = malloc((size_t)cap * sizeof *b.t), .ids = malloc((size_t)cap * sizeof *b.ids), .cap = cap,
                    .marks = marks, .n_marks = n_mult, .rss_mib = calloc((size_t)n_mult, sizeof(double)) };
    int32_t *conv = malloc((size_t)cap * sizeof *conv); /* the conversation of the session part */
    ifn_status st = b.t && b.ids && b.rss_mib && conv ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory");

    int32_t start[16];
    prompt_ids(start, 16, vocab, 1);
    if (st == IFN_OK) st = run_request(s, start, 16, 8, ctx, n_discard, false, NULL, &b); /* warm-up */
    if (st == IFN_OK) st = run_request(s, start, 16, longest, ctx, n_discard, false, NULL, &b);
    if (st == IFN_OK) {
        printf("Long generation: one request, %d tokens in a ring of %d positions (n_keep %d, n_discard %d)\n\n", longest,
               ctx, N_KEEP, n_discard);
        printf("| generated | x ctx | TPOT over the last %d tokens | vs 1x | resident MiB (rank 0) |\n", ctx);
        printf("|---:|---:|---:|---:|---:|\n");
        double base = 0;
        for (int i = 0; i < n_mult; i++) {
            const int end = marks[i] - 1, from = end - ctx + 1 > 0 ? end - ctx + 1 : 0;
            double tpot = mean_interval(b.t, from, end);
            if (i == 0) base = tpot;
            printf("| %d | %d | %.2f ms | %.2fx | %.1f |\n", marks[i], mult[i], 1e3 * tpot, base > 0 ? tpot / base : 0,
                   b.rss_mib[i]);
        }
        printf("\nring discards during the request: %d\n\n", b.discards);
        fflush(stdout);
    }

    /* Sessions: turn 1, turn 2 on the session, then the whole conversation without it. */
    b.n_marks = 0;
    int n_conv = history;
    prompt_ids(conv, history, vocab, 2);
    if (st == IFN_OK) st = run_request(s, conv, history, gen, ctx, 0, true, NULL, &b);
    char session[SCHED_SESSION_ID_LEN + 1];
    snprintf(session, sizeof session, "%s", b.session);
    if (st == IFN_OK) {
        memcpy(conv + n_conv, b.ids, (size_t)b.n * sizeof *conv);
        n_conv += b.n;
        prompt_ids(conv + n_conv, turn_prompt, vocab, 3);
        st = run_request(s, conv + n_conv, turn_prompt, gen, ctx, 0, false, session, &b);
        n_conv += turn_prompt;
    }
    double ttft_session = b.ttft;
    if (st == IFN_OK) st = scheduler_delete_session(s, session);
    if (st == IFN_OK) st = run_request(s, conv, n_conv, gen, ctx, 0, false, NULL, &b);
    if (st == IFN_OK) {
        printf("Follow-up turn: %d new prompt tokens after a conversation of %d\n\n", turn_prompt, n_conv - turn_prompt);
        printf("| turn 2 | prompt tokens evaluated | TTFT | vs re-prefill |\n|---|---:|---:|---:|\n");
        printf("| on the session | %d | %.1f ms | %.3fx |\n", turn_prompt + 1, 1e3 * ttft_session,
               ttft_session / b.ttft);
        printf("| whole conversation again | %d | %.1f ms | 1x |\n", n_conv, 1e3 * b.ttft);
    }
    free(b.t);
    free(b.ids);
    free(b.rss_mib);
    free(conv);
    scheduler_destroy(s);
    return st;
}

int bench_kv(comm *c, int argc, char **argv)
{
    static const struct option opts[] = { { "shape", required_argument, 0, 's' },  { "quant", required_argument, 0, 'q' },
                                          { "layers", required_argument, 0, 'l' }, { "ctx", required_argument, 0, 'c' },
                                          { "multiples", required_argument, 0, 'm' }, { "kv-type", required_argument, 0, 'k' },
                                          { "history", required_argument, 0, 'H' }, { "turn-prompt", required_argument, 0, 'p' },
                                          { "gen", required_argument, 0, 'g' },    { "help", no_argument, 0, 'h' },
                                          { 0, 0, 0, 0 } };
    const char *shape_name = "tinyllama", *quant = "w4a8-g128";
    int ctx = 256, mult[BENCH_MAX_LIST] = { 1, 4, 10 }, n_mult = 3, layers = 0, history = 0, turn_prompt = 32, gen = 32;
    ifn_kv_type kv_type = IFN_KV_F16;
    bool talk = comm_rank(c) == 0;
    optind = 1;
    opterr = 0;
    int ch, li;
    char ctx_expect[48];
    while ((li = -1, ch = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = "an integer in 1..65536"; /* what a refused value should have been */
        switch (ch) {
        case 's': shape_name = optarg; break;
        case 'q': quant = optarg; break;
        case 'l':
            ok = cli_parse_int(optarg, 1, 1024, &layers);
            expect = "an integer in 1..1024";
            break;
        case 'c':
            ok = cli_parse_int(optarg, 2 * N_KEEP + 2, 1 << 16, &ctx);
            snprintf(ctx_expect, sizeof ctx_expect, "an integer in %d..65536", 2 * N_KEEP + 2);
            expect = ctx_expect;
            break;
        case 'm':
            ok = bench_parse_list(optarg, 1, 1000, mult, &n_mult);
            expect = "a comma-separated list of integers in 1..1000";
            break;
        case 'H': ok = cli_parse_int(optarg, 1, 1 << 16, &history); break;
        case 'p': ok = cli_parse_int(optarg, 1, 1 << 16, &turn_prompt); break;
        case 'g': ok = cli_parse_int(optarg, 1, 1 << 16, &gen); break;
        case 'k':
            ok = cli_parse_kv_type(optarg, &kv_type);
            expect = "f16, bf16 or f32";
            break;
        case 'h':
            if (talk)
                printf("usage: infernode bench kv [--shape tinyllama|llama7b|codellama34b] [--layers N] [--quant Q]\n"
                       "                          [--kv-type f16|bf16|f32] [--ctx 256] [--multiples 1,4,10]\n"
                       "                          [--history CTX/2] [--turn-prompt 32] [--gen 32]\n"
                       "TPOT and resident memory while one request generates multiples of its KV ring,\n"
                       "and a session's follow-up TTFT against sending the whole conversation again.\n");
            return 0;
        default:
            if (talk)
                fprintf(stderr, "infernode: error: bench kv: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (!ok) return talk ? cli_bad_value(opts, li, ch, optarg, expect) : CLI_EXIT_USAGE;
    }
    if (!history) history = ctx / 2;
    if (history + 2 * gen + turn_prompt > ctx) {
        if (talk) fprintf(stderr, "infernode: error: bench kv: --history %d, two replies of --gen %d and --turn-prompt %d "
                          "do not fit --ctx %d\n", history, gen, turn_prompt, ctx);
        return CLI_EXIT_USAGE;
    }
    const model_shape *shape = bench_shape(shape_name);
    if (!shape) {
        if (talk) fprintf(stderr, "infernode: error: --shape %s is not one of tinyllama, llama7b, codellama34b\n", shape_name);
        return CLI_EXIT_USAGE;
    }
    model_config cfg = shape->cfg;
    if (layers) cfg.n_layers = layers;
    engine_params ep = { .random_shape = &cfg, .quant = quant, .ctx_size = ctx, .kv_type = kv_type, .n_batch = ctx,
                         .n_slots = 2 };
    kv_bench a = { .ctx = ctx, .n_mult = n_mult, .history = history, .turn_prompt = turn_prompt, .gen = gen };
    memcpy(a.mult, mult, sizeof mult);
    snprintf(a.title, sizeof a.title, "%s%s, %s, KV %s, %d rank(s), greedy", shape->label, layers ? " (cut)" : "", quant,
             ifn_kv_type_name(kv_type), comm_world(c));
    return bench_with_engine(c, &ep, run_bench, &a, "bench kv");
}
