/* One OpenAI request in the scheduler (internal to http_openai*.c): its n choices, each a
 * scheduler request whose events are queued here; the answer built from them, whole or as
 * server-sent events.
 *
 * The job is shared by the HTTP thread and the scheduler thread: one reference for the HTTP
 * side and one for every choice submitted and not finished, freed by the last. The emit
 * callback copies an event in under the mutex and signals; it never waits. */
#ifndef IFN_HTTP_OPENAI_JOB_H
#define IFN_HTTP_OPENAI_JOB_H

#include <stdbool.h>

#include "http_openai.h"

typedef struct {
    int n;                 /* choices, 1.. */
    bool chat;             /* chat.completion objects, else text_completion */
    bool stream;
    bool include_usage;    /* stream_options.include_usage: a last chunk with usage */
    const char *model;     /* must outlive the job */
    const char *echo;      /* NULL, or the prompt's text put before each choice's text */
    size_t echo_len;
    int logprobs;          /* 0, or the alternatives per token the scheduler gives (sched_request.logprobs) */
    int logprobs_shown;    /* how many of them the response shows */
    const tokenizer *tok;  /* the tokens' texts (NULL: none); must outlive the job */
} oa_job_params;

/* The job (its HTTP reference held), or NULL when out of memory. */
openai_stream *oa_job_create(const oa_job_params *p);
/* The scheduler callbacks of choice i: sched_request's emit and check with this user. */
void oa_job_emit(void *user, const sched_event *ev);
sched_finish oa_job_check(void *user);
void *oa_job_user(openai_stream *s, int choice);
/* Around scheduler_submit of a choice: oa_job_submitting before (its reference), then
 * oa_job_refused if the scheduler refused it. */
void oa_job_submitting(openai_stream *s);
void oa_job_refused(openai_stream *s);
/* Asks the choices still running to stop (at their next step). */
void oa_job_cancel(openai_stream *s);
/* A request that does not stream: waits for every choice (gone as in openai_complete), then
 * the response or the error, and lets go of the job. */
void oa_job_finish_whole(openai_stream *s, bool (*gone)(void *), void *user, openai_reply *out);

#endif
