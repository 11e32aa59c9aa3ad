/* Continuous batching on rank 0: the request queue, the KV slots, and one engine step at a
 * time over every running sequence.
 *
 * Requests are submitted from any thread (the gRPC thread) into a bounded queue. The thread
 * that owns the engine calls scheduler_step in a loop: it drops sequences whose client went
 * away, admits queued requests into free KV slots at the step boundary, and builds one step
 * of at most max_step_tokens tokens: one token for every decoding sequence first, then
 * prompt chunks of the sequences still prefilling, so a long prompt never stalls the running
 * decodes for more than a chunk. After the step it samples each sequence's next token,
 * detokenizes it, checks stop sequences, end of generation and length, and reports through
 * the request's emit callback. A seeded request samples from its own generator, so it gets
 * the same tokens whatever else shares its steps. The scheduler knows nothing of gRPC.
 *
 * KV ring: each sequence's cache is a StreamingLLM ring of `window` positions with n_keep
 * attention sinks (engine.h). When a step would overflow it, the oldest n_discard non-sinks
 * are dropped (as many multiples of n_discard as the step needs): with shift-RoPE by default,
 * or, with sched_limits.kv_recompute (models without RoPE), by evaluating the kept window
 * again at its new positions. So a request may generate far more tokens than its window.
 *
 * Sessions: a request with new_session keeps its sequence's KV slot after it ends, under a
 * random id; a request naming that id continues the sequence (only its new tokens are
 * prefilled). A session's context is its prompts and the ids its responses returned, in
 * order (an end-of-generation token ends a reply without entering the context). A session
 * ends when idle for session_ttl seconds, when its slot is needed for a request and it is the
 * least recently used idle one, on scheduler_delete_session, and when a request on it is
 * cancelled after its ring dropped entries (otherwise the cancelled request is rolled back).
 *
 * Speculative decoding (sched_limits.spec): before a step, each decoding sequence that
 * speculates gets up to K proposed tokens, from a draft model on rank 0 (its own KV slot of
 * the same index and ring, batched over the sequences, one draft step per proposed token) or
 * from prompt lookup (n-gram matches in its own tokens). The target then evaluates the last
 * token and the K proposals in the same step as every other sequence's tokens, with an output
 * row for each. Greedy requests accept the proposals that equal the target's argmax and take
 * the target's token after them, so the output is exactly that of plain decoding; sampled
 * requests accept by rejection sampling, which keeps the target's distribution. The rejected
 * entries are rolled back in both caches (a position move). A step that would overflow a
 * sequence's ring is a plain one, so that drops happen where plain decoding has them. K adapts
 * per sequence: the one that maximizes the expected tokens per unit of time, from the
 * sequence's acceptance so far and the step costs of a cost model (spec_cost.h) of the models'
 * shapes on the machine's profile, measured once and kept in a file (machine_profile.h): the
 * same model, options and machine give the same K at every start, and a seeded request's draws
 * never depend on what else runs. */
#ifndef IFN_SCHEDULER_H
#define IFN_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "metrics.h"
#include "sampler.h"
#include "status.h"
#include "tokenizer.h"

typedef enum {
    SCHED_RUNNING,   /* not finished: a partial result */
    SCHED_STOP,      /* a stop sequence matched */
    SCHED_LENGTH,    /* max_new_tokens, or the context is full */
    SCHED_EOS,       /* end-of-generation token */
    SCHED_CANCELLED, /* the client went away */
    SCHED_DEADLINE,  /* the request's deadline passed */
    SCHED_SHUTDOWN,  /* the server stopped before the request finished */
} sched_finish;

/* What a request learns after a step: the text and ids since its previous event, and on the
 * last event (finish != SCHED_RUNNING) the totals. */
typedef struct {
    const char *text;
    size_t text_len;
    const int32_t *ids;
    int n_ids;
    sched_finish finish;
    int prompt_tokens, completion_tokens;
    double queue_seconds, ttft_seconds, tpot_seconds;
    const char *session_id; /* the request's session, NULL without one */
    bool kv_recomputed;     /* the ring dropped entries and the kept window was evaluated again */
    int kv_discards;        /* times the ring dropped entries during this request */
    int draft_proposed;     /* speculative tokens proposed for this request */
    int draft_accepted;     /* of which the target accepted */
    int spec_steps;         /* steps that verified proposals */
    /* With sched_request.logprobs (else NULL): each id's log-probability, and the most likely
     * tokens at its position and theirs, logprobs of them per id, most likely first. */
    const float *logprobs;      /* [n_ids] */
    const int32_t *top_ids;     /* [n_ids][logprobs] */
    const float *top_logprobs;  /* [n_ids][logprobs] */
} sched_event;

#define SCHED_SESSION_ID_LEN 32 /* hex digits */
#define SCHED_MAX_LOGPROBS 20

typedef struct {
    int32_t *prompt;   /* [n_prompt], malloc'd: the scheduler owns it once submitted */
    int n_prompt;
    int max_new_tokens;
    sampler_params sampling;
    char **stop;       /* [n_stop] malloc'd strings in a malloc'd array: owned once submitted */
    int n_stop;
    bool ignore_eos;
    bool stream;       /* an event after every step that produced text; else only the last one */
    /* The KV ring of a new sequence (ignored when continuing a session, which keeps its own):
     * window 1..engine_ctx_size, n_keep 0..window-1, n_discard 1..window-n_keep, or 0 for
     * never (the request then ends with SCHED_LENGTH when its window is full). */
    int window, n_keep, n_discard;
    bool new_session;    /* keep the KV after the request, as a new session */
    const char *session; /* continue this session (NULL: none); not with new_session */
    bool spec_off;       /* no speculative decoding for this request */
    int spec_max_draft;  /* most tokens proposed per step: 0 the server's, else 1..the server's */
    /* 0, or the events carry log-probabilities under the model (the log-softmax of its logits,
     * before any sampling option) of the generated ids and of this many most likely tokens at
     * each position, 1..SCHED_MAX_LOGPROBS; such a request does not speculate. */
    int logprobs;
    /* Called on the scheduler's thread; the event with finish != SCHED_RUNNING is the last. */
    void (*emit)(void *user, const sched_event *ev);
    /* Polled before every step: SCHED_RUNNING, SCHED_CANCELLED or SCHED_DEADLINE. */
    sched_finish (*check)(void *user);
    void *user;
} sched_request;

typedef enum {
    SCHED_SPEC_OFF,
    SCHED_SPEC_DRAFT, /* a draft model proposes */
    SCHED_SPEC_NGRAM, /* prompt lookup proposes */
} sched_spec_mode;

typedef struct {
    sched_spec_mode mode;
    /* SCHED_SPEC_DRAFT: the draft model, an engine of one process on rank 0 with the target's
     * number of slots, a context at least the target's and the same vocabulary
     * (spec_check_vocab); it must outlive the scheduler. */
    engine *draft;
    int max_draft;        /* most tokens proposed per step, 1..SPEC_MAX_DRAFT */
    bool fixed;           /* always propose the most (a request's cap, else max_draft) instead of
                             adapting K: for measurements and tests */
    const char *machine_profile; /* the machine profile file K is planned with (machine_profile.h;
                                    NULL: machine_profile_path's, "": measure, keep nothing) */
} sched_spec;

typedef struct {
    int max_queue;        /* waiting requests; more are refused */
    int max_step_tokens;  /* tokens per engine step, at most engine_n_batch */
    int prefill_chunk;    /* most prompt tokens of one sequence per step */
    int max_running;      /* sequences in a step at most (0: engine_n_slots); the other slots
                             can still hold idle sessions */
    bool kv_recompute;    /* a full ring evaluates its kept window again instead of shift-RoPE */
    double session_ttl;   /* seconds an idle session is kept (0: 600) */
    sched_spec spec;      /* speculative decoding (zero: off) */
} sched_limits;

typedef struct scheduler scheduler;

/* The engine (rank 0), the tokenizer (NULL: no text, ids only) and the metrics (NULL: none)
 * must outlive the scheduler. KV slots are the engine's; running sequences are limited by
 * max_running. */
ifn_status scheduler_create(engine *e, const tokenizer *tok, metrics *m, const sched_limits *lim, scheduler **out);
void scheduler_destroy(scheduler *s);

/* Thread-safe. Queues the request and takes ownership of its prompt and stops; when it fails
 * nothing is kept and the caller still owns them: IFN_ERR_RANGE, the queue is full;
 * IFN_ERR_NOT_FOUND, no such session (unknown, expired or evicted); IFN_ERR_BUSY, a request on
 * that session is queued or running; IFN_ERR_INVALID_ARG, the ring options, or a prompt that
 * cannot fit a ring that never drops entries (the message names the field: "kv.n_keep ...",
 * "max_new_tokens ...", "speculative.max_draft_tokens ..."); IFN_ERR_NOMEM; IFN_ERR_UNAVAILABLE
 * after scheduler_abort_all (the server is shutting down). The caller validates the sampling and n_prompt >= 1,
 * max_new_tokens >= 1. */
ifn_status scheduler_submit(scheduler *s, const sched_request *r);

/* Thread-safe. Ends a session and frees its KV slot: IFN_ERR_NOT_FOUND if there is no such
 * session, IFN_ERR_BUSY while a request on it is queued or running. */
ifn_status scheduler_delete_session(scheduler *s, const char *id);

/* What K is planned from, for logs and ModelInfo: the cost model's inputs (the models' shapes,
 * the machine profile and where it came from), the step costs it gives and the K it chooses at
 * a few acceptance rates. "no speculation" without. */
void scheduler_spec_describe(const scheduler *s, char *buf, size_t cap);

/* Sessions alive. Thread-safe. */
int scheduler_sessions(scheduler *s);

/* The engine thread: runs one step if any request is queued or running, else waits up to
 * wait_seconds for a submission. An engine failure is returned (the caller ends the job). */
ifn_status scheduler_step(scheduler *s, double wait_seconds);

/* Requests queued or running. Thread-safe. */
int scheduler_pending(scheduler *s);

/* Ends every queued and running request with SCHED_SHUTDOWN; from then on scheduler_submit
 * refuses with IFN_ERR_UNAVAILABLE. */
void scheduler_abort_all(scheduler *s);

#endif
