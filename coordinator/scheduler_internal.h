/* What the scheduler's files share: a sequence's KV (kvseq), the session table's entries, a
 * running or queued request (seq) and the scheduler itself; and the functions each file
 * offers the others. Not part of the public API (scheduler.h).
 *
 * The files, one concern each:
 *   scheduler.c    the request lifecycle (create, submit, admit, abort) and the step:
 *                  plan the tokens of every running sequence, run the engine, accept its
 *                  outputs, record the step's metrics.
 *   kv_ring.c      a sequence's ring: its options, its slot, which waiting tokens a step
 *                  takes and the dropping of the oldest non-sinks when it is full.
 *   sessions.c     the session table: new, find, release after a request, end; idle expiry
 *                  and the eviction of the least recently used idle session for a slot.
 *   seq_output.c   from a step's output rows to a request's events: sampling a row, the
 *                  log-probabilities, detokenizing, stop sequences, emit and finish.
 *   spec_driver.c  speculative decoding: the step costs that choose K, the proposals (prompt
 *                  lookup or the draft model's rounds) and their verification.
 *
 * Threads and the lock: scheduler_submit, scheduler_delete_session, scheduler_sessions and
 * scheduler_pending run on any thread; everything else on the engine thread. Fields marked
 * "under lock" are read and written only with s->lock held; so are the functions below that
 * say "(under lock)". The engine thread alone writes running[] and the sequences in it, and
 * takes the lock to change n_running. */
#ifndef IFN_SCHEDULER_INTERNAL_H
#define IFN_SCHEDULER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler.h"
#include "spec_cost.h"
#include "speculative.h"

/* Top-k sampling asks the ranks for this many candidates at most; larger k needs every logit. */
#define TOPK_MAX 64

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
    bool closed;                  /* under lock: scheduler_abort_all ran, submissions are refused */
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

/* scheduler.c */

/* Frees a request and everything it owns (its prompt and stops once submitted). NULL: nothing. */
void seq_free(seq *q);

/* kv_ring.c */

/* An empty KV of the request's ring (its hist allocated; no slot yet). */
ifn_status kvseq_init(kvseq *kv, const sched_request *r);
/* The ring options of a new sequence, against the engine's context (the message names the
 * field). */
ifn_status kvseq_check_ring(const scheduler *s, const sched_request *r);
/* A request that can never drop entries must fit what its KV leaves. */
ifn_status kvseq_check_fit(const kvseq *kv, const sched_request *r);
/* Gives a sequence's KV its slot and sets the slot's ring in the target's cache and the
 * draft's (under lock; the slot is free, the ring checked at submit). */
void kvseq_place(scheduler *s, kvseq *kv, int slot);
/* A sequence whose prompt is in and whose only waiting token is its last sampled one. */
bool seq_decoding(const seq *q);
/* How many of a sequence's waiting tokens this step takes (at most cap), moving prompt tokens
 * into its hist; a full ring drops its oldest non-sinks first (*discard: how many the engine
 * drops with shift-RoPE). 0: the window is full and never drops entries. */
int kvseq_plan_chunk(scheduler *s, seq *q, int cap, int *discard);

/* sessions.c */

session *session_find(scheduler *s, const char *id);
/* A new session with the request's ring, marked busy and linked in (under lock). A failure
 * links nothing. */
ifn_status session_new(scheduler *s, const sched_request *r, session **out);
/* Unlinks a session and frees it and its slot (under lock). */
void session_end(scheduler *s, session *ss, const char *reason);
/* A session's KV after its request q ended with why (under lock): kept, rolled back, or the
 * session ends. */
void session_release(scheduler *s, seq *q, sched_finish why);
/* A slot for a queued request (under lock): its session's, a free one, or the least recently
 * used idle session's, which ends; -1 if every slot is busy. */
int session_find_slot(scheduler *s, const seq *q);
/* Ends sessions idle for longer than their time to live (under lock). */
void session_expire_idle(scheduler *s, double now);

/* seq_output.c */

/* How the ranks should return a sequence's scores into these buffers (room for the rows asked). */
engine_output seq_output_into(const seq *q, float *logits, int32_t *ids, float *vals);
/* The target's outputs of a sequence: its slot's s->rows rows. */
engine_output seq_output_for(scheduler *s, const seq *q);
/* The token a sequence's sampler picks from output row i, given the history[n] before it. */
int32_t seq_row_pick(seq *q, const engine_output *o, int i, int vocab, const int32_t *history, int n);
/* The distribution a sampled sequence draws from at output row i (FULL or TOPK). */
sampler_dist seq_row_dist(seq *q, const engine_output *o, int i, int vocab, const int32_t *history, int n);
/* The log-softmax of a row of logits and its most likely ids, for a logprobs request (before
 * the sampler changes the row). */
void seq_logprob_row(seq *q, const float *logits, int vocab);
/* One new token for a sequence: end of generation, text, stop sequences, length; a stream
 * hears of it when `last`. Returns false if the request finished (q is gone). */
bool seq_accept_token(scheduler *s, seq *q, int32_t id, double t, bool last);
/* Ends a request (running or already unlinked from the queue): the last event, its session
 * and slot released before the event, then q is freed. Takes the lock: call without it. */
void seq_finish(scheduler *s, seq *q, sched_finish why);

/* spec_driver.c */

/* The relative step costs that choose K (s->step_cost), from the cost model on the machine's
 * profile. */
ifn_status spec_driver_costs(scheduler *s);
/* Decides which decoding sequences speculate this step and how far (q->n_prop), and fills in
 * prompt lookup's proposals. */
void spec_driver_plan(scheduler *s);
/* The draft model's proposals for the sequences spec_driver_plan chose. An engine failure is
 * returned. */
ifn_status spec_driver_draft(scheduler *s);
/* After a step that evaluated a sequence's last token and its proposals: accepts what the
 * target agrees with, then the target's own token, and rolls back the rest. */
void spec_driver_verify(scheduler *s, seq *q, const engine_seq *es, double t);

#endif
