/* The scheduler's request lifecycle and its step (scheduler.h; the other concerns are in the
 * files scheduler_internal.h lists).
 *
 * Owns: creating and destroying the scheduler, submission (all-or-nothing: a refused request
 * leaves the queue, the sessions and the caller's prompt and stops as they were), the queue,
 * admission into slots at a step boundary, and scheduler_step, which reads as plan (who
 * speculates, then every decoding sequence's token and prompt chunks within max_step_tokens),
 * step (one engine_step) and accept (each sequence's outputs become tokens and events).
 *
 * Invariants: a request is in exactly one of the queue (under lock), running[] (its slot) or
 * being finished; n_queued and n_running count them; a running request's kv->slot is the slot
 * it runs in; a step never holds two entries for one slot. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "scheduler_internal.h"

#define DEFAULT_SESSION_TTL 600.0

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
    if (st == IFN_OK && sp->mode != SCHED_SPEC_OFF) st = spec_driver_costs(s);
    if (st != IFN_OK) {
        scheduler_destroy(s);
        return st;
    }
    *out = s;
    return IFN_OK;
}

void seq_free(seq *q)
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

ifn_status scheduler_submit(scheduler *s, const sched_request *r)
{
    if (r->n_prompt < 1 || r->max_new_tokens < 1)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a prompt of %d tokens and %d new tokens", r->n_prompt,
                             r->max_new_tokens);
    if (r->new_session && r->session)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "session_id: a request continues a session or starts one, not both");
    if (!r->session) {
        CHECK(kvseq_check_ring(s, r));
        CHECK(kvseq_check_fit(&(kvseq){ .window = r->window, .n_discard = r->n_discard }, r));
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
    /* A handler that found the server ready may submit after the drain ended: no step would
     * ever run the request, so it is refused here, under the lock abort_all closes with. */
    if (st == IFN_OK && s->closed) st = ifn_error_set(IFN_ERR_UNAVAILABLE, "the server is shutting down");
    if (st == IFN_OK && s->n_queued >= s->lim.max_queue)
        st = ifn_error_set(IFN_ERR_RANGE, "the queue is full (%d requests waiting)", s->n_queued);
    if (st == IFN_OK && r->session) {
        q->sess = session_find(s, r->session);
        if (!q->sess)
            st = ifn_error_set(IFN_ERR_NOT_FOUND, "session_id: no session %s (it may have expired after %.0f s idle, "
                               "been evicted for another sequence's KV, or been deleted)", r->session, s->lim.session_ttl);
        else if (q->sess->busy)
            st = ifn_error_set(IFN_ERR_BUSY, "session_id: session %s already has a request queued or running", r->session);
        else if ((st = kvseq_check_fit(&q->sess->kv, r)) == IFN_OK)
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

int scheduler_pending(scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n_queued + s->n_running;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Drops queued requests whose client went away and admits queued requests into slots. */
static void admit(scheduler *s)
{
    seq *gone = NULL;
    double t = ifn_seconds();
    pthread_mutex_lock(&s->lock);
    session_expire_idle(s, t);
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
        int slot = session_find_slot(s, q);
        if (slot < 0) {
            link = &q->next; /* a later request may continue a session that holds its slot */
            continue;
        }
        *link = q->next;
        q->next = NULL;
        s->n_queued--;
        if (q->kv->slot < 0) kvseq_place(s, q->kv, slot);
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
        seq_finish(s, q, q->gone);
    }
}

/* Whether the step being built already has a sequence in this slot. */
static bool in_step(const scheduler *s, int n, int slot)
{
    for (int k = 0; k < n; k++)
        if (s->step[k].slot == slot) return true;
    return false;
}

/* Ends the running requests whose client went away or whose deadline passed. */
static void drop_gone(scheduler *s)
{
    for (int slot = 0; slot < s->n_slots; slot++) {
        seq *q = s->running[slot];
        if (!q) continue;
        sched_finish st = q->r.check(q->r.user);
        if (st != SCHED_RUNNING) seq_finish(s, q, st);
    }
}

/* Whether a sequence is running; with none, and none queued either, waits up to wait_seconds
 * for a submission first (the caller steps again). */
static bool any_running(scheduler *s, double wait_seconds)
{
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
        return false;
    }
    pthread_mutex_unlock(&s->lock);
    return true;
}

/* What a planned step holds: n sequences (s->step, s->step_seq) and tokens in all, of which
 * prompt_tokens are prompt chunks of sequences not decoding yet. */
typedef struct {
    int n, tokens, prompt_tokens;
} step_size;

/* Builds the step: every decoding sequence's next token (and its proposals), then prompt
 * chunks while room is left. A sequence whose window is full and never drops entries ends
 * here (SCHED_LENGTH). */
static step_size plan_step(scheduler *s)
{
    int n = 0, budget = s->lim.max_step_tokens, prompt_tokens = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int slot = 0; slot < s->n_slots && budget > 0; slot++) {
            seq *q = s->running[slot];
            if (!q) continue;
            const bool dec = seq_decoding(q);
            if (dec != (pass == 0)) continue;
            if (pass == 1 && in_step(s, n, slot)) continue; /* a decode whose ring is evaluated again */
            kvseq *kv = q->kv;
            engine_seq *es = &s->step[n];
            if (q->n_prop > 0) {
                *es = (engine_seq){ .slot = slot, .pos0 = kv->len, .n_tokens = 1 + q->n_prop,
                                    .tokens = kv->hist + kv->len, .n_out = 1 + q->n_prop, .out = seq_output_for(s, q) };
            } else {
                int discard, cap = s->lim.prefill_chunk < budget ? s->lim.prefill_chunk : budget;
                int chunk = kvseq_plan_chunk(s, q, cap, &discard);
                if (chunk == 0) {
                    seq_finish(s, q, SCHED_LENGTH); /* its window is full and never drops entries */
                    continue;
                }
                const bool last = kv->len + chunk == kv->n_hist && q->n_fed == q->r.n_prompt;
                *es = (engine_seq){ .slot = slot, .discard = discard, .pos0 = kv->len, .n_tokens = chunk,
                                    .tokens = kv->hist + kv->len, .n_out = last ? 1 : 0,
                                    .out = { .mode = ENGINE_LOGITS_NONE } };
                if (last) es->out = seq_output_for(s, q);
                if (!dec) prompt_tokens += chunk;
            }
            s->step_seq[n++] = q;
            budget -= es->n_tokens;
        }
    return (step_size){ .n = n, .tokens = s->lim.max_step_tokens - budget, .prompt_tokens = prompt_tokens };
}

/* After the engine ran the step's n sequences: the evaluated tokens enter their caches and the
 * output rows become tokens (proposals verified, or one token sampled). */
static void accept_step(scheduler *s, int n)
{
    double t = ifn_seconds();
    for (int i = 0; i < n; i++) {
        seq *q = s->step_seq[i];
        engine_seq *es = &s->step[i];
        if (q->n_prop > 0) {
            spec_driver_verify(s, q, es, t);
            continue;
        }
        q->kv->len += es->n_tokens;
        if (es->n_out == 0) continue;
        if (q->r.logprobs) seq_logprob_row(q, es->out.logits, s->vocab); /* before the sampler changes the logits */
        seq_accept_token(s, q, seq_row_pick(q, &es->out, 0, s->vocab, q->kv->hist, q->kv->n_hist), t, true);
    }
}

/* The step's metrics and the KV held after it. */
static void record_step(scheduler *s, step_size z)
{
    if (!s->met) return;
    int positions = 0, slots = 0;
    metrics_add(s->met, s->mid.steps, NULL, 1);
    metrics_add(s->met, s->mid.prompt_tokens, NULL, z.prompt_tokens);
    metrics_observe(s->met, s->mid.step_tokens, z.tokens);
    metrics_observe(s->met, s->mid.step_seqs, z.n);
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

ifn_status scheduler_step(scheduler *s, double wait_seconds)
{
    /* Requests that went away, then admissions at this step boundary. */
    drop_gone(s);
    admit(s);
    if (!any_running(s, wait_seconds)) return IFN_OK;

    /* Plan: who speculates and their proposals, then the step's tokens. */
    if (s->lim.spec.mode != SCHED_SPEC_OFF) spec_driver_plan(s);
    if (s->lim.spec.mode == SCHED_SPEC_DRAFT) CHECK(spec_driver_draft(s));
    const step_size z = plan_step(s);
    if (z.n == 0) return IFN_OK;

    /* Step, then accept what it produced. */
    CHECK(engine_step(s->eng, s->step, z.n));
    accept_step(s, z.n);
    record_step(s, z);
    return IFN_OK;
}

void scheduler_abort_all(scheduler *s)
{
    for (int slot = 0; slot < s->n_slots; slot++)
        if (s->running[slot]) seq_finish(s, s->running[slot], SCHED_SHUTDOWN);
    pthread_mutex_lock(&s->lock);
    s->closed = true;
    seq *q = s->queue_head;
    s->queue_head = s->queue_tail = NULL;
    s->n_queued = 0;
    pthread_mutex_unlock(&s->lock);
    for (seq *next; q; q = next) {
        next = q->next;
        seq_finish(s, q, SCHED_SHUTDOWN);
    }
}
