/* A sequence's KV ring as the scheduler keeps it (kvseq, scheduler_internal.h): the ring's
 * options, its slot, and which waiting tokens a step takes.
 *
 * Owns: checking a request's ring against the engine's context and what a ring that never drops
 * entries can still hold; placing a KV in its slot (the ring set in the target's cache and the
 * draft's); the step's chunk of a sequence, moving prompt tokens into its hist; and, when the
 * chunk would overflow the ring, dropping the oldest non-sinks (StreamingLLM), by shift-RoPE in
 * the engine or, with kv_recompute, by evaluating the kept window again.
 *
 * Invariants of a kvseq: len <= n_hist and len <= window; hist[0..len) is what the slot's
 * cache holds at positions 0..len-1 and hist[len..n_hist) waits to be evaluated; the first
 * n_keep entries are never dropped; a prompt chunk is at most window - n_keep tokens; the
 * draft's cache holds dlen positions of hist (those from len on possibly stale) and still has
 * to drop ddiscard entries. */
#include <stdlib.h>
#include <string.h>

#include "scheduler_internal.h"

/* An empty KV of the request's ring (its hist allocated). */
ifn_status kvseq_init(kvseq *kv, const sched_request *r)
{
    *kv = (kvseq){ .slot = -1, .window = r->window, .n_keep = r->n_keep, .n_discard = r->n_discard };
    kv->hist = malloc(((size_t)r->window + 1 + SPEC_MAX_DRAFT) * sizeof *kv->hist);
    return kv->hist ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for a sequence of %d positions", r->window);
}

/* The ring options of a new sequence, against the engine's context. */
ifn_status kvseq_check_ring(const scheduler *s, const sched_request *r)
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
ifn_status kvseq_check_fit(const kvseq *kv, const sched_request *r)
{
    if (kv->n_discard > 0) return IFN_OK;
    const int64_t need = (int64_t)kv->n_hist + r->n_prompt + r->max_new_tokens - 1;
    if (need > kv->window)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "max_new_tokens: %d new tokens after a prompt of %d%s do not fit a "
                             "context of %d that never drops entries (kv.n_discard 0)", r->max_new_tokens, r->n_prompt,
                             kv->n_hist ? " and the session's tokens" : "", kv->window);
    return IFN_OK;
}

/* Gives a sequence's KV its slot and sets the slot's ring in both caches. */
void kvseq_place(scheduler *s, kvseq *kv, int slot)
{
    kv->slot = slot;
    engine_slot_ring(s->eng, slot, kv->window, kv->n_keep); /* in range: checked at submit */
    if (s->lim.spec.mode == SCHED_SPEC_DRAFT) engine_slot_ring(s->lim.spec.draft, slot, kv->window, kv->n_keep);
}

/* A sequence whose prompt is in and whose only waiting token is its last sampled one. */
bool seq_decoding(const seq *q)
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
int kvseq_plan_chunk(scheduler *s, seq *q, int cap, int *discard)
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
