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
 * the same tokens whatever else shares its steps. The scheduler knows nothing of gRPC. */
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
} sched_event;

typedef struct {
    int32_t *prompt;   /* [n_prompt], malloc'd: the scheduler owns it once submitted */
    int n_prompt;
    int max_new_tokens;
    sampler_params sampling;
    char **stop;       /* [n_stop] malloc'd strings in a malloc'd array: owned once submitted */
    int n_stop;
    bool ignore_eos;
    bool stream;       /* an event after every step that produced text; else only the last one */
    /* Called on the scheduler's thread; the event with finish != SCHED_RUNNING is the last. */
    void (*emit)(void *user, const sched_event *ev);
    /* Polled before every step: SCHED_RUNNING, SCHED_CANCELLED or SCHED_DEADLINE. */
    sched_finish (*check)(void *user);
    void *user;
} sched_request;

typedef struct {
    int max_queue;        /* waiting requests; more are refused */
    int max_step_tokens;  /* tokens per engine step, at most engine_n_batch */
    int prefill_chunk;    /* most prompt tokens of one sequence per step */
} sched_limits;

typedef struct scheduler scheduler;

/* The engine (rank 0), the tokenizer (NULL: no text, ids only) and the metrics (NULL: none)
 * must outlive the scheduler. Running sequences are limited by engine_n_slots. */
ifn_status scheduler_create(engine *e, const tokenizer *tok, metrics *m, const sched_limits *lim, scheduler **out);
void scheduler_destroy(scheduler *s);

/* Thread-safe. Queues the request and takes ownership of its prompt and stops; when it fails
 * (IFN_ERR_RANGE: the queue is full; IFN_ERR_NOMEM) nothing is kept and the caller still
 * owns them. The request must fit: 1 <= n_prompt, n_prompt + max_new_tokens <= the engine's
 * context, valid sampling (the caller validates and names the field). */
ifn_status scheduler_submit(scheduler *s, const sched_request *r);

/* The engine thread: runs one step if any request is queued or running, else waits up to
 * wait_seconds for a submission. An engine failure is returned (the caller ends the job). */
ifn_status scheduler_step(scheduler *s, double wait_seconds);

/* Requests queued or running. Thread-safe. */
int scheduler_pending(scheduler *s);

/* Ends every queued and running request with SCHED_SHUTDOWN. */
void scheduler_abort_all(scheduler *s);

#endif
