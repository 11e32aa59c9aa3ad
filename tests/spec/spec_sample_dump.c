/* Test driver: many seeded requests through the scheduler in one process, with speculative
 * decoding off, from a draft model, or from prompt lookup, and the ids each one generated,
 * for test_spec_sampling.py to compare the token frequencies of the modes.
 *
 *   spec_sample_dump --model PATH [options]
 *
 * Request i (0 <= i < --count) samples with seed --seed + i; its prompt is --prompt, then
 * --vary-prompt ids drawn from that seed (so that greedy requests see different contexts).
 * At most --slots requests are in flight: a finished one is replaced before the next step,
 * so every step is as full as the slots allow. Every request must end by length after exactly
 * --gen tokens (end of generation is ignored).
 *
 * Output (stdout): per request, in seed order,
 *   ids SEED T1 .. T_gen
 * then one line of totals over the requests' last events
 *   totals requests N proposed P accepted A spec_steps S
 * Exit 0 on success, 1 on a failure (the detail on stderr), 2 on bad arguments. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "engine.h"
#include "scheduler.h"
#include "speculative.h"

#define MAX_PROMPT 256

typedef struct {
    const char *model, *draft;
    sched_spec_mode mode;
    int max_draft;
    bool fixed_k;
    uint64_t seed;
    int count, gen, vary_prompt;
    int32_t prompt[MAX_PROMPT];
    int n_prompt;
    sampler_params sampling;
    int slots, ctx, batch, prefill_chunk;
} options;

/* What one request got back. */
typedef struct {
    int32_t *ids; /* [gen] */
    int n_ids, gen;
    bool overflow; /* more ids than asked for */
    bool done;
    sched_finish finish;
    int proposed, accepted, spec_steps;
} outcome;

static void on_event(void *user, const sched_event *ev)
{
    outcome *o = user;
    for (int i = 0; i < ev->n_ids; i++) {
        if (o->n_ids == o->gen) {
            o->overflow = true;
            break;
        }
        o->ids[o->n_ids++] = ev->ids[i];
    }
    if (ev->finish == SCHED_RUNNING) return;
    o->done = true;
    o->finish = ev->finish;
    o->proposed = ev->draft_proposed;
    o->accepted = ev->draft_accepted;
    o->spec_steps = ev->spec_steps;
}

static sched_finish never_cancelled(void *user) { return SCHED_RUNNING; }

/* splitmix64, for the varied prompt ids (any deterministic choice would do). */
static uint64_t mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Submits request i: the prompt (malloc'd, the scheduler's once submitted), the sampling with
 * its own seed, a ring that never drops entries (the prompt and the ids fit the window). */
static ifn_status submit(scheduler *s, const engine *e, const options *o, int i, outcome *out)
{
    const int n = o->n_prompt + o->vary_prompt, vocab = engine_config(e)->vocab_size;
    int32_t *prompt = malloc((size_t)n * sizeof *prompt);
    if (!prompt) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a prompt of %d ids", n);
    memcpy(prompt, o->prompt, (size_t)o->n_prompt * sizeof *prompt);
    /* The sampler runs splitmix64 from the seed itself: start elsewhere on the sequence, so that
     * the prompt's ids are not the sampler's first numbers. */
    uint64_t state = (o->seed + (uint64_t)i) ^ 0x5851f42d4c957f2dull;
    for (int j = o->n_prompt; j < n; j++) prompt[j] = (int32_t)(mix(&state) % (uint64_t)vocab);
    sched_request r = { .prompt = prompt, .n_prompt = n, .max_new_tokens = o->gen, .sampling = o->sampling,
                        .ignore_eos = true, .window = engine_ctx_size(e), .emit = on_event, .check = never_cancelled,
                        .user = out };
    r.sampling.seed = o->seed + (uint64_t)i;
    ifn_status st = scheduler_submit(s, &r);
    if (st != IFN_OK) free(prompt);
    return st;
}

/* Every request through one scheduler, at most o->slots in flight. */
static ifn_status serve_all(engine *e, engine *draft, const options *o, outcome *res)
{
    sched_limits lim = { .max_queue = o->slots, .max_step_tokens = engine_n_batch(e), .prefill_chunk = o->prefill_chunk,
                         .max_running = o->slots,
                         .spec = { .mode = o->mode, .draft = draft,
                                   .max_draft = o->mode == SCHED_SPEC_OFF ? 0 : o->max_draft, .fixed = o->fixed_k } };
    scheduler *s;
    CHECK(scheduler_create(e, NULL, NULL, &lim, &s));
    ifn_status st = IFN_OK;
    int next = 0;
    while (st == IFN_OK) {
        /* Replacements go in before the step: it admits them into the slots just freed. */
        for (; st == IFN_OK && next < o->count && scheduler_pending(s) < o->slots; next++)
            st = submit(s, e, o, next, &res[next]);
        if (st != IFN_OK || scheduler_pending(s) == 0) break;
        st = scheduler_step(s, 0);
    }
    scheduler_destroy(s);
    CHECK(st);
    for (int i = 0; i < o->count; i++) {
        const outcome *r = &res[i];
        if (!r->done || r->finish != SCHED_LENGTH || r->n_ids != o->gen || r->overflow)
            return ifn_error_set(IFN_ERR_INTERNAL, "request %d (seed %llu) %s with %d%s ids, not by length after %d",
                                 i, (unsigned long long)(o->seed + (uint64_t)i), r->done ? "ended" : "never ended",
                                 r->n_ids, r->overflow ? "+" : "", o->gen);
    }
    return IFN_OK;
}

static void print_results(const options *o, const outcome *res)
{
    long long proposed = 0, accepted = 0, spec_steps = 0;
    for (int i = 0; i < o->count; i++) {
        printf("ids %llu", (unsigned long long)(o->seed + (uint64_t)i));
        for (int j = 0; j < res[i].n_ids; j++) printf(" %d", res[i].ids[j]);
        putchar('\n');
        proposed += res[i].proposed;
        accepted += res[i].accepted;
        spec_steps += res[i].spec_steps;
    }
    printf("totals requests %d proposed %lld accepted %lld spec_steps %lld\n", o->count, proposed, accepted, spec_steps);
}

/* The engines (the draft's on a world of this process alone, as the server makes it), the
 * requests, the output. */
static ifn_status run(comm *c, const options *o)
{
    engine_params tp = { .model_path = o->model, .ctx_size = o->ctx, .n_batch = o->batch, .n_slots = o->slots,
                         .kv_type = IFN_KV_F32 };
    engine *e = NULL, *d = NULL;
    comm *dc = NULL;
    outcome *res = NULL;
    int32_t *ids = NULL;
    ifn_status st;
    CHECK_GOTO(engine_create(c, &tp, &e), st, done);
    if (o->mode == SCHED_SPEC_DRAFT) {
        engine_params dp = tp;
        dp.model_path = o->draft;
        CHECK_GOTO(comm_create_self(c, &dc), st, done);
        CHECK_GOTO(engine_create(dc, &dp, &d), st, done);
    }
    const int vocab = engine_config(e)->vocab_size;
    for (int i = 0; i < o->n_prompt; i++)
        if (o->prompt[i] >= vocab) {
            st = ifn_error_set(IFN_ERR_INVALID_ARG, "--prompt: id %d is outside the vocabulary of %d", o->prompt[i], vocab);
            goto done;
        }
    if (o->n_prompt + o->vary_prompt + o->gen - 1 > engine_ctx_size(e)) { /* the last id is never evaluated */
        st = ifn_error_set(IFN_ERR_INVALID_ARG, "--prompt, --vary-prompt and --gen: %d + %d + %d - 1 ids do not fit --ctx %d",
                           o->n_prompt, o->vary_prompt, o->gen, engine_ctx_size(e));
        goto done;
    }
    res = calloc((size_t)o->count, sizeof *res);
    ids = malloc((size_t)o->count * (size_t)o->gen * sizeof *ids);
    if (!res || !ids) {
        st = ifn_error_set(IFN_ERR_NOMEM, "no memory for %d requests of %d ids", o->count, o->gen);
        goto done;
    }
    for (int i = 0; i < o->count; i++) res[i] = (outcome){ .ids = ids + (size_t)i * (size_t)o->gen, .gen = o->gen };
    CHECK_GOTO(serve_all(e, d, o, res), st, done);
    print_results(o, res);
    st = fflush(stdout) == 0 ? IFN_OK : ifn_error_set(IFN_ERR_IO, "cannot write the output: %s", strerror(errno));
done:
    free(ids);
    free(res);
    engine_destroy(d);
    comm_finalize(dc);
    engine_destroy(e); /* a world of one: no other rank waits in engine_serve for a stop */
    return st;
}

/* ---------------------------------------------------------------- arguments */

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_int(const char *s, int lo, int hi, int *out)
{
    long v;
    if (!parse_long(s, lo, hi, &v)) return false;
    *out = (int)v;
    return true;
}

static bool parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end != '\0') return false;
    *out = v;
    return true;
}

/* "1,461,401": at least one id, each >= 0 (the vocabulary is checked once the model is open). */
static bool parse_prompt(const char *s, options *o)
{
    o->n_prompt = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || (*end && (*end != ',' || !end[1])) || o->n_prompt == MAX_PROMPT)
            return false;
        o->prompt[o->n_prompt++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    return o->n_prompt > 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: spec_sample_dump --model PATH [--spec off|draft|ngram] [--draft PATH] [--max-draft K]\n"
               "       [--fixed-k (propose K every step instead of adapting it)]\n"
               "       [--seed FIRST] [--count N] [--prompt 1,461,401] [--vary-prompt N] [--gen T]\n"
               "       [--temp F] [--top-k N] [--top-p F] [--min-p F] [--repeat-penalty F] [--repeat-last-n N]\n"
               "       [--slots N] [--ctx N] [--batch N] [--prefill-chunk N]\n"
               "N seeded requests (seeds FIRST..FIRST+N-1) through the scheduler; prints each one's ids and the\n"
               "speculation totals. --draft is required with --spec draft and refused otherwise.\n");
}

/* 0: parsed; 2: a usage error (reported); -1: --help. */
static int parse_args(int argc, char **argv, options *o)
{
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },       { "draft", required_argument, 0, 'd' },
        { "spec", required_argument, 0, 'S' },        { "max-draft", required_argument, 0, 'K' },
        { "seed", required_argument, 0, 's' },        { "count", required_argument, 0, 'n' },
        { "prompt", required_argument, 0, 'p' },      { "vary-prompt", required_argument, 0, 'v' },
        { "gen", required_argument, 0, 'g' },         { "temp", required_argument, 0, 't' },
        { "top-k", required_argument, 0, 'k' },       { "top-p", required_argument, 0, 'P' },
        { "min-p", required_argument, 0, 'M' },       { "repeat-penalty", required_argument, 0, 'r' },
        { "repeat-last-n", required_argument, 0, 'R' }, { "slots", required_argument, 0, 'l' },
        { "ctx", required_argument, 0, 'c' },         { "batch", required_argument, 0, 'b' },
        { "prefill-chunk", required_argument, 0, 'C' }, { "help", no_argument, 0, 'h' },
        { "fixed-k", no_argument, 0, 'F' },
        { 0, 0, 0, 0 },
    };
    *o = (options){ .mode = SCHED_SPEC_OFF, .max_draft = 4, .count = 1000, .gen = 8, .prompt = { 1 }, .n_prompt = 1,
                    .sampling = sampler_params_default(), .slots = 32, .ctx = 64, .batch = 512, .prefill_chunk = 64 };
    o->sampling.temperature = 1.0f;
    long seed = 0;
    opterr = 0;
    int ch, which = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, &which)) != -1) {
        bool ok = true;
        switch (ch) {
        case 'm': o->model = optarg; break;
        case 'd': o->draft = optarg; break;
        case 'S':
            if (strcmp(optarg, "off") == 0) o->mode = SCHED_SPEC_OFF;
            else if (strcmp(optarg, "draft") == 0) o->mode = SCHED_SPEC_DRAFT;
            else if (strcmp(optarg, "ngram") == 0) o->mode = SCHED_SPEC_NGRAM;
            else ok = false;
            break;
        case 'K': ok = parse_int(optarg, 1, SPEC_MAX_DRAFT, &o->max_draft); break;
        case 'F': o->fixed_k = true; break;
        case 's': ok = parse_long(optarg, 0, 1L << 62, &seed); break;
        case 'n': ok = parse_int(optarg, 1, 10000000, &o->count); break;
        case 'p': ok = parse_prompt(optarg, o); break;
        case 'v': ok = parse_int(optarg, 0, 4096, &o->vary_prompt); break;
        case 'g': ok = parse_int(optarg, 1, 4096, &o->gen); break;
        case 't': ok = parse_float(optarg, &o->sampling.temperature); break;
        case 'k': ok = parse_int(optarg, 0, 1 << 20, &o->sampling.top_k); break;
        case 'P': ok = parse_float(optarg, &o->sampling.top_p); break;
        case 'M': ok = parse_float(optarg, &o->sampling.min_p); break;
        case 'r': ok = parse_float(optarg, &o->sampling.repeat_penalty); break;
        case 'R': ok = parse_int(optarg, 0, 1 << 20, &o->sampling.repeat_last_n); break;
        case 'l': ok = parse_int(optarg, 1, 1024, &o->slots); break;
        case 'c': ok = parse_int(optarg, 1, 1 << 16, &o->ctx); break;
        case 'b': ok = parse_int(optarg, 1, 1 << 20, &o->batch); break;
        case 'C': ok = parse_int(optarg, 1, 1 << 20, &o->prefill_chunk); break;
        case 'h': return -1;
        default: ok = false;
        }
        if (!ok) {
            if (ch == '?')
                fprintf(stderr, "spec_sample_dump: error: unknown option or missing value: '%s'\n", argv[optind - 1]);
            else
                fprintf(stderr, "spec_sample_dump: error: --%s: bad value '%s'\n", opts[which].name, optarg);
            usage(stderr);
            return 2;
        }
    }
    o->seed = (uint64_t)seed;
    const char *problem = NULL;
    if (optind < argc) problem = "unexpected argument";
    else if (!o->model) problem = "--model is required";
    else if (o->mode == SCHED_SPEC_DRAFT && !o->draft) problem = "--spec draft needs --draft PATH";
    else if (o->mode != SCHED_SPEC_DRAFT && o->draft) problem = "--draft is only for --spec draft";
    else if (sampler_params_validate(&o->sampling) != IFN_OK) problem = ifn_error_detail();
    if (problem) {
        fprintf(stderr, "spec_sample_dump: error: %s%s%s\n", problem, optind < argc ? " " : "",
                optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc == -1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0) return rc;
    comm *c;
    if (comm_init(&argc, &argv, &c) != IFN_OK) {
        fprintf(stderr, "spec_sample_dump: error: %s\n", ifn_error_detail());
        return 1;
    }
    if (comm_world(c) != 1) {
        fprintf(stderr, "spec_sample_dump: error: runs as one process (started with %d ranks)\n", comm_world(c));
        comm_finalize(c);
        return 2;
    }
    ifn_status st = run(c, &o);
    if (st != IFN_OK) fprintf(stderr, "spec_sample_dump: error: %s: %s\n", ifn_status_str(st), ifn_error_detail());
    comm_finalize(c);
    return st == IFN_OK ? 0 : 1;
}
