/* infernode bench spec: what speculative decoding buys on code completion, through the
 * scheduler as 'infernode serve' runs it (gRPC left out), with the project's trained target
 * and draft models over every rank of the launch (the draft on rank 0 only, as in serve).
 *
 * Every prompt (a built-in set of short Python completions, or --prompts) generates --gen
 * tokens, end-of-generation ignored, with speculation off, by prompt lookup (ngram) and with
 * the draft model, at each --streams concurrency. The modes take turns group by group (one
 * group is as many prompts as streams), each on its own scheduler warmed up once, so that a
 * slow spell of the machine falls on all of them alike. Per mode it prints the mean TPOT over
 * the requests, the speedup TPOT(off) / TPOT(mode), the acceptance rate (accepted / proposed),
 * the mean K (proposed per verification step), the tokens per verification step
 * ((accepted + steps) / steps), and, for greedy decoding, whether every output is the one
 * speculation off gives (it must be: a difference makes the command fail).
 *
 * What bounds the gain: the target's forward step for N sequences of M = 1, 2, 3, 5, 9, 17
 * tokens each (ARGMAX rows for every token, as verification asks) and the draft's step of one
 * token each, relative to the target's of one token, timed in rounds after every group (so
 * under the same conditions as the runs; the medians are reported). From them and the
 * measured proposals, a cost model predicts the speedup: plain steps cost 1, a verification
 * step with mean K costs verify(1 + K) + K draft steps. The TPOT without speculation against
 * the target's step of one token says what the rest of a decode step (sampling,
 * detokenizing, the scheduler) costs. The schedulers plan K from the cost model of
 * spec_cost.h, not from these timings: the plan is printed first (scheduler_spec_describe), and
 * the model's step costs for one sequence under the timed ones, to hold one against the other.
 *
 * A memory-bound target that keeps the shipped model's outputs: tools/bench/widen_ffn.py. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "clock.h"
#include "engine.h"
#include "json.h"
#include "model_tokenizer.h"
#include "machine_profile.h"
#include "scheduler.h"
#include "spec_cost.h"
#include "speculative.h"

/* Short Python code-completion prompts: what an editor sends when the cursor is in a body. */
static const char *const code_prompts[] = {
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    ",
    "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line and run the program.\"\"\"\n    ",
    "class Stack:\n    \"\"\"A last-in, first-out stack of items.\"\"\"\n\n    def __init__(self):\n        ",
    "def read_json(path):\n    \"\"\"Read a JSON file and return its content.\"\"\"\n    with open(path) as f:\n        ",
    "def is_prime(n):\n    if n < 2:\n        return False\n    for i in range(2, n):\n        ",
    "import numpy as np\n\n\ndef normalize(a, axis=None):\n    \"\"\"Scale a so that it sums to one along axis.\"\"\"\n    ",
    "class Point(object):\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n    def __repr__(self):\n"
    "        return ",
    "import unittest\n\n\nclass TestParser(unittest.TestCase):\n\n    def setUp(self):\n        self.parser = ",
    "    def __eq__(self, other):\n        if not isinstance(other, self.__class__):\n            return NotImplemented\n"
    "        return ",
    "try:\n    import threading\nexcept ImportError:\n    ",
    "def walk(top, topdown=True):\n    \"\"\"Directory tree generator.\n\n    For each directory in the tree rooted at top, "
    "yields a 3-tuple\n    ",
    "    @property\n    def name(self):\n        \"\"\"The name of the object.\"\"\"\n        return self.",
    "def flatten(items):\n    result = []\n    for item in items:\n        if isinstance(item, list):\n            ",
    "from collections import namedtuple\n\nToken = namedtuple('Token', ['type', 'value', 'line', 'column'])\n\n\n"
    "def tokenize(text):\n    ",
    "import argparse\n\n\ndef parse_args(args=None):\n    parser = argparse.ArgumentParser(description=__doc__)\n"
    "    parser.add_argument(",
    "    def __iter__(self):\n        for key in self._keys:\n            yield ",
};

#define N_BUILTIN ((int)(sizeof code_prompts / sizeof code_prompts[0]))
#define MAX_PROMPTS 1024
#define N_KEEP 4
#define WARMUP_GEN 32
/* Rounds of step timings per pass over the prompts, spread over its groups. */
#define COST_ROUNDS 128
#define SEED 1234

enum { MODE_OFF, MODE_NGRAM, MODE_DRAFT, N_MODES };
static const char *const mode_name[N_MODES] = { "off", "ngram", "draft" };

/* Tokens per sequence in the timed steps: 1 + K for K = 0, 1, 2, 4, 8, 16. */
#define MAX_M (1 + SPEC_MAX_DRAFT)
static const int cost_m[] = { 1, 2, 3, 5, 9, MAX_M };
#define N_COST_M ((int)(sizeof cost_m / sizeof cost_m[0]))

/* One request's outcome. */
typedef struct {
    int32_t *ids; /* [cap] the generated ids */
    int n, cap;
    double tpot;
    int proposed, accepted, spec_steps;
    sched_finish finish;
} req_out;

/* One mode at one concurrency and sampling. */
typedef struct {
    int streams, mode;
    bool sampled;
    req_out *req;              /* [n_prompts] */
    double tpot;               /* mean over the requests */
    long proposed, accepted, steps, decoded;
    int diff_prompt, diff_at;  /* greedy: the first output that differs from off's, and where (-1: none) */
    double predicted, bound;   /* the cost model's speedup, and with every proposal accepted (0: no verification) */
} run_row;

/* Step seconds for N sequences at once. */
typedef struct {
    double target[N_COST_M]; /* M tokens each: the median */
    double draft;            /* one token each: the median */
    double *sec;             /* [N_COST_M + 1][cap] the rounds' timings: the target's sizes, then the draft's */
    int rounds, cap;
} cost_row;

typedef struct {
    comm *c;
    const char *model_path, *draft_path, *draft_quant, *json_path;
    const char **texts; /* [n_prompts] */
    size_t *lens;
    int n_prompts, gen, max_draft, streams[BENCH_MAX_LIST], n_streams, threads;
    float temp;
} spec_args;

/* Rank 0's state while it leads. */
typedef struct {
    const spec_args *a;
    engine *e, *draft;
    tokenizer *tok;
    int32_t **prompt; /* [n_prompts] with BOS as the tokenizer says */
    int *n_prompt;
    int n_rows;
    long prompt_tokens;
    int cost_pos;     /* positions each sequence holds in the timed steps */
    int32_t *fill;    /* [ctx_size] their tokens: the prompts one after the other */
    run_row *rows;    /* [n_streams][1 or 2 samplings][N_MODES] */
    cost_row *costs;  /* [n_streams] */
    machine_profile profile;         /* what the schedulers plan K with */
    spec_cost_shape target_shape, draft_shape;
    FILE *json;       /* --json, open from the start so that a bad path fails before the runs */
} spec_run;

static void on_event(void *user, const sched_event *ev)
{
    req_out *o = user;
    for (int i = 0; i < ev->n_ids && o->n < o->cap; i++) o->ids[o->n++] = ev->ids[i];
    if (ev->finish == SCHED_RUNNING) return;
    o->finish = ev->finish;
    o->tpot = ev->tpot_seconds;
    o->proposed = ev->draft_proposed;
    o->accepted = ev->draft_accepted;
    o->spec_steps = ev->spec_steps;
}

static const char *const finish_name[] = { [SCHED_RUNNING] = "running", [SCHED_STOP] = "stop sequence",
                                           [SCHED_LENGTH] = "length", [SCHED_EOS] = "end of generation",
                                           [SCHED_CANCELLED] = "cancelled", [SCHED_DEADLINE] = "deadline",
                                           [SCHED_SHUTDOWN] = "shutdown" };

/* Prompts from..to-1 at once on s, gen tokens each, into out[from..to-1]; returns when all ended. */
static ifn_status run_group(const spec_run *x, scheduler *s, const sampler_params *sp, int from, int to, int gen,
                            req_out *out)
{
    const int window = engine_ctx_size(x->e);
    for (int i = from; i < to; i++) {
        int32_t *ids = malloc((size_t)x->n_prompt[i] * sizeof *ids);
        if (!ids) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a prompt");
        memcpy(ids, x->prompt[i], (size_t)x->n_prompt[i] * sizeof *ids);
        sampler_params p = *sp;
        p.seed = SEED + (uint64_t)i;
        out[i].n = 0;
        out[i].finish = SCHED_RUNNING;
        sched_request r = { .prompt = ids, .n_prompt = x->n_prompt[i], .max_new_tokens = gen, .sampling = p,
                            .ignore_eos = true, .window = window, .n_keep = N_KEEP,
                            .n_discard = (window - N_KEEP) / 2, .emit = on_event, .check = bench_never_cancelled,
                            .user = &out[i] };
        ifn_status st = scheduler_submit(s, &r);
        if (st != IFN_OK) {
            free(ids);
            return st;
        }
    }
    while (scheduler_pending(s) > 0) CHECK(scheduler_step(s, 0));
    for (int i = from; i < to; i++)
        if (out[i].finish != SCHED_LENGTH || out[i].n != gen)
            return ifn_error_set(IFN_ERR_INTERNAL, "prompt %d ended after %d of %d tokens (%s)", i, out[i].n, gen,
                                 finish_name[out[i].finish]);
    return IFN_OK;
}

/* One step of n sequences (slots 0..n-1) of m tokens each at position pos, an ARGMAX row per
 * token, timed. */
static ifn_status timed_step(engine *e, int n, int m, int pos, const int32_t *fill, int32_t *ids, double *seconds)
{
    engine_seq seqs[BENCH_MAX_LIST];
    for (int i = 0; i < n; i++)
        seqs[i] = (engine_seq){ .slot = i, .pos0 = pos, .n_tokens = m, .tokens = fill + pos, .n_out = m,
                                .out = { .mode = ENGINE_LOGITS_ARGMAX, .ids = ids + (size_t)i * MAX_M } };
    const double t0 = ifn_seconds();
    CHECK(engine_step(e, seqs, n));
    *seconds = ifn_seconds() - t0;
    return IFN_OK;
}

/* Empties slots 0..n-1 of e and fills each with fill[0..pos). */
static ifn_status prefill(engine *e, int n, int pos, const int32_t *fill)
{
    for (int i = 0; i < n; i++) {
        CHECK(engine_slot_ring(e, i, engine_ctx_size(e), 0));
        for (int done = 0; done < pos;) {
            const int c = pos - done < engine_n_batch(e) ? pos - done : engine_n_batch(e);
            engine_seq pre = { .slot = i, .pos0 = done, .n_tokens = c, .tokens = fill + done,
                               .out = { .mode = ENGINE_LOGITS_NONE } };
            CHECK(engine_step(e, &pre, 1));
            done += c;
        }
    }
    return IFN_OK;
}

/* Appends `rounds` rounds of timings of steps of n sequences that hold x->cost_pos positions
 * to c: in each, the target's step for every size of cost_m in turn (that of one token after an
 * untimed one, as plain decoding runs them) and the draft's of one token right after the
 * target's of one (as proposals follow a verification). */
static ifn_status time_costs(const spec_run *x, int n, int rounds, cost_row *c)
{
    const int pos = x->cost_pos;
    CHECK(prefill(x->e, n, pos, x->fill));
    CHECK(prefill(x->draft, n, pos, x->fill));
    int32_t ids[BENCH_MAX_LIST * MAX_M];
    double t;
    for (int j = 0; j < N_COST_M; j++) CHECK(timed_step(x->e, n, cost_m[j], pos, x->fill, ids, &t)); /* warm-up */
    CHECK(timed_step(x->draft, n, 1, pos, x->fill, ids, &t));
    for (int r = 0; r < rounds && c->rounds < c->cap; r++, c->rounds++)
        for (int j = 0; j < N_COST_M; j++) {
            if (j == 0) CHECK(timed_step(x->e, n, 1, pos, x->fill, ids, &t));
            CHECK(timed_step(x->e, n, cost_m[j], pos, x->fill, ids, &c->sec[j * c->cap + c->rounds]));
            if (j == 0) CHECK(timed_step(x->draft, n, 1, pos, x->fill, ids, &c->sec[N_COST_M * c->cap + c->rounds]));
        }
    return IFN_OK;
}

/* The medians of c's rounds. */
static void cost_medians(cost_row *c)
{
    for (int j = 0; j <= N_COST_M; j++) {
        double *v = c->sec + j * c->cap;
        qsort(v, (size_t)c->rounds, sizeof *v, bench_cmp_double);
        if (j < N_COST_M) c->target[j] = v[c->rounds / 2];
        else c->draft = v[c->rounds / 2];
    }
}

/* The three modes at one concurrency and sampling: a scheduler each, warmed up, then group
 * by group in turn, each group followed by rounds of step timings into c. */
static ifn_status run_modes(spec_run *x, int streams, const sampler_params *sp, run_row *rows, cost_row *c)
{
    const spec_args *a = x->a;
    const sched_spec spec[N_MODES] = {
        { .mode = SCHED_SPEC_OFF },
        { .mode = SCHED_SPEC_NGRAM, .max_draft = a->max_draft },
        { .mode = SCHED_SPEC_DRAFT, .draft = x->draft, .max_draft = a->max_draft },
    };
    scheduler *s[N_MODES] = { 0 };
    int32_t warm_ids[WARMUP_GEN];
    req_out warm = { .ids = warm_ids, .cap = WARMUP_GEN };
    const int warm_gen = a->gen < WARMUP_GEN ? a->gen : WARMUP_GEN;
    ifn_status st = IFN_OK;
    for (int m = 0; m < N_MODES && st == IFN_OK; m++) {
        sched_limits lim = { .max_queue = streams, .max_step_tokens = engine_n_batch(x->e),
                             .prefill_chunk = engine_n_batch(x->e), .max_running = streams, .spec = spec[m] };
        st = scheduler_create(x->e, x->tok, NULL, &lim, &s[m]);
        if (st == IFN_OK && m != MODE_OFF && streams == a->streams[0] && sp->temperature == 0.0f) {
            char plan[1024];
            scheduler_spec_describe(s[m], plan, sizeof plan);
            printf("K plan, %s: %s\n\n", mode_name[m], plan);
            fflush(stdout);
        }
        if (st == IFN_OK) st = run_group(x, s[m], sp, 0, 1, warm_gen, &warm);
    }
    const int groups = (a->n_prompts + streams - 1) / streams, rounds = (COST_ROUNDS + groups - 1) / groups;
    for (int from = 0; from < a->n_prompts && st == IFN_OK; from += streams) {
        const int to = from + streams < a->n_prompts ? from + streams : a->n_prompts;
        for (int m = 0; m < N_MODES && st == IFN_OK; m++) st = run_group(x, s[m], sp, from, to, a->gen, rows[m].req);
        if (st == IFN_OK) st = time_costs(x, streams, rounds, c);
    }
    for (int m = 0; m < N_MODES; m++) scheduler_destroy(s[m]);
    return st;
}

/* The target's relative step cost at 1 + k tokens per sequence (k real): linear between the
 * timed sizes. */
static double verify_cost(const cost_row *c, double m)
{
    int j = 1;
    while (j < N_COST_M - 1 && cost_m[j] < m) j++;
    const double m0 = cost_m[j - 1], m1 = cost_m[j], y0 = c->target[j - 1], y1 = c->target[j];
    return (y0 + (y1 - y0) * (m - m0) / (m1 - m0)) / c->target[0];
}

/* Totals, the comparison with off's output and the cost model's figures of one mode's row. */
static void row_figures(const spec_run *x, run_row *row, const run_row *off, const cost_row *c)
{
    const int n = x->a->n_prompts;
    row->tpot = 0;
    row->proposed = row->accepted = row->steps = row->decoded = 0;
    row->diff_prompt = row->diff_at = -1;
    for (int i = 0; i < n; i++) {
        const req_out *q = &row->req[i];
        row->tpot += q->tpot / n;
        row->proposed += q->proposed;
        row->accepted += q->accepted;
        row->steps += q->spec_steps;
        row->decoded += q->n - 1;
        for (int j = 0; !row->sampled && row->diff_prompt < 0 && j < q->n; j++)
            if (q->ids[j] != off->req[i].ids[j]) {
                row->diff_prompt = i;
                row->diff_at = j;
            }
    }
    row->predicted = 1.0;
    row->bound = 0.0;
    if (row->steps == 0) return;
    const double k = (double)row->proposed / row->steps;
    const double draft = row->mode == MODE_DRAFT ? c->draft / c->target[0] : 0.0;
    const double spec_step = verify_cost(c, 1.0 + k) + k * draft;
    const double plain = (double)(row->decoded - row->accepted - row->steps);
    row->predicted = row->decoded / (plain + row->steps * spec_step);
    row->bound = (1.0 + k) / spec_step;
}

/* The step costs measured at row r's concurrency. */
static const cost_row *costs_of(const spec_run *x, int r)
{
    return &x->costs[r / (N_MODES * (x->a->temp > 0 ? 2 : 1))];
}

static void sampling_label(const spec_run *x, const run_row *w, char *buf, size_t cap)
{
    if (w->sampled) snprintf(buf, cap, "T=%.2g", (double)x->a->temp);
    else snprintf(buf, cap, "greedy");
}

static void print_rows(const spec_run *x)
{
    printf("| streams | sampling | mode | TPOT | speedup | acceptance | mean K | tokens/verification | greedy output |\n");
    printf("|---:|---|---|---:|---:|---:|---:|---:|---|\n");
    for (int r = 0; r < x->n_rows; r++) {
        const run_row *w = &x->rows[r], *off = &x->rows[r - w->mode];
        char samp[32], acc[32] = "-", k[32] = "-", tps[32] = "-", out[96] = "-";
        sampling_label(x, w, samp, sizeof samp);
        if (w->proposed > 0) snprintf(acc, sizeof acc, "%.1f%%", 100.0 * w->accepted / w->proposed);
        if (w->steps > 0) {
            snprintf(k, sizeof k, "%.2f", (double)w->proposed / w->steps);
            snprintf(tps, sizeof tps, "%.2f", (double)(w->accepted + w->steps) / w->steps);
        }
        if (w->mode != MODE_OFF && !w->sampled) {
            if (w->diff_prompt < 0) snprintf(out, sizeof out, "identical");
            else snprintf(out, sizeof out, "DIFFERS: prompt %d, token %d", w->diff_prompt, w->diff_at);
        }
        printf("| %d | %s | %s | %.3f ms | %.2fx | %s | %s | %s | %s |\n", w->streams, samp, mode_name[w->mode],
               1e3 * w->tpot, w->tpot > 0 ? off->tpot / w->tpot : 0.0, acc, k, tps, out);
    }
}

static void print_costs(const spec_run *x)
{
    const spec_args *a = x->a;
    printf("\nStep costs: N sequences holding %d positions each, M tokens each (an argmax row per token, as "
           "verification asks), relative to the target's step of 1 token; medians of rounds timed after every group "
           "of the runs\n\n", x->cost_pos);
    printf("| streams N | rounds | target M=1 |");
    for (int j = 1; j < N_COST_M; j++) printf(" M=%d |", cost_m[j]);
    printf(" draft M=1 |\n|---:|---:|---:|");
    for (int j = 1; j < N_COST_M; j++) printf("---:|");
    printf("---:|\n");
    for (int i = 0; i < a->n_streams; i++) {
        const cost_row *c = &x->costs[i];
        printf("| %d | %d | %.3f ms |", a->streams[i], c->rounds, 1e3 * c->target[0]);
        for (int j = 1; j < N_COST_M; j++) printf(" %.2fx |", c->target[j] / c->target[0]);
        printf(" %.2fx (%.3f ms) |\n", c->draft / c->target[0], 1e3 * c->draft);
    }
    /* what the schedulers plan K with, for one sequence: the cost model, not these timings */
    const double t1 = spec_cost_step(&x->profile, &x->target_shape, 1);
    printf("| 1, cost model | - | %.3f ms |", 1e3 * t1);
    for (int j = 1; j < N_COST_M; j++) printf(" %.2fx |", spec_cost_step(&x->profile, &x->target_shape, cost_m[j]) / t1);
    const double td = spec_cost_step(&x->profile, &x->draft_shape, 1);
    printf(" %.2fx (%.3f ms) |\n", td / t1, 1e3 * td);
}

static void print_limits(const spec_run *x)
{
    printf("\nWhat bounds it (cost model of the forward steps alone: a plain step costs 1, a verification step "
           "verify(1 + K) + K x draft):\n\n");
    printf("| streams | sampling | mode | mean K | verify 1+K | K draft steps | tokens/verification | predicted | "
           "at 100%% acceptance | measured |\n");
    printf("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int r = 0; r < x->n_rows; r++) {
        const run_row *w = &x->rows[r], *off = &x->rows[r - w->mode];
        if (w->mode == MODE_OFF || w->steps == 0) continue;
        const cost_row *c = costs_of(x, r);
        const double k = (double)w->proposed / w->steps;
        char samp[32], drafting[32] = "-";
        sampling_label(x, w, samp, sizeof samp);
        if (w->mode == MODE_DRAFT) snprintf(drafting, sizeof drafting, "%.2fx", k * c->draft / c->target[0]);
        printf("| %d | %s | %s | %.2f | %.2fx | %s | %.2f | %.2fx | %.2fx | %.2fx |\n", w->streams, samp,
               mode_name[w->mode], k, verify_cost(c, 1.0 + k), drafting, (double)(w->accepted + w->steps) / w->steps,
               w->predicted, w->bound, off->tpot / w->tpot);
    }
    printf("\n");
    for (int r = 0; r < x->n_rows; r++) {
        const run_row *w = &x->rows[r], *off = &x->rows[r - w->mode];
        const cost_row *c = costs_of(x, r);
        char samp[32];
        sampling_label(x, w, samp, sizeof samp);
        if (w->mode == MODE_OFF)
            printf("off, %s, %d stream(s): TPOT %.3f ms, %.2fx the target's step of 1 token (%.3f ms): the rest of a "
                   "decode step (sampling, detokenizing, scheduling) %+.3f ms per token.\n", samp,
                   w->streams, 1e3 * w->tpot, w->tpot / c->target[0], 1e3 * c->target[0], 1e3 * (w->tpot - c->target[0]));
        if (w->mode != MODE_DRAFT || w->steps == 0) continue;
        const double k = (double)w->proposed / w->steps;
        printf("draft, %s, %d stream(s): %.2fx TPOT measured, %.2fx predicted. Verifying 1+K = %.1f tokens costs %.2fx "
               "a 1-token step and a draft step %.2fx; %.1f%% of proposals accepted, %.2f tokens per verification; "
               "with every proposal accepted this K would give %.2fx.\n", samp, w->streams, off->tpot / w->tpot,
               w->predicted, 1.0 + k, verify_cost(c, 1.0 + k), c->draft / c->target[0],
               100.0 * w->accepted / w->proposed, (double)(w->accepted + w->steps) / w->steps, w->bound);
    }
}

/* Writes the figures to x->json and closes it. */
static ifn_status write_json(spec_run *x)
{
    const spec_args *a = x->a;
    FILE *f = x->json;
    x->json = NULL;
    fprintf(f, "{\"target\": ");
    cli_json_string(f, a->model_path);
    fprintf(f, ", \"target_quant\": ");
    cli_json_string(f, engine_quant_desc(x->e));
    fprintf(f, ", \"draft\": ");
    cli_json_string(f, a->draft_path);
    fprintf(f, ", \"draft_quant\": ");
    cli_json_string(f, engine_quant_desc(x->draft));
    fprintf(f, ", \"ranks\": %d, \"threads\": %d, \"gen\": %d, \"max_draft\": %d, \"temperature\": %g,\n \"prompt_tokens\": [",
            comm_world(a->c), a->threads, a->gen, a->max_draft, (double)a->temp);
    for (int i = 0; i < a->n_prompts; i++) fprintf(f, "%s%d", i ? ", " : "", x->n_prompt[i]);
    fprintf(f, "],\n \"runs\": [");
    for (int r = 0; r < x->n_rows; r++) {
        const run_row *w = &x->rows[r], *off = &x->rows[r - w->mode];
        fprintf(f, "%s\n  {\"streams\": %d, \"sampling\": \"%s\", \"mode\": \"%s\", \"tpot_ms\": %.5f, \"speedup\": %.4f, "
                "\"proposed\": %ld, \"accepted\": %ld, \"spec_steps\": %ld, \"decoded\": %ld, ",
                r ? "," : "", w->streams, w->sampled ? "sampled" : "greedy", mode_name[w->mode], 1e3 * w->tpot,
                w->tpot > 0 ? off->tpot / w->tpot : 0.0, w->proposed, w->accepted, w->steps, w->decoded);
        if (w->steps > 0)
            fprintf(f, "\"acceptance\": %.4f, \"mean_k\": %.4f, \"tokens_per_verification\": %.4f, "
                    "\"predicted_speedup\": %.4f, \"speedup_at_full_acceptance\": %.4f, ",
                    w->proposed ? (double)w->accepted / w->proposed : 0.0, (double)w->proposed / w->steps,
                    (double)(w->accepted + w->steps) / w->steps, w->predicted, w->bound);
        if (w->mode != MODE_OFF && !w->sampled) {
            if (w->diff_prompt < 0) fprintf(f, "\"identical\": true, ");
            else fprintf(f, "\"identical\": false, \"first_difference\": {\"prompt\": %d, \"token\": %d}, ", w->diff_prompt,
                         w->diff_at);
        }
        fprintf(f, "\"requests\": [");
        for (int i = 0; i < a->n_prompts; i++) {
            const req_out *q = &w->req[i];
            fprintf(f, "%s{\"tpot_ms\": %.5f, \"proposed\": %d, \"accepted\": %d, \"spec_steps\": %d}", i ? ", " : "",
                    1e3 * q->tpot, q->proposed, q->accepted, q->spec_steps);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n ],\n \"step_costs\": {\"positions\": %d, \"m\": [", x->cost_pos);
    for (int j = 0; j < N_COST_M; j++) fprintf(f, "%s%d", j ? ", " : "", cost_m[j]);
    fprintf(f, "], \"by_streams\": [");
    for (int i = 0; i < a->n_streams; i++) {
        const cost_row *c = &x->costs[i];
        fprintf(f, "%s\n  {\"streams\": %d, \"rounds\": %d, \"target_ms\": [", i ? "," : "", a->streams[i], c->rounds);
        for (int j = 0; j < N_COST_M; j++) fprintf(f, "%s%.5f", j ? ", " : "", 1e3 * c->target[j]);
        fprintf(f, "], \"target_vs_m1\": [");
        for (int j = 0; j < N_COST_M; j++) fprintf(f, "%s%.4f", j ? ", " : "", c->target[j] / c->target[0]);
        fprintf(f, "], \"draft_m1_ms\": %.5f, \"draft_vs_target\": %.4f}", 1e3 * c->draft, c->draft / c->target[0]);
    }
    fprintf(f, "\n ]}\n}\n");
    return fclose(f) == 0 ? IFN_OK : ifn_error_set(IFN_ERR_IO, "%s: %s", a->json_path, strerror(errno));
}

/* Every run, the step costs, the tables and the JSON. */
static ifn_status run_all(spec_run *x)
{
    const spec_args *a = x->a;
    const int n_samp = a->temp > 0 ? 2 : 1;
    for (int i = 0; i < a->n_streams; i++) {
        for (int sm = 0; sm < n_samp; sm++) {
            sampler_params sp = sampler_params_default();
            if (sm) sp.temperature = a->temp;
            CHECK(run_modes(x, a->streams[i], &sp, &x->rows[(i * n_samp + sm) * N_MODES], &x->costs[i]));
        }
        cost_medians(&x->costs[i]);
    }
    for (int r = 0; r < x->n_rows; r++) {
        run_row *w = &x->rows[r];
        row_figures(x, w, &x->rows[r - w->mode], costs_of(x, r));
    }
    print_rows(x);
    print_costs(x);
    print_limits(x);
    if (x->json) {
        CHECK(write_json(x));
        printf("\nJSON: %s\n", a->json_path);
    }
    fflush(stdout);
    for (int r = 0; r < x->n_rows; r++) {
        const run_row *w = &x->rows[r];
        if (w->diff_prompt >= 0)
            return ifn_error_set(IFN_ERR_INTERNAL, "greedy output with speculation %s at %d stream(s) differs from "
                                 "speculation off: prompt %d, generated token %d (%d against %d)", mode_name[w->mode],
                                 w->streams, w->diff_prompt, w->diff_at, w->req[w->diff_prompt].ids[w->diff_at],
                                 x->rows[r - w->mode].req[w->diff_prompt].ids[w->diff_at]);
    }
    return IFN_OK;
}

/* The prompts' ids, the timed steps' tokens and position (where a request is halfway through
 * its generation), and the result buffers. */
static ifn_status prepare(spec_run *x)
{
    const spec_args *a = x->a;
    const int n_samp = a->temp > 0 ? 2 : 1, ctx = engine_ctx_size(x->e);
    x->n_rows = a->n_streams * n_samp * N_MODES;
    x->prompt = calloc((size_t)a->n_prompts, sizeof *x->prompt);
    x->n_prompt = calloc((size_t)a->n_prompts, sizeof *x->n_prompt);
    x->rows = calloc((size_t)x->n_rows, sizeof *x->rows);
    x->costs = calloc((size_t)a->n_streams, sizeof *x->costs);
    x->fill = malloc((size_t)ctx * sizeof *x->fill);
    if (!x->prompt || !x->n_prompt || !x->rows || !x->costs || !x->fill) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    for (int i = 0; i < a->n_prompts; i++) {
        size_t n = 0;
        CHECK(tokenizer_encode(x->tok, a->texts[i], a->lens[i], true, false, &x->prompt[i], &n));
        if (n == 0) return ifn_error_set(IFN_ERR_INVALID_ARG, "prompt %d encodes to no tokens", i);
        x->n_prompt[i] = (int)n;
        x->prompt_tokens += (long)n;
    }
    x->cost_pos = (int)(x->prompt_tokens / a->n_prompts) + a->gen / 2;
    if (x->cost_pos > ctx - MAX_M) x->cost_pos = ctx - MAX_M;
    for (int j = 0, p = 0, t = 0; j < ctx; j++) {
        x->fill[j] = x->prompt[p][t];
        if (++t == x->n_prompt[p]) {
            t = 0;
            p = (p + 1) % a->n_prompts;
        }
    }
    for (int r = 0; r < x->n_rows; r++) {
        run_row *w = &x->rows[r];
        w->streams = a->streams[r / (N_MODES * n_samp)];
        w->sampled = r / N_MODES % n_samp == 1;
        w->mode = r % N_MODES;
        w->req = calloc((size_t)a->n_prompts, sizeof *w->req);
        if (!w->req) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
        for (int i = 0; i < a->n_prompts; i++) {
            w->req[i].cap = a->gen;
            w->req[i].ids = malloc((size_t)a->gen * sizeof *w->req[i].ids);
            if (!w->req[i].ids) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
        }
    }
    for (int i = 0; i < a->n_streams; i++) { /* run_modes' rounds: per group, COST_ROUNDS over the groups */
        cost_row *c = &x->costs[i];
        const int groups = (a->n_prompts + a->streams[i] - 1) / a->streams[i];
        c->cap = n_samp * groups * ((COST_ROUNDS + groups - 1) / groups);
        c->sec = malloc((size_t)(N_COST_M + 1) * (size_t)c->cap * sizeof *c->sec);
        if (!c->sec) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the step timings");
    }
    return IFN_OK;
}

static void release(spec_run *x)
{
    const spec_args *a = x->a;
    for (int r = 0; x->rows && r < x->n_rows; r++) {
        for (int i = 0; x->rows[r].req && i < a->n_prompts; i++) free(x->rows[r].req[i].ids);
        free(x->rows[r].req);
    }
    for (int i = 0; x->prompt && i < a->n_prompts; i++) free(x->prompt[i]);
    for (int i = 0; x->costs && i < a->n_streams; i++) free(x->costs[i].sec);
    free(x->prompt);
    free(x->n_prompt);
    free(x->rows);
    free(x->costs);
    free(x->fill);
    if (x->json) fclose(x->json);
    engine_destroy(x->draft);
    tokenizer_destroy(x->tok);
}

/* The tokenizer, the draft engine (on rank 0 alone) and the buffers, then run_all. */
static ifn_status lead(engine *e, void *arg)
{
    const spec_args *a = arg;
    spec_run x = { .a = a, .e = e };
    comm *self = NULL;
    ifn_status st = model_tokenizer_load(engine_model_file(e), &x.tok);
    if (st == IFN_OK) st = comm_create_self(a->c, &self);
    if (st == IFN_OK) {
        engine_params dp = { .model_path = a->draft_path, .quant = a->draft_quant, .ctx_size = engine_ctx_size(e),
                             .n_batch = engine_n_batch(e), .n_slots = engine_n_slots(e), .kv_type = IFN_KV_F16 };
        st = engine_create(self, &dp, &x.draft);
    }
    if (st == IFN_OK) st = spec_check_vocab(e, x.tok, x.draft);
    if (st == IFN_OK && a->json_path && !(x.json = fopen(a->json_path, "w")))
        st = ifn_error_set(IFN_ERR_IO, "%s: %s", a->json_path, strerror(errno));
    if (st == IFN_OK) {
        fprintf(stderr, "infernode: draft %s\n", engine_describe(x.draft));
        st = prepare(&x);
    }
    if (st == IFN_OK) { /* the schedulers' profile: read from the same file they read */
        char path[512];
        machine_profile_path(path, sizeof path);
        st = machine_profile_get(path, omp_get_max_threads(), &x.profile);
        x.target_shape = spec_cost_shape_of(e);
        x.draft_shape = spec_cost_shape_of(x.draft);
    }
    if (st == IFN_OK) {
        printf("Speculative decoding: target %s (%s), draft %s (%s), KV f16, %d rank(s) x %d threads (the draft on rank "
               "0)\n%d code prompts (%.1f tokens on average), %d generated tokens each, end of generation ignored, "
               "at most %d proposed per step\n\n", a->model_path, engine_quant_desc(e), a->draft_path,
               engine_quant_desc(x.draft), comm_world(a->c), a->threads, a->n_prompts,
               (double)x.prompt_tokens / a->n_prompts, a->gen, a->max_draft);
        fflush(stdout);
        st = run_all(&x);
    }
    release(&x);
    comm_finalize(self);
    return st;
}

/* --prompts FILE: a JSON array of 1..MAX_PROMPTS non-empty strings; texts point into *doc. */
static ifn_status load_prompts(const char *path, json_value **doc, spec_args *a)
{
    CHECK(json_parse_file(path, doc));
    const json_value *v = *doc;
    bool ok = v->kind == JSON_ARRAY && v->u.array.n >= 1 && v->u.array.n <= MAX_PROMPTS;
    for (size_t i = 0; ok && i < v->u.array.n; i++)
        ok = v->u.array.items[i].kind == JSON_STRING && v->u.array.items[i].u.string.len > 0;
    if (!ok) return ifn_error_set(IFN_ERR_FORMAT, "%s: not a JSON array of 1..%d non-empty strings", path, MAX_PROMPTS);
    a->n_prompts = (int)v->u.array.n;
    a->texts = malloc((size_t)a->n_prompts * sizeof *a->texts);
    a->lens = malloc((size_t)a->n_prompts * sizeof *a->lens);
    if (!a->texts || !a->lens) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the prompts");
    for (int i = 0; i < a->n_prompts; i++) {
        a->texts[i] = v->u.array.items[i].u.string.ptr;
        a->lens[i] = v->u.array.items[i].u.string.len;
    }
    return IFN_OK;
}

static void spec_usage(FILE *out)
{
    fputs("usage: infernode bench spec [-m MODEL] [--draft-model PATH] [--quant Q] [--draft-quant Q]\n"
          "                            [--gen 128] [--spec-max-draft 8] [--streams 1[,4]] [--temp 0]\n"
          "                            [--prompts FILE] [--json FILE] [-t N]\n"
          "TPOT with speculation off, by prompt lookup (ngram) and with a draft model, through the\n"
          "scheduler (no gRPC); acceptance rate, mean K, tokens per verification step, whether greedy\n"
          "output is unchanged (exit 1 if not), and the step costs that bound the speedup.\n"
          "\n"
          "  -m, --model PATH       the target (default: $INFERNODE_MODEL, else\n"
          "                         " INFERNODE_DEFAULT_MODEL ")\n"
          "      --draft-model PATH the draft, sharing the target's tokenizer (default\n"
          "                         " INFERNODE_DEFAULT_DRAFT_MODEL ")\n"
          "      --quant Q          pack the target's weights at load; --draft-quant Q the draft's\n"
          "      --gen N            tokens generated per prompt, end of generation ignored (default 128)\n"
          "      --spec-max-draft K most tokens proposed per step, 1..16 (default 8; K adapts below it)\n"
          "      --streams LIST     concurrent requests, one row each (default 1)\n"
          "      --temp T           greedy only (0, default), or greedy and sampled at T\n"
          "      --prompts FILE     a JSON array of prompt strings (default: 16 built-in Python\n"
          "                         code-completion prompts)\n"
          "      --json FILE        write every figure\n"
          "  -t, --threads N        OpenMP threads per rank\n",
          out);
}

int bench_spec(comm *c, int argc, char **argv)
{
    enum { O_DRAFT = 256, O_QUANT, O_DRAFT_QUANT, O_GEN, O_MAX_DRAFT, O_STREAMS, O_TEMP, O_PROMPTS, O_JSON };
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },          { "threads", required_argument, 0, 't' },
        { "help", no_argument, 0, 'h' },                 { "draft-model", required_argument, 0, O_DRAFT },
        { "quant", required_argument, 0, O_QUANT },      { "draft-quant", required_argument, 0, O_DRAFT_QUANT },
        { "gen", required_argument, 0, O_GEN },          { "spec-max-draft", required_argument, 0, O_MAX_DRAFT },
        { "streams", required_argument, 0, O_STREAMS },  { "temp", required_argument, 0, O_TEMP },
        { "prompts", required_argument, 0, O_PROMPTS },  { "json", required_argument, 0, O_JSON },
        { 0, 0, 0, 0 },
    };
    const char *env_model = getenv("INFERNODE_MODEL"), *prompts_path = NULL;
    spec_args a = { .c = c, .model_path = env_model && *env_model ? env_model : INFERNODE_DEFAULT_MODEL,
                    .draft_path = INFERNODE_DEFAULT_DRAFT_MODEL, .texts = (const char **)code_prompts,
                    .n_prompts = N_BUILTIN, .gen = 128, .max_draft = 8, .streams = { 1 }, .n_streams = 1 };
    const char *quant = NULL;
    bool talk = comm_rank(c) == 0;
    optind = 1;
    opterr = 0;
    int ch, threads = 0, li;
    while ((li = -1, ch = getopt_long(argc, argv, "m:t:h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = "a valid value"; /* what a refused value should have been */
        switch (ch) {
        case 'm': a.model_path = optarg; break;
        case 't': ok = cli_parse_threads(optarg, &threads); expect = CLI_THREADS_EXPECT; break;
        case 'h':
            if (talk) spec_usage(stdout);
            return 0;
        case O_DRAFT: a.draft_path = optarg; break;
        case O_QUANT: quant = optarg; break;
        case O_DRAFT_QUANT: a.draft_quant = optarg; break;
        case O_GEN: ok = cli_parse_int(optarg, 2, 1 << 16, &a.gen); expect = "an integer in 2..65536"; break;
        case O_MAX_DRAFT:
            ok = cli_parse_int(optarg, 1, SPEC_MAX_DRAFT, &a.max_draft);
            expect = "an integer in 1..16";
            break;
        case O_STREAMS:
            ok = bench_parse_list(optarg, 1, BENCH_MAX_LIST, a.streams, &a.n_streams);
            expect = "a comma-separated list of integers in 1..16";
            break;
        case O_TEMP:
            ok = cli_parse_float(optarg, &a.temp) && isfinite(a.temp) && a.temp >= 0;
            expect = "a number >= 0";
            break;
        case O_PROMPTS: prompts_path = optarg; break;
        case O_JSON: a.json_path = optarg; break;
        default:
            if (talk) fprintf(stderr, "infernode: error: bench spec: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (!ok) return talk ? cli_bad_value(opts, li, ch, optarg, expect) : CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        if (talk) fprintf(stderr, "infernode: error: bench spec: unexpected argument '%s'\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (threads) omp_set_num_threads(threads);
    a.threads = omp_get_max_threads();
    sampler_params sp = sampler_params_default();
    sp.temperature = a.temp;
    if (sampler_params_validate(&sp) != IFN_OK) {
        if (talk) fprintf(stderr, "infernode: error: bench spec: --temp: %s\n", ifn_error_detail());
        return CLI_EXIT_USAGE;
    }

    /* Rank 0 reads the prompts; every rank learns whether it could before any loads a model. */
    json_value *doc = NULL;
    size_t builtin_lens[N_BUILTIN];
    for (int i = 0; i < N_BUILTIN; i++) builtin_lens[i] = strlen(code_prompts[i]);
    a.lens = builtin_lens;
    int ok = 1;
    if (talk && prompts_path && load_prompts(prompts_path, &doc, &a) != IFN_OK) {
        cli_fail("--prompts");
        ok = 0;
    }
    int rc = comm_allreduce_min_int(c, &ok) != IFN_OK ? cli_fail(NULL) : !ok ? CLI_EXIT_USAGE : 0;
    if (rc == 0) {
        int max_streams = 1;
        for (int i = 0; i < a.n_streams; i++)
            if (a.streams[i] > max_streams) max_streams = a.streams[i];
        engine_params ep = { .model_path = a.model_path, .quant = quant,
                             .n_batch = max_streams * MAX_M > 256 ? max_streams * MAX_M : 256,
                             .n_slots = max_streams, .kv_type = IFN_KV_F16 };
        rc = bench_with_engine(c, &ep, lead, &a, "bench spec");
    }
    if (a.texts != (const char **)code_prompts) free(a.texts);
    if (a.lens != builtin_lens) free(a.lens);
    json_free(doc);
    return rc;
}
