/* The OpenAI-compatible API's semantics, apart from HTTP itself (http_api.h): request JSON to
 * scheduler requests, the scheduler's events to response JSON and server-sent events, and
 * errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}) with their HTTP
 * status. Generation goes through the same scheduler as gRPC, with the gRPC service's sampling
 * defaults (greedy unless temperature is set), so the same request gives the same text.
 *
 * Calls run on the HTTP server's connection threads (tokenizing and validation there); the
 * scheduler's emit callbacks only queue events under a mutex, never wait, so the scheduler
 * thread and the connection threads are decoupled. */
#ifndef IFN_HTTP_OPENAI_H
#define IFN_HTTP_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "engine.h"
#include "scheduler.h"
#include "service.h"
#include "tokenizer.h"

typedef struct openai_api openai_api;
typedef struct openai_stream openai_stream;

/* What to answer: a JSON body with its status, or (status 200) a stream of events. */
typedef struct {
    unsigned status;
    char *body;            /* malloc'd JSON; NULL with a stream */
    openai_stream *stream; /* server-sent events to read with openai_stream_read */
} openai_reply;

/* e, tok (NULL: token-id prompts only), sch and the strings of spec must outlive the API. The
 * chat template comes from the model (model_tokenizer_chat_template). */
ifn_status openai_api_create(const engine *e, const tokenizer *tok, scheduler *sch, const service_kv *kv,
                             const service_spec *spec, openai_api **out);
void openai_api_destroy(openai_api *a);

/* POST /v1/completions (chat false) or /v1/chat/completions with body[len]. A non-streaming
 * request waits for its result, polling gone(user) every 0.1 s: true (the client left, the
 * server stops) cancels it. */
void openai_complete(openai_api *a, const char *body, size_t len, bool chat, bool (*gone)(void *user), void *user,
                     openai_reply *out);
/* GET /v1/models. */
void openai_models(const openai_api *a, openai_reply *out);
/* An error reply; param names the request field (NULL: none). */
void openai_error(openai_reply *out, unsigned status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The stream's next bytes ("data: {...}\n\n" events, "data: [DONE]\n\n" last) into buf: how
 * many, 0 if none came within wait_seconds, -1 after the end. */
ssize_t openai_stream_read(openai_stream *s, char *buf, size_t cap, double wait_seconds);
/* Cancels what still runs and lets go of the stream. */
void openai_stream_close(openai_stream *s);

#endif
