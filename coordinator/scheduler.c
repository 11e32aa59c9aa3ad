#include "scheduler.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "stop_seq.h"

/* Top-k sampling asks the ranks for this many candidates at most; larger k needs every logit. */
#define TOPK_MAX 64

typedef struct seq {
    sched_request r;
    int slot;             /* KV slot while running, -1 while queued */
    int32_t *tokens;      /* [n_prompt + max_new_tokens]: the prompt, then the generated tokens */
    int n_tokens;         /* prompt + generated so far */
    int n_cached;         /* tokens[0..n_cached) are in the slot's KV cache */
    int n_gen;
    sampler *smp;
    detok_stream *detok;  /* NULL without a tokenizer */
    char *text;           /* [text_len] generated text; text[0..text_sent) was emitted */
    size_t text_len, text_cap, text_sent, text_checked;
    int ids_sent;         /* generated ids already emitted */
    sched_finish gone;    /* why a queued request is being dropped */
    double t_submit, t_admit, t_first, t_last;
    struct seq *next;     /* queue link */
} seq;

/* Metric ids (see scheduler_create). */
typedef struct {
    int running, waiting, prompt_tokens, generated_tokens, finished, ttft, tpot, queue_time;
    int step_tokens, step_seqs, steps, kv_slots, kv_positions;
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
    seq **running;                /* [n_slots]: NULL = free slot (engine thread only) */
    int n_running;                /* written by the engine thread under lock */
    /* step buffers */
    engine_seq *step;             /* [n_slots] */
    seq **step_seq;               /* [n_slots] */
    float *logits;                /* [n_slots][vocab] */
    int32_t *top_ids;             /* [n_slots][TOPK_MAX] */
    float *top_vals;              /* [n_slots][TOPK_MAX] */
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
    CHECK(metrics_gauge(m, "infernode_kv_slots_used", "KV cache slots in use", &id->kv_slots));
    CHECK(metrics_gauge(m, "infernode_kv_positions_used", "KV cache positions holding entries, all slots",
                        &id->kv_positions));
    return IFN_OK;
}

ifn_status scheduler_create(engine *e, const tokenizer *tok, metrics *m, const sched_limits *lim, scheduler **out)
{
    *out = NULL;
    int n_batch = engine_n_batch(e), n_slots = engine_n_slots(e);
    if (lim->max_queue < 0 || lim->max_step_tokens < 1 || lim->prefill_chunk < 1)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "scheduler limits: queue %d, step tokens %d, prefill chunk %d",
                             lim->max_queue, lim->max_step_tokens, lim->prefill_chunk);
    if (lim->max_step_tokens > n_batch)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d tokens per step is more than the engine's batch of %d",
                             lim->max_step_tokens, n_batch);
    if (lim->max_step_tokens < n_slots)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d tokens per step cannot hold one token for each of %d sequences",
                             lim->max_step_tokens, n_slots);
    scheduler *s = calloc(1, sizeof *s);
    if (!s) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the scheduler");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->eng = e;
    s->tok = tok;
    s->met = m;
    s->lim = *lim;
    s->n_slots = n_slots;
    s->ctx_size = engine_ctx_size(e);
    s->vocab = engine_config(e)->vocab_size;
    s->piece_cap = 64 + (tok ? tokenizer_max_token_bytes(tok) : 0);
    s->running = calloc((size_t)n_slots, sizeof *s->running);
    s->step = calloc((size_t)n_slots, sizeof *s->step);
    s->step_seq = calloc((size_t)n_slots, sizeof *s->step_seq);
    s->logits = malloc((size_t)n_slots * (size_t)s->vocab * sizeof *s->logits);
    s->top_ids = malloc((size_t)n_slots * TOPK_MAX * sizeof *s->top_ids);
    s->top_vals = malloc((size_t)n_slots * TOPK_MAX * sizeof *s->top_vals);
    s->piece = malloc(s->piece_cap);
    if (!s->running || !s->step || !s->step_seq || !s->logits || !s->top_ids || !s->top_vals || !s->piece) {
        scheduler_destroy(s);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the scheduler's %d slots", n_slots);
    }
    ifn_status st = m ? register_metrics(s) : IFN_OK;
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
    free(q->tokens);
    free(q->text);
    sampler_destroy(q->smp);
    detok_stream_destroy(q->detok);
    free(q);
}

void scheduler_destroy(scheduler *s)
{
    if (!s) return;
    for (int i = 0; s->running && i < s->n_slots; i++) seq_free(s->running[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    for (seq *q = s->queue_head, *next; q; q = next) {
        next = q->next;
        seq_free(q);
    }
    free(s->running);
    free(s->step);
    free(s->step_seq);
    free(s->logits);
    free(s->top_ids);
    free(s->top_vals);
    free(s->piece);
    free(s);
}

ifn_status scheduler_submit(scheduler *s, const sched_request *r)
{
    if (r->n_prompt < 1 || r->max_new_tokens < 1 || r->n_prompt + r->max_new_tokens > s->ctx_size)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a prompt of %d tokens and %d new tokens do not fit a context of %d",
                             r->n_prompt, r->max_new_tokens, s->ctx_size);
    seq *q = calloc(1, sizeof *q);
    if (!q) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a request");
    q->slot = -1;
    q->tokens = malloc((size_t)(r->n_prompt + r->max_new_tokens) * sizeof *q->tokens);
    ifn_status st = q->tokens ? sampler_create(&r->sampling, s->vocab, &q->smp)
                              : ifn_error_set(IFN_ERR_NOMEM, "no memory for a request of %d tokens",
                                              r->n_prompt + r->max_new_tokens);
    if (st == IFN_OK && s->tok) st = detok_stream_create(s->tok, false, &q->detok);
    if (st != IFN_OK) {
        sampler_destroy(q->smp);
        free(q->tokens);
        free(q);
        return st;
    }
    memcpy(q->tokens, r->prompt, (size_t)r->n_prompt * sizeof *q->tokens);
    q->n_tokens = r->n_prompt;
    q->t_submit = ifn_seconds();

    pthread_mutex_lock(&s->lock);
    if (s->n_queued >= s->lim.max_queue) {
        int queued = s->n_queued;
        pthread_mutex_unlock(&s->lock);
        sampler_destroy(q->smp);
        detok_stream_destroy(q->detok);
        free(q->tokens);
        free(q);
        return ifn_error_set(IFN_ERR_RANGE, "the queue is full (%d requests waiting)", queued);
    }
    q->r = *r; /* ownership of prompt and stops moves here, after the last way to fail */
    if (s->queue_tail) s->queue_tail->next = q;
    else s->queue_head = q;
    s->queue_tail = q;
    s->n_queued++;
    if (s->met) metrics_set(s->met, s->mid.waiting, s->n_queued);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return IFN_OK;
}

int scheduler_pending(scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n_queued + s->n_running;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Appends bytes to the sequence's generated text. */
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

/* Sends what the request has not seen yet, up to text byte `upto`. */
static void emit(scheduler *s, seq *q, size_t upto, sched_finish finish)
{
    sched_event ev = {
        .text = q->text ? q->text + q->text_sent : "",
        .text_len = upto - q->text_sent,
        .ids = q->tokens + q->r.n_prompt + q->ids_sent,
        .n_ids = q->n_gen - q->ids_sent,
        .finish = finish,
        .prompt_tokens = q->r.n_prompt,
        .completion_tokens = q->n_gen,
    };
    if (finish != SCHED_RUNNING) {
        ev.queue_seconds = q->t_admit > 0 ? q->t_admit - q->t_submit : ifn_seconds() - q->t_submit;
        ev.ttft_seconds = q->n_gen > 0 ? q->t_first - q->t_admit : 0.0;
        ev.tpot_seconds = q->n_gen > 1 ? (q->t_last - q->t_first) / (q->n_gen - 1) : 0.0;
    }
    q->text_sent = upto;
    q->ids_sent = q->n_gen;
    q->r.emit(q->r.user, &ev);
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
    } else if (why == SCHED_STOP) {
        upto = q->text_len; /* already cut at the match */
    } else {
        upto = q->text_sent; /* cancelled or stopped: nothing more is owed */
    }
    emit(s, q, upto, why);
    if (s->met) {
        metrics_add(s->met, s->mid.finished, finish_label(why), 1);
        if (q->n_gen > 0) metrics_observe(s->met, s->mid.ttft, q->t_first - q->t_admit);
        if (q->n_gen > 1) metrics_observe(s->met, s->mid.tpot, (q->t_last - q->t_first) / (q->n_gen - 1));
    }
    if (q->slot >= 0) {
        s->running[q->slot] = NULL;
        pthread_mutex_lock(&s->lock);
        s->n_running--;
        pthread_mutex_unlock(&s->lock);
    }
    seq_free(q);
}

/* Drops queued requests whose client went away and admits queued requests into free slots. */
static void admit(scheduler *s)
{
    seq *gone = NULL;
    double t = ifn_seconds();
    pthread_mutex_lock(&s->lock);
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
    s->queue_tail = NULL;
    for (seq *q = s->queue_head; q; q = q->next) s->queue_tail = q;
    for (int slot = 0; slot < s->n_slots && s->queue_head; slot++) {
        if (s->running[slot]) continue;
        seq *q = s->queue_head;
        s->queue_head = q->next;
        if (!s->queue_head) s->queue_tail = NULL;
        s->n_queued--;
        q->next = NULL;
        q->slot = slot;
        q->t_admit = t;
        s->running[slot] = q;
        s->n_running++;
        if (s->met) metrics_observe(s->met, s->mid.queue_time, t - q->t_submit);
    }
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

/* How the ranks should return a sequence's next-token scores. */
static engine_output output_for(scheduler *s, const seq *q)
{
    size_t slot = (size_t)q->slot;
    const sampler_params *p = &q->r.sampling;
    if (!sampler_needs_full_logits(p)) {
        if (p->temperature == 0.0f)
            return (engine_output){ .mode = ENGINE_LOGITS_ARGMAX, .ids = s->top_ids + slot * TOPK_MAX,
                                    .values = s->top_vals + slot * TOPK_MAX };
        if (p->top_k <= TOPK_MAX)
            return (engine_output){ .mode = ENGINE_LOGITS_TOPK, .top_k = p->top_k, .ids = s->top_ids + slot * TOPK_MAX,
                                    .values = s->top_vals + slot * TOPK_MAX };
    }
    return (engine_output){ .mode = ENGINE_LOGITS_FULL, .logits = s->logits + slot * (size_t)s->vocab };
}

/* One new token for a sequence: end of generation, text, stop sequences, length. */
static void accept_token(scheduler *s, seq *q, int32_t id, double t)
{
    if (!q->r.ignore_eos && s->tok && tokenizer_is_eog(s->tok, id)) {
        finish(s, q, SCHED_EOS);
        return;
    }
    q->tokens[q->n_tokens++] = id;
    if (q->n_gen++ == 0) q->t_first = t;
    q->t_last = t;
    if (s->met) metrics_add(s->met, s->mid.generated_tokens, NULL, 1);
    size_t safe = q->text_len;
    if (q->detok) {
        size_t n = 0;
        if (detok_stream_push(q->detok, id, s->piece, s->piece_cap, &n) == IFN_OK && n && !text_append(q, s->piece, n)) {
            finish(s, q, SCHED_SHUTDOWN); /* out of memory for the text: end this request only */
            return;
        }
        size_t match;
        if (stop_seq_scan((const char *const *)q->r.stop, q->r.n_stop, q->text, q->text_len, q->text_checked, &match,
                          &safe)) {
            q->text_len = match;
            finish(s, q, SCHED_STOP);
            return;
        }
        q->text_checked = q->text_len;
    }
    if (q->n_gen == q->r.max_new_tokens) { /* submit made sure the context has room for them */
        finish(s, q, SCHED_LENGTH);
        return;
    }
    if (q->r.stream && (safe > q->text_sent || !q->detok)) emit(s, q, safe, SCHED_RUNNING);
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

    /* The step: every decoding sequence's next token, then prompt chunks while room is left. */
    int n = 0, budget = s->lim.max_step_tokens, positions = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int slot = 0; slot < s->n_slots && budget > 0; slot++) {
            seq *q = s->running[slot];
            if (!q) continue;
            bool decoding = q->n_cached >= q->r.n_prompt;
            if (decoding != (pass == 0)) continue;
            int chunk = q->n_tokens - q->n_cached;
            if (chunk > s->lim.prefill_chunk) chunk = s->lim.prefill_chunk;
            if (chunk > budget) chunk = budget;
            bool last = q->n_cached + chunk == q->n_tokens;
            engine_seq *es = &s->step[n];
            *es = (engine_seq){ .slot = slot, .pos0 = q->n_cached, .n_tokens = chunk, .tokens = q->tokens + q->n_cached,
                                .n_out = last ? 1 : 0, .out = { .mode = ENGINE_LOGITS_NONE } };
            if (last) es->out = output_for(s, q);
            s->step_seq[n++] = q;
            budget -= chunk;
        }
    ifn_status st = engine_step(s->eng, s->step, n);
    if (st != IFN_OK) return st;
    double t = ifn_seconds();
    int prompt_tokens = 0;
    for (int i = 0; i < n; i++) {
        seq *q = s->step_seq[i];
        engine_seq *es = &s->step[i];
        if (q->n_cached < q->r.n_prompt) prompt_tokens += es->n_tokens;
        q->n_cached += es->n_tokens;
        if (es->n_out == 0) continue;
        int32_t id;
        if (es->out.mode == ENGINE_LOGITS_FULL) id = sampler_sample(q->smp, es->out.logits, q->tokens, (size_t)q->n_tokens);
        else id = sampler_sample_top(q->smp, es->out.ids, es->out.values, es->out.mode == ENGINE_LOGITS_TOPK ? es->out.top_k : 1);
        accept_token(s, q, id, t);
    }
    for (int slot = 0; slot < s->n_slots; slot++)
        if (s->running[slot]) positions += s->running[slot]->n_cached;
    if (s->met) {
        int tokens = s->lim.max_step_tokens - budget;
        metrics_add(s->met, s->mid.steps, NULL, 1);
        metrics_add(s->met, s->mid.prompt_tokens, NULL, prompt_tokens);
        metrics_observe(s->met, s->mid.step_tokens, tokens);
        metrics_observe(s->met, s->mid.step_seqs, n);
        metrics_set(s->met, s->mid.kv_positions, positions);
        pthread_mutex_lock(&s->lock);
        metrics_set(s->met, s->mid.kv_slots, s->n_running);
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
