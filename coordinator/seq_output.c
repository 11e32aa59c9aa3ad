/* From a step's output rows to a request's events (sched_event, scheduler.h).
 *
 * Owns: how the ranks return a sequence's scores (argmax, top-k or the full row), picking a
 * token or a distribution from a row with the request's sampler, the log-probabilities of a
 * logprobs request, accepting a token (end of generation, the ids, the detokenized text with
 * stop sequences, max_new_tokens), emitting what a stream is owed, and finishing a request:
 * its last event, its metrics, its session and slot released before the client hears the end.
 *
 * Invariants: text holds the generated text not emitted yet, text_checked of it already
 * scanned for stop sequences; gen holds the ids not emitted yet (with their log-probabilities);
 * an event never carries text a stop sequence may still match; a request gets exactly one
 * event with finish != SCHED_RUNNING, after which it is freed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "scheduler_internal.h"
#include "stop_seq.h"

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
void seq_logprob_row(seq *q, const float *logits, int vocab)
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

/* Ends a request (running or already unlinked from the queue): the last event, the slot. */
void seq_finish(scheduler *s, seq *q, sched_finish why)
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

/* How the ranks should return a sequence's scores into these buffers (room for the rows asked). */
engine_output seq_output_into(const seq *q, float *logits, int32_t *ids, float *vals)
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
engine_output seq_output_for(scheduler *s, const seq *q)
{
    const size_t row0 = (size_t)q->kv->slot * (size_t)s->rows;
    return seq_output_into(q, s->logits + row0 * (size_t)s->vocab, s->top_ids + row0 * TOPK_MAX, s->top_vals + row0 * TOPK_MAX);
}

/* The token a sequence's sampler picks from output row i, given the history[n] before it. */
int32_t seq_row_pick(seq *q, const engine_output *o, int i, int vocab, const int32_t *history, int n)
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
sampler_dist seq_row_dist(seq *q, const engine_output *o, int i, int vocab, const int32_t *history, int n)
{
    if (o->mode == ENGINE_LOGITS_FULL)
        return sampler_distribution(q->smp, o->logits + (size_t)i * (size_t)vocab, history, (size_t)n);
    return sampler_distribution_top(q->smp, o->ids + (size_t)i * (size_t)o->top_k, o->values + (size_t)i * (size_t)o->top_k,
                                    o->top_k);
}

/* One new token for a sequence: end of generation, text, stop sequences, length. A stream
 * hears of it when `last` (the step's last token for the sequence). Returns false if the
 * request finished (q is gone). */
bool seq_accept_token(scheduler *s, seq *q, int32_t id, double t, bool last)
{
    if (!q->r.ignore_eos && s->tok && tokenizer_is_eog(s->tok, id)) {
        seq_finish(s, q, SCHED_EOS);
        return false;
    }
    if (!gen_append(q, id)) {
        seq_finish(s, q, SCHED_SHUTDOWN); /* out of memory for the ids: end this request only */
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
            seq_finish(s, q, SCHED_SHUTDOWN); /* out of memory for the text: end this request only */
            return false;
        }
        size_t match;
        if (stop_seq_scan((const char *const *)q->r.stop, q->r.n_stop, q->text, q->text_len, q->text_checked, &match,
                          &safe)) {
            q->text_len = match;
            seq_finish(s, q, SCHED_STOP);
            return false;
        }
        q->text_checked = q->text_len;
    }
    if (q->n_gen == q->r.max_new_tokens) {
        seq_finish(s, q, SCHED_LENGTH);
        return false;
    }
    if (last && q->r.stream && (safe > 0 || !q->detok)) emit(q, safe, SCHED_RUNNING);
    return true;
}
