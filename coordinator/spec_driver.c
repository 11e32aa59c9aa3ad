/* Speculative decoding inside the scheduler's step (scheduler.h, Speculative decoding); the
 * algorithms it drives (prompt lookup, rejection sampling, choosing K) are in speculative.h and
 * the step costs in spec_cost.h.
 *
 * Owns: the relative step costs K is chosen from, and their description; per step, which
 * decoding sequences speculate and how far (the adaptive K within what the request still wants,
 * the ring holds without dropping and the step's budget); the proposals, by prompt lookup or by
 * the draft model's rounds (catching its cache up, then one draft step per proposal); and the
 * verification of the target's rows, with the rejected entries rolled back in both caches.
 *
 * Invariants: a sequence's n_prop proposals sit at kv->hist[n_hist..n_hist + n_prop) between
 * planning and verification and n_prop is 0 after it; a step that would overflow a ring
 * proposes nothing, so drops happen where plain decoding has them; K depends only on the
 * sequence's own acceptance and the cost model, never on what else runs. */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "scheduler_internal.h"

/* Speculation: the acceptance a sequence is assumed to have before it has any (as pseudo-counts
 * of accepted and rejected proposals), how fast its counts forget, and how often a sequence
 * whose estimate says proposals do not pay tries one anyway. */
#define SPEC_PRIOR_ACCEPTED 3.0
#define SPEC_PRIOR_REJECTED 1.0
#define SPEC_DECAY 0.8
#define SPEC_PROBE_STEPS 16

/* The relative step costs that choose K, from the cost model (spec_cost.h) on the machine's
 * profile, never from timing the models: the same model, options and machine give the same K
 * at every start, and K never depends on what else runs. Prompt lookup's proposals cost
 * nothing measurable. */
ifn_status spec_driver_costs(scheduler *s)
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
 * lookup's proposals (a draft model's come from spec_driver_draft). */
void spec_driver_plan(scheduler *s)
{
    int budget = s->lim.max_step_tokens - s->n_running; /* one token for every running sequence first */
    for (int slot = 0; slot < s->n_slots; slot++) {
        seq *q = s->running[slot];
        if (!q) continue;
        q->n_prop = 0;
        if (!q->spec_k || !seq_decoding(q)) continue;
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
    if (q->r.sampling.temperature == 0.0f) return seq_row_pick(q, o, 0, s->vocab, kv->hist, n);
    sampler_dist d = seq_row_dist(q, o, 0, s->vocab, kv->hist, n);
    float *qd = q->q + (size_t)i * (size_t)s->vocab;
    memset(qd, 0, (size_t)s->vocab * sizeof *qd);
    for (int c = 0; c < d.n; c++) qd[d.ids[c]] = (float)(d.p[c] / d.sum);
    return sampler_pick(q->smp, &d);
}

/* The draft model's proposals: steps over every sequence that speculates, each first
 * catching up on the tokens its draft cache lacks (one or more steps of at most the draft's
 * batch), then one step per proposal. */
ifn_status spec_driver_draft(scheduler *s)
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
                es->out = seq_output_into(q, s->draft_logits + (size_t)slot * (size_t)s->vocab,
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
void spec_driver_verify(scheduler *s, seq *q, const engine_seq *es, double t)
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
            tok[n] = seq_row_pick(q, &es->out, i, s->vocab, kv->hist, n_hist + i);
            agreed = i < k && tok[n] == prop[i];
        } else {
            sampler_dist p = seq_row_dist(q, &es->out, i, s->vocab, kv->hist, n_hist + i);
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
        if (!seq_accept_token(s, q, tok[i], t, i == n - 1)) return;
    }
}
