#include "scheduler.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "clock.h"
#include "spec_cost.h"
#include "speculative.h"
#include "stop_seq.h"

/* Top-k sampling asks the ranks for this many candidates at most; larger k needs every logit. */
#define TOPK_MAX 64
#define DEFAULT_SESSION_TTL 600.0
/* Speculation: the acceptance a sequence is assumed to have before it has any (as pseudo-counts
 * of accepted and rejected proposals), how fast its counts forget, and how often a sequence
 * whose estimate says proposals do not pay tries one anyway. */
#define SPEC_PRIOR_ACCEPTED 3.0
#define SPEC_PRIOR_REJECTED 1.0
#define SPEC_DECAY 0.8
#define SPEC_PROBE_STEPS 16

/* A sequence's KV: its slot, its ring and the tokens at its positions. */
typedef struct {
    int slot;             /* -1: none yet */
    int window, n_keep;   /* the ring (engine_slot_ring) */
    int n_discard;        /* dropped when full: 1..window-n_keep, 0 never */
    int32_t *hist;        /* [window + 1 + SPEC_MAX_DRAFT] the token at each position: in the cache
                             below len, then waiting to be evaluated (a reply's last token, a
                             re-evaluated window), then a step's proposals */
    int n_hist, len;
    int dlen;             /* positions the draft model's cache holds (of hist, as numbered now);
                             those at len and beyond may be stale (rejected proposals, a rollback) */
    int ddiscard;         /* entries the draft's cache still has to drop (its next step) */
} kvseq;

typedef struct session {
    char id[SCHED_SESSION_ID_LEN + 1];
    kvseq kv;
    bool busy;            /* a request on it is queued or running (under lock) */
    double last_used;
    struct session *next;
} session;

typedef struct seq {
    sched_request r;
    kvseq own;            /* the KV of a request without a session */
    kvseq *kv;            /* &own, or its session's */
    session *sess;        /* NULL without one */
    char sess_id[SCHED_SESSION_ID_LEN + 1]; /* its id ("" without one): the events' after it is released */
    int start_len, start_hist; /* the session's KV when the request started (for a rollback) */
    int n_fed;            /* prompt tokens moved into kv->hist */
    int n_gen;
    int32_t *gen;         /* [gen_cap] generated ids not emitted yet */
    int gen_len, gen_cap;
    int discards;         /* ring drops during this request */
    bool recomputed;
    int spec_k;           /* most tokens proposed per step (0: no speculation) */
    int n_prop;           /* tokens proposed this step, at kv->hist[n_hist..] */
    double spec_acc, spec_rej; /* decayed counts of accepted and rejected proposals */
    int spec_idle;        /* steps without proposals because they did not pay */
    float *q;             /* [spec_k][vocab] the draft's distributions (sampled requests, draft mode) */
    float *lrow;          /* [vocab] log-softmax of the row sampled last (logprobs requests) */
    int32_t *ltop;        /* [r.logprobs] its most likely ids */
    float *lp;            /* [gen_cap] the generated ids' log-probabilities (logprobs requests) */
    int32_t *lp_ids;      /* [gen_cap][r.logprobs] the most likely ids at their positions */
    float *lp_vals;       /* [gen_cap][r.logprobs] theirs */
    int proposed, accepted, spec_steps;
    sampler *smp;
    detok_stream *detok;  /* NULL without a tokenizer */
    char *text;           /* [text_len] generated text not emitted yet (or held back) */
    size_t text_len, text_cap, text_checked;
    sched_finish gone;    /* why a queued request is being dropped */
    double t_submit, t_admit, t_first, t_last;
    struct seq *next;     /* queue link */
} seq;

/* Metric ids (see scheduler_create). */
typedef struct {
    int running, waiting, prompt_tokens, generated_tokens, finished, ttft, tpot, queue_time;
    int step_tokens, step_seqs, steps, kv_slots, kv_positions, kv_discards, sessions, sessions_ended, kv_bytes,
        kv_bytes_used, spec_proposed, spec_accepted, spec_draft_len;
} sched_metrics;

struct scheduler {
    engine *eng;
    const tokenizer *tok;
    metrics *met;
    sched_metrics mid;
    sched_limits lim;
    int n_slots, ctx_size, vocab;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    seq *queue_head, *queue_tail; /* under lock */
    int n_queued;                 /* under lock */
    session *sessions;            /* under lock */
    int n_sessions;               /* under lock */
    session **held;               /* [n_slots] the session whose KV a slot holds (under lock) */
    seq **running;                /* [n_slots]: the sequence running in a slot (engine thread) */
    int n_running;                /* written by the engine thread under lock */
    /* step buffers */
    engine_seq *step;             /* [n_slots] */
    seq **step_seq;               /* [n_slots] */
    int rows;                     /* output rows per slot: 1 + the most tokens proposed */
    float *logits;                /* [n_slots][rows][vocab] */
    int32_t *top_ids;             /* [n_slots][rows][TOPK_MAX] */
    float *top_vals;              /* [n_slots][rows][TOPK_MAX] */
    /* speculation */
    float *draft_logits;          /* [n_slots][vocab] */
    int32_t *draft_ids;           /* [n_slots][TOPK_MAX] */
    float *draft_vals;            /* [n_slots][TOPK_MAX] */
    int *drafted;                 /* [n_slots] proposals made so far this step */
    machine_profile profile;      /* the machine the costs below are modelled for */
    double plain_seconds, draft_seconds; /* the cost model's target step of 1 token and draft step */
    double step_cost[SPEC_MAX_DRAFT + 1]; /* a step proposing k tokens (drafting them, verifying
                                             1 + k) relative to a plain decode step */
    char *piece;                  /* [piece_cap] detokenizer output */
    size_t piece_cap;
};

static const char *finish_label(sched_finish f)
{
    switch (f) {
    case SCHED_RUNNING: return "running";
    case SCHED_STOP: return "stop";
    case SCHED_LENGTH: return "length";
    case SCHED_EOS: return "eos";
    case SCHED_CANCELLED: return "cancelled";
    case SCHED_DEADLINE: return "deadline";
    case SCHED_SHUTDOWN: return "shutdown";
    }
    return "unknown";
}

static ifn_status register_metrics(scheduler *s)
{
    static const double seconds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
    static const double counts[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048 };
    const int n_sec = (int)(sizeof seconds / sizeof *seconds), n_cnt = (int)(sizeof counts / sizeof *counts);
    metrics *m = s->met;
    sched_metrics *id = &s->mid;
    CHECK(metrics_gauge(m, "infernode_requests_running", "Requests holding a KV slot", &id->running));
    CHECK(metrics_gauge(m, "infernode_requests_waiting", "Requests queued for a KV slot", &id->waiting));
    CHECK(metrics_counter(m, "infernode_prompt_tokens_total", "Prompt tokens evaluated", NULL, &id->prompt_tokens));
    CHECK(metrics_counter(m, "infernode_generated_tokens_total", "Tokens generated", NULL, &id->generated_tokens));
    CHECK(metrics_counter(m, "infernode_requests_finished_total", "Generation requests finished, by reason", "reason",
                          &id->finished));
    CHECK(metrics_histogram(m, "infernode_time_to_first_token_seconds", "From admission to the first generated token",
                            seconds, n_sec, &id->ttft));
    CHECK(metrics_histogram(m, "infernode_time_per_output_token_seconds",
                            "Mean time per generated token after the first, per request", seconds, n_sec, &id->tpot));
    CHECK(metrics_histogram(m, "infernode_queue_seconds", "Time from arrival to admission", seconds, n_sec,
                            &id->queue_time));
    CHECK(metrics_histogram(m, "infernode_step_tokens", "Tokens in one forward step (batch size)", counts, n_cnt,
                            &id->step_tokens));
    CHECK(metrics_histogram(m, "infernode_step_sequences", "Sequences in one forward step", counts, n_cnt, &id->step_seqs));
    CHECK(metrics_counter(m, "infernode_steps_total", "Forward steps run", NULL, &id->steps));
    CHECK(metrics_gauge(m, "infernode_kv_slots_used", "KV cache slots held by running sequences or idle sessions",
                        &id->kv_slots));
    CHECK(metrics_gauge(m, "infernode_kv_positions_used", "KV cache positions holding entries, all slots",
                        &id->kv_positions));
    CHECK(metrics_counter(m, "infernode_kv_ring_discards_total", "Times a full KV ring dropped its oldest entries", NULL,
                          &id->kv_discards));
    CHECK(metrics_gauge(m, "infernode_sessions", "Chat sessions alive", &id->sessions));
    CHECK(metrics_gauge(m, "infernode_kv_bytes", "KV cache bytes reserved on each rank (all slots)", &id->kv_bytes));
    CHECK(metrics_gauge(m, "infernode_kv_bytes_used", "KV cache bytes on each rank of the slots in use",
                        &id->kv_bytes_used));
    CHECK(metrics_set(m, id->kv_bytes, (double)engine_kv_bytes(s->eng)));
    CHECK(metrics_counter(m, "infernode_sessions_ended_total", "Sessions ended, by reason", "reason",
                          &id->sessions_ended));
    CHECK(metrics_counter(m, "infernode_spec_proposed_tokens_total", "Speculative tokens proposed for verification", NULL,
                          &id->spec_proposed));
    CHECK(metrics_counter(m, "infernode_spec_accepted_tokens_total", "Speculative tokens the target accepted", NULL,
                          &id->spec_accepted));
    static const double lens[] = { 1, 2, 3, 4, 6, 8, 12, 16 };
    CHECK(metrics_histogram(m, "infernode_spec_draft_tokens", "Tokens proposed to one sequence in one step (the "
                            "adaptive K)", lens, (int)(sizeof lens / sizeof *lens), &id->spec_draft_len));
    return IFN_OK;
}

/* The relative step costs that choose K, from the cost model (spec_cost.h) on the machine's
 * profile, never from timing the models: the same model, options and machine give the same K
 * at every start, and K never depends on what else runs. Prompt lookup's proposals cost
 * nothing measurable. */
static ifn_status spec_plan_costs(scheduler *s)
{
    char path[512];
    const char *from = s->lim.spec.machine_profile;
    if (!from) {
        machine_profile_path(path, sizeof path);
        from = path;
    }
    CHECK(machine_profile_get(from, omp_get_max_threads(), &s->profile));
    const spec_cost_shape target = spec_cost_shape_of(s->eng);
    s->plain_seconds = spec_cost_step(&s->profile, &target, 1);
    s->draft_seconds = 0.0;
    if (s->lim.spec.mode == SCHED_SPEC_DRAFT) {
        const spec_cost_shape draft = spec_cost_shape_of(s->lim.spec.draft);
        s->draft_seconds = spec_cost_step(&s->profile, &draft, 1);
    }
    for (int k = 0; k <= s->lim.spec.max_draft; k++)
        s->step_cost[k] = (spec_cost_step(&s->profile, &target, 1 + k) + k * s->draft_seconds) / s->plain_seconds;
    return IFN_OK;
}

ifn_status scheduler_create(engine *e, const tokenizer *tok, metrics *m, const sched_limits *lim, scheduler **out)
{
    *out = NULL;
    int n_batch = engine_n_batch(e), n_slots = engine_n_slots(e);
    int max_running = lim->max_running ? lim->max_running : n_slots;
    if (lim->max_queue < 0 || lim->max_step_tokens < 1 || lim->prefill_chunk < 1 || max_running < 1 ||
        max_running > n_slots || lim->session_ttl < 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "scheduler limits: queue %d, step tokens %d, prefill chunk %d, "
                             "running %d of %d slots, session ttl %g s", lim->max_queue, lim->max_step_tokens,
                             lim->prefill_chunk, max_running, n_slots, lim->session_ttl);
    if (lim->max_step_tokens > n_batch)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d tokens per step is more than the engine's batch of %d",
                             lim->max_step_tokens, n_batch);
    if (lim->max_step_tokens < max_running)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d tokens per step cannot hold one token for each of %d sequences",
                             lim->max_step_tokens, max_running);
    const sched_spec *sp = &lim->spec;
    if (sp->mode != SCHED_SPEC_OFF && (sp->max_draft < 1 || sp->max_draft > SPEC_MAX_DRAFT))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "speculation: %d tokens proposed per step is outside 1..%d",
                             sp->max_draft, SPEC_MAX_DRAFT);
    if (sp->mode == SCHED_SPEC_DRAFT &&
        (!sp->draft || engine_n_slots(sp->draft) != n_slots || engine_ctx_size(sp->draft) < engine_ctx_size(e) ||
         engine_config(sp->draft)->vocab_size != engine_config(e)->vocab_size))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "speculation: the draft engine needs %d slots of at least %d positions "
                             "and %d tokens of vocabulary", n_slots, engine_ctx_size(e), engine_config(e)->vocab_size);
    scheduler *s = calloc(1, sizeof *s);
    if (!s) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the scheduler");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->eng = e;
    s->tok = tok;
    s->met = m;
    s->lim = *lim;
    s->lim.max_running = max_running;
    if (s->lim.session_ttl == 0) s->lim.session_ttl = DEFAULT_SESSION_TTL;
    s->n_slots = n_slots;
    s->ctx_size = engine_ctx_size(e);
    s->vocab = engine_config(e)->vocab_size;
    s->piece_cap = 64 + (tok ? tokenizer_max_token_bytes(tok) : 0);
    s->rows = 1 + (sp->mode != SCHED_SPEC_OFF ? sp->max_draft : 0);
    const size_t rows = (size_t)n_slots * (size_t)s->rows;
    s->held = calloc((size_t)n_slots, sizeof *s->held);
    s->running = calloc((size_t)n_slots, sizeof *s->running);
    s->step = calloc((size_t)n_slots, sizeof *s->step);
    s->step_seq = calloc((size_t)n_slots, sizeof *s->step_seq);
    s->logits = malloc(rows * (size_t)s->vocab * sizeof *s->logits);
    s->top_ids = malloc(rows * TOPK_MAX * sizeof *s->top_ids);
    s->top_vals = malloc(rows * TOPK_MAX * sizeof *s->top_vals);
    s->piece = malloc(s->piece_cap);
    bool spec_ok = true;
    if (sp->mode == SCHED_SPEC_DRAFT) {
        s->draft_logits = malloc((size_t)n_slots * (size_t)s->vocab * sizeof *s->draft_logits);
        s->draft_ids = malloc((size_t)n_slots * TOPK_MAX * sizeof *s->draft_ids);
        s->draft_vals = malloc((size_t)n_slots * TOPK_MAX * sizeof *s->draft_vals);
        s->drafted = calloc((size_t)n_slots, sizeof *s->drafted);
        spec_ok = s->draft_logits && s->draft_ids && s->draft_vals && s->drafted;
    }
    if (!s->held || !s->running || !s->step || !s->step_seq || !s->logits || !s->top_ids || !s->top_vals || !s->piece ||
        !spec_ok) {
        scheduler_destroy(s);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the scheduler's %d slots", n_slots);
    }
    ifn_status st = m ? register_metrics(s) : IFN_OK;
    if (st == IFN_OK && sp->mode != SCHED_SPEC_OFF) st = spec_plan_costs(s);
    if (st != IFN_OK) {
        scheduler_destroy(s);
        return st;
    }
    *out = s;
    return IFN_OK;
}

static void seq_free(seq *q)
{
    if (!q) return;
    free(q->r.prompt);
    for (int i = 0; i < q->r.n_stop; i++) free(q->r.stop[i]);
    free(q->r.stop);
    free(q->own.hist);
    free(q->q);
    free(q->lrow);
    free(q->ltop);
    free(q->lp);
    free(q->lp_ids);
    free(q->lp_vals);
    free(q->gen);
    free(q->text);
    sampler_destroy(q->smp);
    detok_stream_destroy(q->detok);
    free(q);
}

/* Unlinks a session and frees it and its slot (under lock). */
static void session_end(scheduler *s, session *ss, const char *reason)
{
    for (session **link = &s->sessions; *link; link = &(*link)->next)
        if (*link == ss) {
            *link = ss->next;
            break;
        }
    if (ss->kv.slot >= 0 && s->held[ss->kv.slot] == ss) s->held[ss->kv.slot] = NULL;
    s->n_sessions--;
    if (s->met) {
        metrics_add(s->met, s->mid.sessions_ended, reason, 1);
        metrics_set(s->met, s->mid.sessions, s->n_sessions);
    }
    free(ss->kv.hist);
    free(ss);
}

void scheduler_destroy(scheduler *s)
{
    if (!s) return;
    for (int i = 0; s->running && i < s->n_slots; i++) seq_free(s->running[i]);
    for (seq *q = s->queue_head, *next; q; q = next) {
        next = q->next;
        seq_free(q);
    }
    for (session *ss = s->sessions, *next; ss; ss = next) {
        next = ss->next;
        free(ss->kv.hist);
        free(ss);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    free(s->held);
    free(s->running);
    free(s->step);
    free(s->step_seq);
    free(s->logits);
    free(s->top_ids);
    free(s->top_vals);
    free(s->draft_logits);
    free(s->draft_ids);
    free(s->draft_vals);
    free(s->drafted);
    free(s->piece);
    free(s);
}

/* An empty KV of the request's ring (its hist allocated). */
static ifn_status kvseq_init(kvseq *kv, const sched_request *r)
{
    *kv = (kvseq){ .slot = -1, .window = r->window, .n_keep = r->n_keep, .n_discard = r->n_discard };
    kv->hist = malloc(((size_t)r->window + 1 + SPEC_MAX_DRAFT) * sizeof *kv->hist);
    return kv->hist ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for a sequence of %d positions", r->window);
}

/* The ring options of a new sequence, against the engine's context. */
static ifn_status check_ring(const scheduler *s, const sched_request *r)
{
    if (r->window < 1 || r->window > s->ctx_size)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "kv.ctx_size: %d is outside 1..%d (the server's context size)",
                             r->window, s->ctx_size);
    if (r->n_keep < 0 || r->n_keep >= r->window)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "kv.n_keep: %d is outside 0..%d (below kv.ctx_size %d)", r->n_keep,
                             r->window - 1, r->window);
    if (r->n_discard < 0 || r->n_discard > r->window - r->n_keep)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "kv.n_discard: %d is outside 0..%d (the positions after the %d sinks)",
                             r->n_discard, r->window - r->n_keep, r->n_keep);
    return IFN_OK;
}

/* A request that can never drop entries must fit what its KV leaves. */
static ifn_status check_fit(const kvseq *kv, const sched_request *r)
{
    if (kv->n_discard > 0) return IFN_OK;
    const int64_t need = (int64_t)kv->n_hist + r->n_prompt + r->max_new_tokens - 1;
    if (need > kv->window)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "max_new_tokens: %d new tokens after a prompt of %d%s do not fit a "
                             "context of %d that never drops entries (kv.n_discard 0)", r->max_new_tokens, r->n_prompt,
                             kv->n_hist ? " and the session's tokens" : "", kv->window);
    return IFN_OK;
}

static session *session_find(scheduler *s, const char *id)
{
    for (session *ss = s->sessions; ss; ss = ss->next)
        if (strcmp(ss->id, id) == 0) return ss;
    return NULL;
}

/* A new session with the request's ring, marked busy and linked in (under lock). */
static ifn_status session_new(scheduler *s, const sched_request *r, session **out)
{
    session *ss = calloc(1, sizeof *ss);
    if (!ss) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a session");
    uint8_t raw[SCHED_SESSION_ID_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        free(ss);
        return ifn_error_set(IFN_ERR_INTERNAL, "no random bytes for a session id");
    }
    for (size_t i = 0; i < sizeof raw; i++) snprintf(ss->id + 2 * i, 3, "%02x", raw[i]);
    ifn_status st = kvseq_init(&ss->kv, r);
    if (st != IFN_OK) {
        free(ss);
        return st;
    }
    ss->busy = true;
    ss->next = s->sessions;
    s->sessions = ss;
    s->n_sessions++;
    if (s->met) metrics_set(s->met, s->mid.sessions, s->n_sessions);
    *out = ss;
    return IFN_OK;
}

ifn_status scheduler_submit(scheduler *s, const sched_request *r)
{
    if (r->n_prompt < 1 || r->max_new_tokens < 1)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a prompt of %d tokens and %d new tokens", r->n_prompt,
                             r->max_new_tokens);
    if (r->new_session && r->session)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "session_id: a request continues a session or starts one, not both");
    if (!r->session) {
        CHECK(check_ring(s, r));
        CHECK(check_fit(&(kvseq){ .window = r->window, .n_discard = r->n_discard }, r));
    }
    const sched_spec *sp = &s->lim.spec;
    if (r->spec_max_draft && (sp->mode == SCHED_SPEC_OFF || r->spec_max_draft < 1 || r->spec_max_draft > sp->max_draft))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "speculative.max_draft_tokens: %d is outside 1..%d (the server's "
                             "--spec-max-draft)", r->spec_max_draft, sp->mode == SCHED_SPEC_OFF ? 0 : sp->max_draft);
    if (r->logprobs < 0 || r->logprobs > SCHED_MAX_LOGPROBS)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "logprobs: %d is outside 0..%d", r->logprobs, SCHED_MAX_LOGPROBS);
    const int spec_k = sp->mode == SCHED_SPEC_OFF || r->spec_off || r->logprobs ? 0
                       : r->spec_max_draft                                      ? r->spec_max_draft
                                                                                : sp->max_draft;
    seq *q = calloc(1, sizeof *q);
    if (!q) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a request");
    q->spec_k = spec_k;
    ifn_status st = sampler_create(&r->sampling, s->vocab, &q->smp);
    if (st == IFN_OK && spec_k && sp->mode == SCHED_SPEC_DRAFT && r->sampling.temperature != 0.0f) {
        q->q = malloc((size_t)spec_k * (size_t)s->vocab * sizeof *q->q);
        if (!q->q) st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the draft's distributions");
    }
    if (st == IFN_OK && r->logprobs) {
        q->lrow = malloc((size_t)s->vocab * sizeof *q->lrow);
        q->ltop = malloc((size_t)r->logprobs * sizeof *q->ltop);
        if (!q->lrow || !q->ltop) st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the log-probabilities");
    }
    if (st == IFN_OK && s->tok) st = detok_stream_create(s->tok, false, &q->detok);
    if (st == IFN_OK && q->detok) st = detok_stream_follow(q->detok, r->prompt, (size_t)r->n_prompt);
    if (st == IFN_OK && !r->session && !r->new_session) {
        st = kvseq_init(&q->own, r);
        q->kv = &q->own;
    }
    q->t_submit = ifn_seconds();

    pthread_mutex_lock(&s->lock);
    if (st == IFN_OK && s->n_queued >= s->lim.max_queue)
        st = ifn_error_set(IFN_ERR_RANGE, "the queue is full (%d requests waiting)", s->n_queued);
    if (st == IFN_OK && r->session) {
        q->sess = session_find(s, r->session);
        if (!q->sess)
            st = ifn_error_set(IFN_ERR_NOT_FOUND, "session_id: no session %s (it may have expired after %.0f s idle, "
                               "been evicted for another sequence's KV, or been deleted)", r->session, s->lim.session_ttl);
        else if (q->sess->busy)
            st = ifn_error_set(IFN_ERR_BUSY, "session_id: session %s already has a request queued or running", r->session);
        else if ((st = check_fit(&q->sess->kv, r)) == IFN_OK)
            q->sess->busy = true;
    } else if (st == IFN_OK && r->new_session) {
        st = session_new(s, r, &q->sess);
    }
    if (st != IFN_OK) {
        pthread_mutex_unlock(&s->lock);
        q->sess = NULL;
        seq_free(q); /* the caller still owns the prompt and stops: q->r is still zero */
        return st;
    }
    if (q->sess) {
        memcpy(q->sess_id, q->sess->id, sizeof q->sess_id);
        q->kv = &q->sess->kv;
        q->start_len = q->kv->len;
        q->start_hist = q->kv->n_hist;
    }
    q->r = *r; /* ownership of prompt and stops moves here, after the last way to fail */
    q->r.session = NULL; /* the caller's string; q->sess->id from here on */
    if (s->queue_tail) s->queue_tail->next = q;
    else s->queue_head = q;
    s->queue_tail = q;
    s->n_queued++;
    if (s->met) metrics_set(s->met, s->mid.waiting, s->n_queued);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return IFN_OK;
}

ifn_status scheduler_delete_session(scheduler *s, const char *id)
{
    ifn_status st = IFN_OK;
    pthread_mutex_lock(&s->lock);
    session *ss = session_find(s, id);
    if (!ss) st = ifn_error_set(IFN_ERR_NOT_FOUND, "session_id: no session %s", id);
    else if (ss->busy) st = ifn_error_set(IFN_ERR_BUSY, "session_id: session %s has a request queued or running", id);
    else session_end(s, ss, "deleted");
    pthread_mutex_unlock(&s->lock);
    return st;
}

void scheduler_spec_describe(const scheduler *s, char *buf, size_t cap)
{
    if (s->lim.spec.mode == SCHED_SPEC_OFF) {
        snprintf(buf, cap, "no speculation");
        return;
    }
    static const double acceptance[] = { 0.5, 0.7, 0.8, 0.9 };
    char profile[384];
    machine_profile_describe(&s->profile, profile, sizeof profile);
    const spec_cost_shape t = spec_cost_shape_of(s->eng);
    size_t n = (size_t)snprintf(buf, cap, "cost model: target %.1f MB, %.3g GFLOP per token, %d parallel regions per step: "
                                "a decode step %.3f ms, a draft step %.3f ms; a step proposing k = 1..%d costs", t.weight_bytes / 1e6,
                                t.flops_per_token / 1e9, t.regions, 1e3 * s->plain_seconds, 1e3 * s->draft_seconds,
                                s->lim.spec.max_draft);
    for (int k = 1; k <= s->lim.spec.max_draft && n < cap; k++)
        n += (size_t)snprintf(buf + n, cap - n, " %.2f", s->step_cost[k]);
    for (int i = 0; i < (int)(sizeof acceptance / sizeof *acceptance) && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s %.1f: %d", i ? "," : "; K at acceptance", acceptance[i],
                              spec_choose_k(acceptance[i], s->step_cost, s->lim.spec.max_draft));
    if (n < cap) snprintf(buf + n, cap - n, "; machine: %s", profile);
}

int scheduler_sessions(scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n_sessions;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int scheduler_pending(scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n_queued + s->n_running;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Appends bytes to the sequence's text waiting to be emitted. */
static bool text_append(seq *q, const char *p, size_t n)
{
    if (q->text_len + n + 1 > q->text_cap) {
        size_t cap = q->text_cap ? q->text_cap : 256;
        while (cap < q->text_len + n + 1) cap *= 2;
        char *t = realloc(q->text, cap);
        if (!t) return false;
        q->text = t;
        q->text_cap = cap;
    }
    memcpy(q->text + q->text_len, p, n);
    q->text_len += n;
    q->text[q->text_len] = '\0';
    return true;
}

/* The log-softmax of a row of logits into q->lrow and its r.logprobs most likely ids into
 * q->ltop (lower id first on ties), for a logprobs request. */
static void logprob_row(seq *q, const float *logits, int vocab)
{
    float max = -INFINITY;
    for (int i = 0; i < vocab; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) sum += exp((double)logits[i] - max);
    const float lse = max + (float)log(sum);
    const int k = q->r.logprobs;
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        const float v = q->lrow[i] = logits[i] - lse;
        if (n == k && v <= q->lrow[q->ltop[k - 1]]) continue;
        int j = n < k ? n++ : k - 1;
        for (; j > 0 && q->lrow[q->ltop[j - 1]] < v; j--) q->ltop[j] = q->ltop[j - 1];
        q->ltop[j] = i;
    }
}

/* Room for cap generated ids' log-probabilities. */
static bool logprob_grow(seq *q, int cap)
{
    const size_t k = (size_t)q->r.logprobs;
    float *lp = realloc(q->lp, (size_t)cap * sizeof *lp);
    if (lp) q->lp = lp;
    int32_t *ids = lp ? realloc(q->lp_ids, (size_t)cap * k * sizeof *ids) : NULL;
    if (ids) q->lp_ids = ids;
    float *vals = ids ? realloc(q->lp_vals, (size_t)cap * k * sizeof *vals) : NULL;
    if (vals) q->lp_vals = vals;
    return vals != NULL;
}

static bool gen_append(seq *q, int32_t id)
{
    if (q->gen_len == q->gen_cap) {
        int cap = q->gen_cap ? 2 * q->gen_cap : 64;
        int32_t *g = realloc(q->gen, (size_t)cap * sizeof *g);
        if (!g) return false;
        q->gen = g;
        if (q->r.logprobs && !logprob_grow(q, cap)) return false;
        q->gen_cap = cap;
    }
    if (q->r.logprobs) {
        const size_t k = (size_t)q->r.logprobs, at = (size_t)q->gen_len;
        q->lp[at] = q->lrow[id];
        for (size_t i = 0; i < k; i++) {
            q->lp_ids[at * k + i] = q->ltop[i];
            q->lp_vals[at * k + i] = q->lrow[q->ltop[i]];
        }
    }
    q->gen[q->gen_len++] = id;
    return true;
}

/* Sends the text up to byte `upto` and the ids not sent yet, then forgets them: a stream
 * keeps only what it still holds back. */
static void emit(seq *q, size_t upto, sched_finish finish)
{
    sched_event ev = {
        .text = q->text ? q->text : "",
        .text_len = upto,
        .ids = q->gen,
        .n_ids = q->gen_len,
        .finish = finish,
        .prompt_tokens = q->r.n_prompt,
        .completion_tokens = q->n_gen,
        .session_id = q->sess_id[0] ? q->sess_id : NULL,
        .kv_recomputed = q->recomputed,
        .kv_discards = q->discards,
        .draft_proposed = q->proposed,
        .draft_accepted = q->accepted,
        .spec_steps = q->spec_steps,
        .logprobs = q->r.logprobs ? q->lp : NULL,
        .top_ids = q->r.logprobs ? q->lp_ids : NULL,
        .top_logprobs = q->r.logprobs ? q->lp_vals : NULL,
    };
    if (finish != SCHED_RUNNING) {
        ev.queue_seconds = q->t_admit > 0 ? q->t_admit - q->t_submit : ifn_seconds() - q->t_submit;
        ev.ttft_seconds = q->n_gen > 0 ? q->t_first - q->t_admit : 0.0;
        ev.tpot_seconds = q->n_gen > 1 ? (q->t_last - q->t_first) / (q->n_gen - 1) : 0.0;
    }
    q->r.emit(q->r.user, &ev);
    if (upto) {
        memmove(q->text, q->text + upto, q->text_len - upto + 1);
        q->text_len -= upto;
        q->text_checked = q->text_checked > upto ? q->text_checked - upto : 0;
    }
    q->gen_len = 0;
}

/* A session's KV after its request ended (under lock): kept as it is; or, for a request that
 * did not finish, rolled back to where it started, which a ring that dropped entries cannot
 * be (the session then ends). */
static void session_release(scheduler *s, seq *q, sched_finish why)
{
    session *ss = q->sess;
    ss->busy = false;
    ss->last_used = ifn_seconds();
    if (why == SCHED_CANCELLED || why == SCHED_DEADLINE || why == SCHED_SHUTDOWN) {
        if (q->discards > 0) {
            session_end(s, ss, "aborted");
            return;
        }
        if (ss->kv.len > q->start_len) ss->kv.len = q->start_len;
        ss->kv.n_hist = q->start_hist;
    }
    if (ss->kv.slot >= 0) s->held[ss->kv.slot] = ss;
}

/* Ends a request (running or already unlinked from the queue): the last event, the slot. */
static void finish(scheduler *s, seq *q, sched_finish why)
{
    size_t upto = q->text_len;
    if (why == SCHED_EOS || why == SCHED_LENGTH) {
        size_t n = 0;
        if (q->detok && detok_stream_finish(q->detok, s->piece, s->piece_cap, &n) == IFN_OK && n)
            text_append(q, s->piece, n);
        size_t match, safe;
        upto = q->text_len;
        if (stop_seq_scan((const char *const *)q->r.stop, q->r.n_stop, q->text, q->text_len, q->text_checked, &match,
                          &safe)) {
            upto = match;
            why = SCHED_STOP;
        }
    } else if (why != SCHED_STOP) {
        upto = 0; /* cancelled or stopped: nothing more is owed (a stop match already cut the text) */
    }
    if (s->met) {
        metrics_add(s->met, s->mid.finished, finish_label(why), 1);
        if (q->n_gen > 0) metrics_observe(s->met, s->mid.ttft, q->t_first - q->t_admit);
        if (q->n_gen > 1) metrics_observe(s->met, s->mid.tpot, (q->t_last - q->t_first) / (q->n_gen - 1));
    }
    /* The session and the slot are free before the client hears the end: its next turn may
     * follow at once. */
    const int slot = q->kv ? q->kv->slot : -1; /* before a session that ends takes its KV along */
    pthread_mutex_lock(&s->lock);
    if (q->sess) session_release(s, q, why);
    q->sess = NULL;
    q->kv = NULL;
    if (slot >= 0 && s->running[slot] == q) {
        s->running[slot] = NULL;
        s->n_running--;
    }
    pthread_mutex_unlock(&s->lock);
    emit(q, upto, why);
    seq_free(q);
}

/* A slot for a queued request (under lock): its session's, a free one, or the least recently
 * used idle session's, which ends; -1 if every slot is busy. */
static int find_slot(scheduler *s, const seq *q)
{
    if (q->kv->slot >= 0) return q->kv->slot; /* an idle session's own: nothing else uses it */
    session *lru = NULL;
    for (int slot = 0; slot < s->n_slots; slot++) {
        if (s->running[slot]) continue;
        if (!s->held[slot]) return slot;
        if (!s->held[slot]->busy && (!lru || s->held[slot]->last_used < lru->last_used)) lru = s->held[slot];
    }
    if (!lru) return -1;
    int slot = lru->kv.slot;
    session_end(s, lru, "evicted");
    return slot;
}

/* Ends sessions idle for longer than their time to live (under lock). */
static void expire_sessions(scheduler *s, double now)
{
    for (session *ss = s->sessions, *next; ss; ss = next) {
        next = ss->next;
        if (!ss->busy && now - ss->last_used > s->lim.session_ttl) session_end(s, ss, "expired");
    }
}

/* Drops queued requests whose client went away and admits queued requests into slots. */
static void admit(scheduler *s)
{
    seq *gone = NULL;
    double t = ifn_seconds();
    pthread_mutex_lock(&s->lock);
    expire_sessions(s, t);
    for (seq **link = &s->queue_head; *link;) {
        seq *q = *link;
        sched_finish st = q->r.check(q->r.user);
        if (st == SCHED_RUNNING) {
            link = &q->next;
            continue;
        }
        *link = q->next;
        q->next = gone;
        q->gone = st;
        gone = q;
        s->n_queued--;
    }
    for (seq **link = &s->queue_head; *link && s->n_running < s->lim.max_running;) {
        seq *q = *link;
        int slot = find_slot(s, q);
        if (slot < 0) {
            link = &q->next; /* a later request may continue a session that holds its slot */
            continue;
        }
        *link = q->next;
        q->next = NULL;
        s->n_queued--;
        if (q->kv->slot < 0) {
            q->kv->slot = slot;
            engine_slot_ring(s->eng, slot, q->kv->window, q->kv->n_keep); /* in range: checked at submit */
            if (s->lim.spec.mode == SCHED_SPEC_DRAFT) engine_slot_ring(s->lim.spec.draft, slot, q->kv->window, q->kv->n_keep);
        }
        if (q->sess) s->held[slot] = q->sess;
        q->t_admit = t;
        s->running[slot] = q;
        s->n_running++;
        if (s->met) metrics_observe(s->met, s->mid.queue_time, t - q->t_submit);
    }
    s->queue_tail = NULL;
    for (seq *q = s->queue_head; q; q = q->next) s->queue_tail = q;
    if (s->met) {
        metrics_set(s->met, s->mid.waiting, s->n_queued);
        metrics_set(s->met, s->mid.running, s->n_running);
    }
    pthread_mutex_unlock(&s->lock);
    for (seq *q = gone, *next; q; q = next) {
        next = q->next;
        finish(s, q, q->gone);
    }
}

/* How the ranks should return a sequence's scores into these buffers (room for the rows asked). */
static engine_output output_into(const seq *q, float *logits, int32_t *ids, float *vals)
{
    const sampler_params *p = &q->r.sampling;
    if (!sampler_needs_full_logits(p) && !q->r.logprobs) {
        if (p->temperature == 0.0f) return (engine_output){ .mode = ENGINE_LOGITS_ARGMAX, .ids = ids, .values = vals };
        if (p->top_k <= TOPK_MAX)
            return (engine_output){ .mode = ENGINE_LOGITS_TOPK, .top_k = p->top_k, .ids = ids, .values = vals };
    }
    return (engine_output){ .mode = ENGINE_LOGITS_FULL, .logits = logits };
}

/* The target's outputs of a sequence: its slot's s->rows rows. */
static engine_output output_for(scheduler *s, const seq *q)
{
    const size_t row0 = (size_t)q->kv->slot * (size_t)s->rows;
    return output_into(q, s->logits + row0 * (size_t)s->vocab, s->top_ids + row0 * TOPK_MAX, s->top_vals + row0 * TOPK_MAX);
}

/* The token a sequence's sampler picks from output row i, given the history[n] before it. */
static int32_t row_pick(seq *q, const engine_output *o, int i, int vocab, const int32_t *history, int n)
{
    switch (o->mode) {
    case ENGINE_LOGITS_FULL: return sampler_sample(q->smp, o->logits + (size_t)i * (size_t)vocab, history, (size_t)n);
    case ENGINE_LOGITS_TOPK:
        return sampler_sample_top(q->smp, o->ids + (size_t)i * (size_t)o->top_k, o->values + (size_t)i * (size_t)o->top_k,
                                  o->top_k);
    default: return o->ids[i];
    }
}

/* The distribution a sampled sequence draws from at output row i (FULL or TOPK). */
static sampler_dist row_dist(seq *q, const engine_output *o, int i, int vocab, const int32_t *history, int n)
{
    if (o->mode == ENGINE_LOGITS_FULL)
        return sampler_distribution(q->smp, o->logits + (size_t)i * (size_t)vocab, history, (size_t)n);
    return sampler_distribution_top(q->smp, o->ids + (size_t)i * (size_t)o->top_k, o->values + (size_t)i * (size_t)o->top_k,
                                    o->top_k);
}

/* Whether the step being built already has a sequence in this slot. */
static bool in_step(const scheduler *s, int n, int slot)
{
    for (int k = 0; k < n; k++)
        if (s->step[k].slot == slot) return true;
    return false;
}

/* A sequence whose prompt is in and whose only waiting token is its last sampled one. */
static bool decoding(const seq *q)
{
    return q->n_fed == q->r.n_prompt && q->kv->n_hist - q->kv->len == 1;
}

/* Tokens of a sequence this step can take: those waiting to be evaluated (in its hist, then
 * the rest of its prompt), at most cap and at most the ring's positions after the sinks. */
static int step_take(const seq *q, int cap)
{
    const int waiting = q->kv->n_hist - q->kv->len + (q->r.n_prompt - q->n_fed);
    const int room = q->kv->window - q->kv->n_keep;
    const int c = waiting < cap ? waiting : cap;
    return c < room ? c : room;
}

/* Makes room in a full ring for c more tokens (n_discard > 0): the oldest non-sinks go, as
 * many multiples of n_discard as needed and at most what exists. Returns how many the engine
 * drops with shift-RoPE; with kv_recompute, 0: the kept window then waits to be evaluated
 * again. The draft's cache follows: it drops the same entries at its next step, or keeps
 * only the sinks when it held fewer. */
static int drop_oldest(scheduler *s, seq *q, int c)
{
    kvseq *kv = q->kv;
    const int over = kv->len + c - kv->window;
    int d = (over + kv->n_discard - 1) / kv->n_discard * kv->n_discard;
    if (d > kv->len - kv->n_keep) d = kv->len - kv->n_keep;
    memmove(kv->hist + kv->n_keep, kv->hist + kv->n_keep + d, (size_t)(kv->n_hist - kv->n_keep - d) * sizeof *kv->hist);
    kv->n_hist -= d;
    q->discards++;
    if (s->met) metrics_add(s->met, s->mid.kv_discards, NULL, 1);
    if (kv->dlen > kv->n_keep) {
        if (!s->lim.kv_recompute && kv->dlen >= kv->n_keep + d) {
            kv->dlen -= d;
            kv->ddiscard += d;
        } else {
            kv->dlen = kv->n_keep;
        }
    }
    if (s->lim.kv_recompute) {
        kv->len = kv->n_keep;
        q->recomputed = true;
        return 0;
    }
    kv->len -= d;
    return d;
}

/* How many of a sequence's waiting tokens this step takes (at most cap), moving prompt tokens
 * into its hist. When they would overflow the ring, the oldest non-sinks go first: *discard
 * says how many the engine drops with shift-RoPE, or with kv_recompute the kept window waits
 * to be evaluated again. 0: the window is full and never drops entries. */
static int plan_chunk(scheduler *s, seq *q, int cap, int *discard)
{
    kvseq *kv = q->kv;
    int c = step_take(q, cap);
    *discard = 0;
    if (kv->len + c > kv->window) {
        if (kv->n_discard == 0) {
            c = kv->window - kv->len;
            if (c <= 0) return 0;
        } else {
            *discard = drop_oldest(s, q, c);
            if (s->lim.kv_recompute) c = step_take(q, cap);
        }
    }
    const int from_prompt = c - (kv->n_hist - kv->len);
    if (from_prompt > 0) {
        memcpy(kv->hist + kv->n_hist, q->r.prompt + q->n_fed, (size_t)from_prompt * sizeof *kv->hist);
        kv->n_hist += from_prompt;
        q->n_fed += from_prompt;
    }
    return c;
}

/* One new token for a sequence: end of generation, text, stop sequences, length. A stream
 * hears of it when `last` (the step's last token for the sequence). Returns false if the
 * request finished (q is gone). */
static bool accept_token(scheduler *s, seq *q, int32_t id, double t, bool last)
{
    if (!q->r.ignore_eos && s->tok && tokenizer_is_eog(s->tok, id)) {
        finish(s, q, SCHED_EOS);
        return false;
    }
    if (!gen_append(q, id)) {
        finish(s, q, SCHED_SHUTDOWN); /* out of memory for the ids: end this request only */
        return false;
    }
    q->kv->hist[q->kv->n_hist++] = id; /* evaluated in the next step */
    if (q->n_gen++ == 0) q->t_first = t;
    q->t_last = t;
    if (s->met) metrics_add(s->met, s->mid.generated_tokens, NULL, 1);
    size_t safe = q->text_len;
    if (q->detok) {
        size_t n = 0;
        if (detok_stream_push(q->detok, id, s->piece, s->piece_cap, &n) == IFN_OK && n && !text_append(q, s->piece, n)) {
            finish(s, q, SCHED_SHUTDOWN); /* out of memory for the text: end this request only */
            return false;
        }
        size_t match;
        if (stop_seq_scan((const char *const *)q->r.stop, q->r.n_stop, q->text, q->text_len, q->text_checked, &match,
                          &safe)) {
            q->text_len = match;
            finish(s, q, SCHED_STOP);
            return false;
        }
        q->text_checked = q->text_len;
    }
    if (q->n_gen == q->r.max_new_tokens) {
        finish(s, q, SCHED_LENGTH);
        return false;
    }
    if (last && q->r.stream && (safe > 0 || !q->detok)) emit(q, safe, SCHED_RUNNING);
    return true;
}

/* How many tokens to propose to a decoding sequence this step: the adaptive K, within what
 * its request still wants, its ring holds and the step's budget. */
static int spec_k_for(scheduler *s, seq *q, int budget)
{
    const kvseq *kv = q->kv;
    const double a = (q->spec_acc + SPEC_PRIOR_ACCEPTED) / (q->spec_acc + q->spec_rej + SPEC_PRIOR_ACCEPTED + SPEC_PRIOR_REJECTED);
    int k = s->lim.spec.fixed ? q->spec_k : spec_choose_k(a, s->step_cost, q->spec_k);
    if (k == 0) {
        if (++q->spec_idle < SPEC_PROBE_STEPS) return 0;
        k = 1; /* the estimate may be stale: try again */
    }
    q->spec_idle = 0;
    const int left = q->r.max_new_tokens - q->n_gen - 1; /* the step accepts at most k + 1 tokens */
    if (k > left) k = left;
    /* A step that overflows the ring is a plain one: the proposals would otherwise see a
     * context dropped earlier than plain decoding drops it, and greedy output would differ. */
    if (k > kv->window - kv->len - 1) k = kv->window - kv->len - 1;
    if (k > budget) k = budget;
    return k > 0 ? k : 0;
}

/* Decides which decoding sequences speculate this step and how far, and fills in prompt
 * lookup's proposals (a draft model's come from draft_rounds). */
static void spec_plan(scheduler *s)
{
    int budget = s->lim.max_step_tokens - s->n_running; /* one token for every running sequence first */
    for (int slot = 0; slot < s->n_slots; slot++) {
        seq *q = s->running[slot];
        if (!q) continue;
        q->n_prop = 0;
        if (!q->spec_k || !decoding(q)) continue;
        int k = spec_k_for(s, q, budget);
        if (k == 0) continue;
        kvseq *kv = q->kv;
        if (s->lim.spec.mode == SCHED_SPEC_NGRAM && (k = spec_ngram_propose(kv->hist, kv->n_hist, k, kv->hist + kv->n_hist)) == 0)
            continue;
        q->n_prop = k;
        budget -= k;
    }
}

/* A proposal from the draft's output row for a sequence: greedy, or drawn from the draft's
 * distribution, which is kept (dense) for the verification. */
static int32_t draft_pick(scheduler *s, seq *q, const engine_output *o, int i)
{
    const kvseq *kv = q->kv;
    const int n = kv->n_hist + i;
    if (q->r.sampling.temperature == 0.0f) return row_pick(q, o, 0, s->vocab, kv->hist, n);
    sampler_dist d = row_dist(q, o, 0, s->vocab, kv->hist, n);
    float *qd = q->q + (size_t)i * (size_t)s->vocab;
    memset(qd, 0, (size_t)s->vocab * sizeof *qd);
    for (int c = 0; c < d.n; c++) qd[d.ids[c]] = (float)(d.p[c] / d.sum);
    return sampler_pick(q->smp, &d);
}

/* The draft model's proposals: steps over every sequence that speculates, each first
 * catching up on the tokens its draft cache lacks (one or more steps of at most the draft's
 * batch), then one step per proposal. */
static ifn_status draft_rounds(scheduler *s)
{
    engine *d = s->lim.spec.draft;
    for (int slot = 0; slot < s->n_slots; slot++) {
        s->drafted[slot] = 0;
        seq *q = s->running[slot];
        if (q && q->n_prop > 0 && q->kv->dlen > q->kv->len) q->kv->dlen = q->kv->len;
    }
    for (;;) {
        int n = 0, budget = engine_n_batch(d);
        for (int slot = 0; slot < s->n_slots && budget > 0; slot++) {
            seq *q = s->running[slot];
            if (!q || s->drafted[slot] >= q->n_prop) continue;
            kvseq *kv = q->kv;
            const int pending = kv->n_hist + s->drafted[slot] - kv->dlen, c = pending < budget ? pending : budget;
            engine_seq *es = &s->step[n];
            *es = (engine_seq){ .slot = slot, .discard = kv->ddiscard, .pos0 = kv->dlen, .n_tokens = c,
                                .tokens = kv->hist + kv->dlen, .n_out = c == pending ? 1 : 0,
                                .out = { .mode = ENGINE_LOGITS_NONE } };
            if (es->n_out)
                es->out = output_into(q, s->draft_logits + (size_t)slot * (size_t)s->vocab,
                                      s->draft_ids + (size_t)slot * TOPK_MAX, s->draft_vals + (size_t)slot * TOPK_MAX);
            kv->ddiscard = 0;
            s->step_seq[n++] = q;
            budget -= c;
        }
        if (n == 0) break;
        CHECK(engine_step(d, s->step, n));
        for (int i = 0; i < n; i++) {
            seq *q = s->step_seq[i];
            engine_seq *es = &s->step[i];
            kvseq *kv = q->kv;
            kv->dlen = es->pos0 + es->n_tokens;
            if (es->n_out == 0) continue;
            const int slot = es->slot;
            kv->hist[kv->n_hist + s->drafted[slot]] = draft_pick(s, q, &es->out, s->drafted[slot]);
            s->drafted[slot]++;
        }
    }
    return IFN_OK;
}

/* After a step that evaluated a sequence's last token and its k proposals: the proposals the
 * target agrees with, then the target's own next token; the rejected entries of both caches
 * are rolled back. */
static void spec_verify(scheduler *s, seq *q, const engine_seq *es, double t)
{
    kvseq *kv = q->kv;
    const int k = q->n_prop, len0 = kv->len, n_hist = kv->n_hist;
    const int32_t *prop = kv->hist + n_hist;
    const float *qd = q->q;
    int32_t tok[SPEC_MAX_DRAFT + 1];
    int n = 0;
    for (int i = 0; i <= k; i++) {
        bool agreed = false;
        if (q->r.sampling.temperature == 0.0f || i == k) {
            tok[n] = row_pick(q, &es->out, i, s->vocab, kv->hist, n_hist + i);
            agreed = i < k && tok[n] == prop[i];
        } else {
            sampler_dist p = row_dist(q, &es->out, i, s->vocab, kv->hist, n_hist + i);
            tok[n] = spec_verify_token(q->smp, &p, prop[i], qd ? qd + (size_t)i * (size_t)s->vocab : NULL, &agreed);
        }
        n++;
        if (!agreed) break;
    }
    const int accepted = n - 1;
    q->proposed += k;
    q->accepted += accepted;
    q->spec_steps++;
    q->spec_acc = SPEC_DECAY * q->spec_acc + accepted;
    q->spec_rej = SPEC_DECAY * q->spec_rej + (accepted < k);
    if (s->met) {
        metrics_add(s->met, s->mid.spec_proposed, NULL, k);
        metrics_add(s->met, s->mid.spec_accepted, NULL, accepted);
        metrics_observe(s->met, s->mid.spec_draft_len, k);
    }
    q->n_prop = 0;
    for (int i = 0; i < n; i++) {
        kv->len = kv->n_hist = len0 + 1 + i; /* the last token and the accepted proposals before tok[i] */
        if (!accept_token(s, q, tok[i], t, i == n - 1)) return;
    }
}

ifn_status scheduler_step(scheduler *s, double wait_seconds)
{
    /* Requests that went away, then admissions at this step boundary. */
    for (int slot = 0; slot < s->n_slots; slot++) {
        seq *q = s->running[slot];
        if (!q) continue;
        sched_finish st = q->r.check(q->r.user);
        if (st != SCHED_RUNNING) finish(s, q, st);
    }
    admit(s);

    pthread_mutex_lock(&s->lock);
    if (s->n_running == 0) {
        if (s->n_queued == 0 && wait_seconds > 0) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            double end = (double)until.tv_nsec * 1e-9 + wait_seconds;
            until.tv_sec += (time_t)end;
            until.tv_nsec = (long)((end - floor(end)) * 1e9);
            pthread_cond_timedwait(&s->wake, &s->lock, &until);
        }
        pthread_mutex_unlock(&s->lock);
        return IFN_OK;
    }
    pthread_mutex_unlock(&s->lock);

    if (s->lim.spec.mode != SCHED_SPEC_OFF) spec_plan(s);
    if (s->lim.spec.mode == SCHED_SPEC_DRAFT) CHECK(draft_rounds(s));

    /* The step: every decoding sequence's next token (and its proposals), then prompt chunks
     * while room is left. */
    int n = 0, budget = s->lim.max_step_tokens, prompt_tokens = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int slot = 0; slot < s->n_slots && budget > 0; slot++) {
            seq *q = s->running[slot];
            if (!q) continue;
            const bool dec = decoding(q);
            if (dec != (pass == 0)) continue;
            if (pass == 1 && in_step(s, n, slot)) continue; /* a decode whose ring is evaluated again */
            kvseq *kv = q->kv;
            engine_seq *es = &s->step[n];
            if (q->n_prop > 0) {
                *es = (engine_seq){ .slot = slot, .pos0 = kv->len, .n_tokens = 1 + q->n_prop,
                                    .tokens = kv->hist + kv->len, .n_out = 1 + q->n_prop, .out = output_for(s, q) };
            } else {
                int discard, cap = s->lim.prefill_chunk < budget ? s->lim.prefill_chunk : budget;
                int chunk = plan_chunk(s, q, cap, &discard);
                if (chunk == 0) {
                    finish(s, q, SCHED_LENGTH); /* its window is full and never drops entries */
                    continue;
                }
                const bool last = kv->len + chunk == kv->n_hist && q->n_fed == q->r.n_prompt;
                *es = (engine_seq){ .slot = slot, .discard = discard, .pos0 = kv->len, .n_tokens = chunk,
                                    .tokens = kv->hist + kv->len, .n_out = last ? 1 : 0,
                                    .out = { .mode = ENGINE_LOGITS_NONE } };
                if (last) es->out = output_for(s, q);
                if (!dec) prompt_tokens += chunk;
            }
            s->step_seq[n++] = q;
            budget -= es->n_tokens;
        }
    if (n == 0) return IFN_OK;
    ifn_status st = engine_step(s->eng, s->step, n);
    if (st != IFN_OK) return st;
    double t = ifn_seconds();
    for (int i = 0; i < n; i++) {
        seq *q = s->step_seq[i];
        engine_seq *es = &s->step[i];
        if (q->n_prop > 0) {
            spec_verify(s, q, es, t);
            continue;
        }
        q->kv->len += es->n_tokens;
        if (es->n_out == 0) continue;
        if (q->r.logprobs) logprob_row(q, es->out.logits, s->vocab); /* before the sampler changes the logits */
        accept_token(s, q, row_pick(q, &es->out, 0, s->vocab, q->kv->hist, q->kv->n_hist), t, true);
    }
    if (s->met) {
        int tokens = s->lim.max_step_tokens - budget, positions = 0, slots = 0;
        metrics_add(s->met, s->mid.steps, NULL, 1);
        metrics_add(s->met, s->mid.prompt_tokens, NULL, prompt_tokens);
        metrics_observe(s->met, s->mid.step_tokens, tokens);
        metrics_observe(s->met, s->mid.step_seqs, n);
        pthread_mutex_lock(&s->lock);
        for (int slot = 0; slot < s->n_slots; slot++) {
            const kvseq *kv = s->running[slot] ? s->running[slot]->kv : s->held[slot] ? &s->held[slot]->kv : NULL;
            if (!kv) continue;
            positions += kv->len;
            slots++;
        }
        metrics_set(s->met, s->mid.kv_positions, positions);
        metrics_set(s->met, s->mid.kv_slots, slots);
        metrics_set(s->met, s->mid.kv_bytes_used, (double)engine_kv_bytes(s->eng) / s->n_slots * slots);
        metrics_set(s->met, s->mid.running, s->n_running);
        pthread_mutex_unlock(&s->lock);
    }
    return IFN_OK;
}

void scheduler_abort_all(scheduler *s)
{
    for (int slot = 0; slot < s->n_slots; slot++)
        if (s->running[slot]) finish(s, s->running[slot], SCHED_SHUTDOWN);
    pthread_mutex_lock(&s->lock);
    seq *q = s->queue_head;
    s->queue_head = s->queue_tail = NULL;
    s->n_queued = 0;
    pthread_mutex_unlock(&s->lock);
    for (seq *next; q; q = next) {
        next = q->next;
        finish(s, q, SCHED_SHUTDOWN);
    }
}
