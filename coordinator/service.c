#include "service.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infernode.pb-c.h"
#include "model_tokenizer.h"
#include "request_defaults.h"
#include "unicode.h"

#define MAX_STOPS 16
#define MAX_STOP_BYTES 256
#define MAX_NEW_TOKENS (1 << 20)
#define MAX_SESSION_ID 64

typedef enum { STATE_LOADING, STATE_SERVING, STATE_DRAINING } service_state;

struct service {
    _Atomic int state;
    const engine *eng;
    const tokenizer *tok;
    scheduler *sch;
    int ranks;
    service_kv kv;
    service_spec spec;
    metrics *met;
    int errors; /* metric id: non-OK statuses by code */
    _Atomic uint64_t seed_counter;
};

/* One Generate call in the scheduler. */
typedef struct {
    service *sv;
    rpc_call *call;
    bool stream;
} gen_call;

static const char *status_name(grpc_status_code code)
{
    static const char *names[] = { "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                   "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                   "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                   "UNAUTHENTICATED" };
    return (unsigned)code < sizeof names / sizeof *names ? names[code] : "UNKNOWN";
}

void service_count_status(void *user, grpc_status_code code)
{
    service *sv = user;
    if (code != GRPC_STATUS_OK && sv->met) metrics_add(sv->met, sv->errors, status_name(code), 1);
}

/* Ends a call with a non-OK status and a message (rpc_server counts it, see service_count_status). */
static void fail_call(rpc_call *call, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_call(rpc_call *call, grpc_status_code code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rpc_call_finish(call, code, msg);
}

/* Packs a protobuf-c message and sends it; false if it could not be sent. */
static bool send_message(rpc_call *call, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return false;
    protobuf_c_message_pack(m, buf);
    bool ok = rpc_call_send(call, buf, len) == IFN_OK;
    free(buf);
    return ok;
}

/* The service is ready for calls that need the model; answers UNAVAILABLE otherwise. */
static bool check_ready(service *sv, rpc_call *call, bool generating)
{
    int st = atomic_load_explicit(&sv->state, memory_order_acquire);
    if (st == STATE_LOADING) {
        fail_call(call, GRPC_STATUS_UNAVAILABLE, "the model is still loading");
        return false;
    }
    if (st == STATE_DRAINING && generating) {
        fail_call(call, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
        return false;
    }
    return true;
}

/* ---- Generate / GenerateStream ---- */

static Infernode__V1__FinishReason finish_reason(sched_finish f)
{
    switch (f) {
    case SCHED_STOP: return INFERNODE__V1__FINISH_REASON__FINISH_REASON_STOP;
    case SCHED_LENGTH: return INFERNODE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    case SCHED_EOS: return INFERNODE__V1__FINISH_REASON__FINISH_REASON_EOS;
    case SCHED_CANCELLED:
    case SCHED_DEADLINE:
    case SCHED_SHUTDOWN: return INFERNODE__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    case SCHED_RUNNING: break;
    }
    return INFERNODE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
}

static void gen_emit(void *user, const sched_event *ev)
{
    gen_call *g = user;
    bool last = ev->finish != SCHED_RUNNING;
    if (ev->finish == SCHED_CANCELLED || ev->finish == SCHED_DEADLINE || ev->finish == SCHED_SHUTDOWN) {
        if (ev->finish == SCHED_CANCELLED) rpc_call_finish(g->call, GRPC_STATUS_CANCELLED, "cancelled by the client");
        else if (ev->finish == SCHED_DEADLINE)
            fail_call(g->call, GRPC_STATUS_DEADLINE_EXCEEDED, "the deadline passed after %d generated tokens",
                      ev->completion_tokens);
        else fail_call(g->call, GRPC_STATUS_UNAVAILABLE, "the server stopped before the request finished");
        free(g);
        return;
    }
    /* The scheduler's text is whole characters already; a NUL among them would end the proto
     * string, so it goes out as U+FFFD (the ids say what it was). */
    size_t used;
    const unsigned char *raw = (const unsigned char *)ev->text;
    char *text = malloc(unicode_utf8_scrub(raw, ev->text_len, UTF8_SCRUB_NUL, NULL, &used) + 1);
    if (!text) {
        fail_call(g->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory for the response");
        free(g);
        return;
    }
    text[unicode_utf8_scrub(raw, ev->text_len, UTF8_SCRUB_NUL, text, &used)] = '\0';
    Infernode__V1__GenerateResponse resp = INFERNODE__V1__GENERATE_RESPONSE__INIT;
    Infernode__V1__Usage usage = INFERNODE__V1__USAGE__INIT;
    Infernode__V1__Timings timings = INFERNODE__V1__TIMINGS__INIT;
    resp.text = text;
    resp.n_token_ids = (size_t)ev->n_ids;
    resp.token_ids = (int32_t *)ev->ids;
    resp.session_id = (char *)ev->session_id;
    if (last) {
        resp.has_kv_window_recomputed = ev->kv_recomputed;
        resp.kv_window_recomputed = ev->kv_recomputed;
        resp.has_kv_ring_discards = true;
        resp.kv_ring_discards = ev->kv_discards;
        resp.has_finish_reason = true;
        resp.finish_reason = finish_reason(ev->finish);
        usage.has_prompt_tokens = usage.has_completion_tokens = true;
        usage.prompt_tokens = ev->prompt_tokens;
        usage.completion_tokens = ev->completion_tokens;
        usage.has_draft_tokens_proposed = usage.has_draft_tokens_accepted = usage.has_speculative_steps = true;
        usage.draft_tokens_proposed = ev->draft_proposed;
        usage.draft_tokens_accepted = ev->draft_accepted;
        usage.speculative_steps = ev->spec_steps;
        timings.has_queue_seconds = timings.has_time_to_first_token_seconds = true;
        timings.has_time_per_output_token_seconds = true;
        timings.queue_seconds = ev->queue_seconds;
        timings.time_to_first_token_seconds = ev->ttft_seconds;
        timings.time_per_output_token_seconds = ev->tpot_seconds;
        resp.usage = &usage;
        resp.timings = &timings;
    }
    bool sent = send_message(g->call, &resp.base);
    free(text);
    if (last) {
        if (sent) rpc_call_finish(g->call, GRPC_STATUS_OK, NULL);
        else rpc_call_finish(g->call, GRPC_STATUS_CANCELLED, "the response could not be sent");
        free(g);
    }
}

static sched_finish gen_check(void *user)
{
    gen_call *g = user;
    if (!rpc_call_cancelled(g->call)) return SCHED_RUNNING;
    return rpc_call_deadline_passed(g->call) ? SCHED_DEADLINE : SCHED_CANCELLED;
}

/* Fills p from the request's sampling message; false after answering INVALID_ARGUMENT. */
static bool parse_sampling(service *sv, rpc_call *call, const Infernode__V1__SamplingParams *m, sampler_params *p)
{
    *p = sampler_params_default();
    p->seed = atomic_fetch_add(&sv->seed_counter, 0x9e3779b97f4a7c15ull);
    if (!m) return true;
    if (m->has_temperature) {
        if (!(m->temperature >= 0.0f) || isinf(m->temperature)) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "sampling.temperature must be finite and >= 0 (got %g)",
                      (double)m->temperature);
            return false;
        }
        p->temperature = m->temperature;
    }
    if (m->has_top_k) {
        if (m->top_k < 0) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "sampling.top_k must be >= 0 (got %d)", m->top_k);
            return false;
        }
        p->top_k = m->top_k;
    }
    if (m->has_top_p) {
        if (!(m->top_p > 0.0f && m->top_p <= 1.0f)) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "sampling.top_p must be in (0, 1] (got %g)", (double)m->top_p);
            return false;
        }
        p->top_p = m->top_p;
    }
    if (m->has_min_p) {
        if (!(m->min_p >= 0.0f && m->min_p < 1.0f)) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "sampling.min_p must be in [0, 1) (got %g)", (double)m->min_p);
            return false;
        }
        p->min_p = m->min_p;
    }
    if (m->has_repetition_penalty) {
        if (!(m->repetition_penalty > 0.0f) || isinf(m->repetition_penalty)) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "sampling.repetition_penalty must be finite and > 0 (got %g)",
                      (double)m->repetition_penalty);
            return false;
        }
        p->repeat_penalty = m->repetition_penalty;
    }
    if (m->has_seed) p->seed = m->seed;
    if (sampler_params_validate(p) != IFN_OK) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "sampling: %s", ifn_error_detail());
        ifn_error_clear();
        return false;
    }
    return true;
}

/* The prompt fields a request sets, as "text", "text and fim", "text, token_ids and fim";
 * returns how many. */
static int prompt_fields(const Infernode__V1__GenerateRequest *m, char *out, size_t cap)
{
    const char *set[3];
    int n = 0;
    if (m->text) set[n++] = "text";
    if (m->token_ids) set[n++] = "token_ids";
    if (m->fim) set[n++] = "fim";
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(out + k, k < cap ? cap - k : 0, "%s%s", i == 0 ? "" : i == n - 1 ? " and " : ", ", set[i]);
    return n;
}

/* The ids of a fill-in-the-middle prompt (malloc'd); false after answering the call. */
static bool encode_fim(service *sv, rpc_call *call, const Infernode__V1__FimPrompt *fim, bool add_special, int32_t **ids,
                       size_t *n)
{
    if (!sv->tok) {
        fail_call(call, GRPC_STATUS_FAILED_PRECONDITION, "fim: the model has no tokenizer");
        return false;
    }
    const char *prefix = fim->prefix ? fim->prefix : "", *suffix = fim->suffix ? fim->suffix : "";
    ifn_status st = model_tokenizer_encode_fim(sv->tok, prefix, strlen(prefix), suffix, strlen(suffix), add_special, ids, n);
    if (st != IFN_OK) {
        fail_call(call, st == IFN_ERR_UNSUPPORTED ? GRPC_STATUS_FAILED_PRECONDITION : GRPC_STATUS_INVALID_ARGUMENT,
                  "fim: %s", ifn_error_detail());
        ifn_error_clear();
        return false;
    }
    return true;
}

/* The prompt's token ids (malloc'd); false after answering the call. */
static bool parse_prompt(service *sv, rpc_call *call, const Infernode__V1__GenerateRequest *m, int ctx, int32_t **ids,
                         int *n)
{
    const int vocab = engine_config(sv->eng)->vocab_size;
    *ids = NULL;
    char fields[64];
    int n_fields = prompt_fields(m, fields, sizeof fields);
    if (n_fields != 1) {
        if (n_fields == 0) fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "prompt: set text, token_ids or fim");
        else fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "prompt: set exactly one of text, token_ids and fim, not "
                       "%s", fields);
        return false;
    }
    if (m->token_ids) {
        size_t count = m->token_ids->n_ids;
        if (count == 0) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "token_ids: the prompt is empty");
            return false;
        }
        if (count > (size_t)ctx) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "token_ids: the prompt has %zu tokens, more than the context of %d",
                      count, ctx);
            return false;
        }
        for (size_t i = 0; i < count; i++)
            if (m->token_ids->ids[i] < 0 || m->token_ids->ids[i] >= vocab) {
                fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "token_ids[%zu]: %d is outside the vocabulary (0..%d)", i,
                          m->token_ids->ids[i], vocab - 1);
                return false;
            }
        *ids = malloc(count * sizeof **ids);
        if (!*ids) {
            fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory for a prompt of %zu tokens", count);
            return false;
        }
        memcpy(*ids, m->token_ids->ids, count * sizeof **ids);
        *n = (int)count;
        return true;
    }
    size_t count = 0;
    bool add_special = m->has_add_special ? m->add_special : IFN_DEFAULT_ADD_SPECIAL;
    const char *field = m->text ? "text" : "fim";
    if (m->fim) {
        if (m->session_id) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "fim: not with session_id (a fill-in-the-middle prompt is a "
                      "whole prompt; a session continues one)");
            return false;
        }
        if (!encode_fim(sv, call, m->fim, add_special, ids, &count)) return false;
    } else if (!sv->tok) {
        fail_call(call, GRPC_STATUS_FAILED_PRECONDITION, "text: the model has no tokenizer; send token_ids");
        return false;
    } else if (tokenizer_encode(sv->tok, m->text, strlen(m->text), add_special, IFN_DEFAULT_PARSE_SPECIAL, ids, &count) !=
               IFN_OK) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "text: %s", ifn_error_detail());
        ifn_error_clear();
        return false;
    }
    if (count == 0 || count > (size_t)ctx) {
        if (count == 0) fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "text: the prompt is empty");
        else fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "%s: the prompt has %zu tokens, more than the context of %d",
                       field, count, ctx);
        free(*ids);
        *ids = NULL;
        return false;
    }
    *n = (int)count;
    return true;
}

/* The stop strings (malloc'd copies); false after answering the call. */
static bool parse_stops(service *sv, rpc_call *call, const Infernode__V1__GenerateRequest *m, char ***stops)
{
    *stops = NULL;
    if (m->n_stop > MAX_STOPS) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "stop: %zu stop sequences, at most %d", m->n_stop, MAX_STOPS);
        return false;
    }
    for (size_t i = 0; i < m->n_stop; i++) {
        size_t len = strlen(m->stop[i]);
        if (len == 0 || len > MAX_STOP_BYTES) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "stop[%zu]: %s", i,
                      len ? "longer than 256 bytes" : "empty stop sequence");
            return false;
        }
    }
    if (m->n_stop == 0) return true;
    *stops = calloc(m->n_stop, sizeof **stops);
    bool ok = *stops != NULL;
    for (size_t i = 0; ok && i < m->n_stop; i++) ok = ((*stops)[i] = strdup(m->stop[i])) != NULL;
    if (!ok) {
        for (size_t i = 0; *stops && i < m->n_stop; i++) free((*stops)[i]);
        free(*stops);
        *stops = NULL;
        fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory for the stop sequences");
    }
    return ok;
}

/* The gRPC status of a scheduler refusal (scheduler_submit, scheduler_delete_session). */
static grpc_status_code submit_status(ifn_status st)
{
    switch (st) {
    case IFN_ERR_RANGE:
    case IFN_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case IFN_ERR_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case IFN_ERR_BUSY: return GRPC_STATUS_FAILED_PRECONDITION;
    case IFN_ERR_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    case IFN_ERR_INVALID_ARG: return GRPC_STATUS_INVALID_ARGUMENT;
    default: return GRPC_STATUS_INTERNAL;
    }
}

/* A session id as a client may send it; false after answering INVALID_ARGUMENT. */
static bool check_session_id(service *sv, rpc_call *call, const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > MAX_SESSION_ID) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "session_id: %s", n ? "longer than 64 characters" : "empty");
        return false;
    }
    return true;
}

/* The session and the KV ring options, with the server's defaults; false after answering. */
static bool parse_kv(service *sv, rpc_call *call, const Infernode__V1__GenerateRequest *m, sched_request *r)
{
    const int ctx = engine_ctx_size(sv->eng);
    const Infernode__V1__KvOptions *kv = m->kv;
    r->new_session = m->has_new_session && m->new_session;
    if (m->session_id) {
        if (r->new_session) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "new_session: set with session_id; a request continues a "
                      "session or starts one");
            return false;
        }
        if (!check_session_id(sv, call, m->session_id)) return false;
        if (kv && (kv->has_ctx_size || kv->has_n_keep || kv->has_n_discard)) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "kv: a session keeps the KV options it was started with");
            return false;
        }
        r->session = m->session_id;
        return true;
    }
    r->window = kv && kv->has_ctx_size ? kv->ctx_size : ctx;
    if (r->window < 2 || r->window > ctx) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "kv.ctx_size: %d is outside 2..%d (the server's context size)",
                  r->window, ctx);
        return false;
    }
    r->n_keep = kv && kv->has_n_keep ? kv->n_keep : sv->kv.n_keep < r->window ? sv->kv.n_keep : r->window - 1;
    if (r->n_keep < 0 || r->n_keep >= r->window) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "kv.n_keep: %d is outside 0..%d (below kv.ctx_size %d)", r->n_keep,
                  r->window - 1, r->window);
        return false;
    }
    const int room = r->window - r->n_keep;
    if (kv && kv->has_n_discard) {
        r->n_discard = kv->n_discard;
        if (r->n_discard < -1 || r->n_discard > room) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "kv.n_discard: %d is outside -1..%d (-1: half of the %d "
                      "positions after the sinks; 0: never)", r->n_discard, room, room);
            return false;
        }
    } else {
        r->n_discard = sv->kv.n_discard < room ? sv->kv.n_discard : room; /* a default beyond this window: all of it */
    }
    if (r->n_discard == -1) r->n_discard = room / 2 > 0 ? room / 2 : 1;
    return true;
}

/* The request's speculative options against the server's. */
static bool parse_speculative(service *sv, rpc_call *call, const Infernode__V1__SpeculativeOptions *o, sched_request *r)
{
    if (!o) return true;
    r->spec_off = o->has_enabled && !o->enabled;
    if (r->spec_off) return true;
    if (sv->spec.mode == SCHED_SPEC_OFF) {
        if (!o->has_enabled && !o->has_max_draft_tokens) return true;
        fail_call(call, GRPC_STATUS_FAILED_PRECONDITION, "speculative.%s: this server does not speculate (start it "
                  "with --draft-model PATH or --spec ngram)", o->has_enabled ? "enabled" : "max_draft_tokens");
        return false;
    }
    if (o->has_max_draft_tokens) {
        if (o->max_draft_tokens < 1 || o->max_draft_tokens > sv->spec.max_draft) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "speculative.max_draft_tokens: %d is outside 1..%d (the "
                      "server's --spec-max-draft)", o->max_draft_tokens, sv->spec.max_draft);
            return false;
        }
        r->spec_max_draft = o->max_draft_tokens;
    }
    return true;
}

static void handle_generate(service *sv, rpc_call *call, const uint8_t *msg, size_t len, bool stream)
{
    if (!check_ready(sv, call, true)) return;
    Infernode__V1__GenerateRequest *m = infernode__v1__generate_request__unpack(NULL, len, msg);
    if (!m) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "request: not a valid GenerateRequest message");
        return;
    }
    sched_request r = { .ignore_eos = m->has_ignore_eos && m->ignore_eos, .emit = gen_emit, .check = gen_check };
    const int ctx = engine_ctx_size(sv->eng);
    gen_call *g = NULL;
    if (!parse_kv(sv, call, m, &r)) goto done;
    if (!parse_speculative(sv, call, m->speculative, &r)) goto done;
    if (!m->has_max_new_tokens) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "max_new_tokens: required");
        goto done;
    }
    if (m->max_new_tokens <= 0 || m->max_new_tokens > MAX_NEW_TOKENS) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "max_new_tokens: %d is outside 1..%d", m->max_new_tokens,
                  MAX_NEW_TOKENS);
        goto done;
    }
    if (!parse_sampling(sv, call, m->sampling, &r.sampling)) goto done;
    if (!parse_prompt(sv, call, m, r.session ? ctx : r.window, &r.prompt, &r.n_prompt)) goto done;
    r.max_new_tokens = m->max_new_tokens;
    if (!parse_stops(sv, call, m, &r.stop)) goto done;
    r.n_stop = (int)m->n_stop;
    g = malloc(sizeof *g);
    if (!g) {
        fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory for the request");
        goto done;
    }
    *g = (gen_call){ sv, call, stream };
    r.stream = g->stream;
    r.user = g;
    ifn_status st = scheduler_submit(sv->sch, &r);
    if (st == IFN_OK) {
        r.prompt = NULL; /* the scheduler owns them now */
        r.stop = NULL;
        r.n_stop = 0;
        g = NULL;
    } else {
        fail_call(call, submit_status(st), "%s", ifn_error_detail());
        ifn_error_clear();
    }
done:
    free(g);
    free(r.prompt);
    for (int i = 0; i < r.n_stop; i++) free(r.stop[i]);
    free(r.stop);
    infernode__v1__generate_request__free_unpacked(m, NULL);
}

static void handle_generate_unary(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    handle_generate(user, call, msg, len, false);
}

static void handle_generate_stream(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    handle_generate(user, call, msg, len, true);
}

/* ---- Tokenize, Detokenize, ModelInfo, DeleteSession ---- */

/* Answers a Tokenize call with ids. */
static void send_token_ids(service *sv, rpc_call *call, int32_t *ids, size_t n)
{
    Infernode__V1__TokenizeResponse resp = INFERNODE__V1__TOKENIZE_RESPONSE__INIT;
    resp.n_token_ids = n;
    resp.token_ids = ids;
    if (send_message(call, &resp.base)) rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    else fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "the response could not be sent");
}

static void handle_tokenize(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    service *sv = user;
    if (!check_ready(sv, call, false)) return;
    Infernode__V1__TokenizeRequest *m = infernode__v1__tokenize_request__unpack(NULL, len, msg);
    if (!m) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "request: not a valid TokenizeRequest message");
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    const bool add_special = m->has_add_special ? m->add_special : IFN_DEFAULT_ADD_SPECIAL;
    const bool parse_special = m->has_parse_special ? m->parse_special : IFN_DEFAULT_PARSE_SPECIAL;
    if (m->fim && m->text) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "prompt: set text or fim, not both");
    } else if (m->fim && parse_special) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "parse_special: not with fim (its prefix and suffix are always "
                  "plain text)");
    } else if (m->fim) {
        if (encode_fim(sv, call, m->fim, add_special, &ids, &n)) send_token_ids(sv, call, ids, n);
    } else if (!sv->tok) {
        fail_call(call, GRPC_STATUS_FAILED_PRECONDITION, "the model has no tokenizer");
    } else if (tokenizer_encode(sv->tok, m->text ? m->text : "", m->text ? strlen(m->text) : 0,
                                add_special, parse_special, &ids, &n) != IFN_OK) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "text: %s", ifn_error_detail());
        ifn_error_clear();
    } else {
        send_token_ids(sv, call, ids, n);
    }
    free(ids);
    infernode__v1__tokenize_request__free_unpacked(m, NULL);
}

/* A proto string must be valid UTF-8 (strict clients refuse the message otherwise), so text
 * has U+FFFD where the bytes do not form characters; text_bytes has the bytes as they are. */
static void send_detokenized(rpc_call *call, const char *bytes, size_t n)
{
    size_t used;
    char *text = malloc(unicode_utf8_scrub((const unsigned char *)bytes, n, UTF8_SCRUB_NUL, NULL, &used) + 1);
    if (!text) {
        fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory for the response");
        return;
    }
    text[unicode_utf8_scrub((const unsigned char *)bytes, n, UTF8_SCRUB_NUL, text, &used)] = '\0';
    Infernode__V1__DetokenizeResponse resp = INFERNODE__V1__DETOKENIZE_RESPONSE__INIT;
    resp.text = text;
    resp.has_text_bytes = true;
    resp.text_bytes = (ProtobufCBinaryData){ .len = n, .data = (uint8_t *)bytes };
    if (send_message(call, &resp.base)) rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    else fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "the response could not be sent");
    free(text);
}

static void handle_detokenize(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    service *sv = user;
    if (!check_ready(sv, call, false)) return;
    Infernode__V1__DetokenizeRequest *m = infernode__v1__detokenize_request__unpack(NULL, len, msg);
    if (!m) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "request: not a valid DetokenizeRequest message");
        return;
    }
    const int vocab = engine_config(sv->eng)->vocab_size;
    char *text = NULL;
    size_t text_len = 0;
    bool ok = true;
    for (size_t i = 0; i < m->n_token_ids && ok; i++)
        if (m->token_ids[i] < 0 || m->token_ids[i] >= vocab) {
            fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "token_ids[%zu]: %d is outside the vocabulary (0..%d)", i,
                      m->token_ids[i], vocab - 1);
            ok = false;
        }
    if (ok && !sv->tok) {
        fail_call(call, GRPC_STATUS_FAILED_PRECONDITION, "the model has no tokenizer");
    } else if (ok && tokenizer_decode(sv->tok, m->token_ids, m->n_token_ids, m->has_render_special && m->render_special,
                                      &text, &text_len) != IFN_OK) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "token_ids: %s", ifn_error_detail());
        ifn_error_clear();
    } else if (ok) {
        send_detokenized(call, text, text_len);
    }
    free(text);
    infernode__v1__detokenize_request__free_unpacked(m, NULL);
}

static const char *format_name(model_format f)
{
    switch (f) {
    case MODEL_FORMAT_GGUF: return "gguf";
    case MODEL_FORMAT_HF: return "hf";
    case MODEL_FORMAT_LLAMA2C: return "llama2c";
    }
    return "unknown";
}

/* The last component of a path (a file or an HF folder), as UTF-8: clients learn which model
 * runs, not where the server keeps its files. */
#define FILE_NAME_MAX (3 * 255 + 1) /* a name of 255 bytes, each byte at worst one U+FFFD */
static void file_name_of(const char *path, char out[FILE_NAME_MAX])
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t n = end - start < 255 ? end - start : 255, used;
    out[unicode_utf8_scrub((const unsigned char *)path + start, n, UTF8_SCRUB_NUL, out, &used)] = '\0';
}

static void handle_model_info(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    service *sv = user;
    if (!check_ready(sv, call, false)) return;
    Infernode__V1__ModelInfoRequest *m = infernode__v1__model_info_request__unpack(NULL, len, msg);
    if (!m) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "request: not a valid ModelInfoRequest message");
        return;
    }
    infernode__v1__model_info_request__free_unpacked(m, NULL);
    const model_config *c = engine_config(sv->eng);
    const model_file *mf = engine_model_file(sv->eng);
    Infernode__V1__ModelInfoResponse r = INFERNODE__V1__MODEL_INFO_RESPONSE__INIT;
    char file_name[FILE_NAME_MAX], draft_name[FILE_NAME_MAX];
    file_name_of(model_file_path(mf), file_name);
    r.architecture = (char *)c->arch;
    r.file_name = file_name;
    r.format = (char *)format_name(model_file_format(mf));
    r.has_n_layers = r.has_dim = r.has_n_heads = r.has_n_kv_heads = r.has_head_dim = r.has_ffn_dim = true;
    r.has_vocab_size = r.has_context_length = r.has_server_ctx_size = r.has_ranks = r.has_weight_bytes = true;
    r.n_layers = c->n_layers;
    r.dim = c->dim;
    r.n_heads = c->n_heads;
    r.n_kv_heads = c->n_kv_heads;
    r.head_dim = c->head_dim;
    r.ffn_dim = c->ffn_dim;
    r.vocab_size = c->vocab_size;
    r.context_length = c->ctx_len;
    r.server_ctx_size = engine_ctx_size(sv->eng);
    r.quantization = (char *)engine_quant_desc(sv->eng);
    r.ranks = sv->ranks;
    r.weight_bytes = (int64_t)engine_weight_bytes(sv->eng);
    r.kv_eviction = sv->kv.recompute ? "recompute" : "shift-rope";
    r.kv_cache_type = (char *)ifn_kv_type_name(sv->kv.kv_type);
    r.has_kv_bytes_per_rank = r.has_kv_slots = r.has_default_n_keep = r.has_default_n_discard = true;
    r.has_session_ttl_seconds = true;
    r.kv_bytes_per_rank = (int64_t)engine_kv_bytes(sv->eng);
    r.kv_slots = engine_n_slots(sv->eng);
    r.default_n_keep = sv->kv.n_keep;
    r.default_n_discard = sv->kv.n_discard;
    r.session_ttl_seconds = sv->kv.session_ttl;
    static const char *const spec_names[] = { [SCHED_SPEC_OFF] = "off", [SCHED_SPEC_DRAFT] = "draft",
                                              [SCHED_SPEC_NGRAM] = "ngram" };
    r.speculative = (char *)spec_names[sv->spec.mode];
    if (sv->spec.mode == SCHED_SPEC_DRAFT) {
        file_name_of(sv->spec.draft_model, draft_name);
        r.draft_model = draft_name;
        r.draft_quantization = (char *)sv->spec.draft_quant;
    }
    r.has_max_draft_tokens = sv->spec.mode != SCHED_SPEC_OFF;
    r.max_draft_tokens = sv->spec.max_draft;
    char plan[1024];
    if (sv->spec.mode != SCHED_SPEC_OFF) {
        scheduler_spec_describe(sv->sch, plan, sizeof plan);
        r.speculation_plan = plan;
    }
    r.has_fim_supported = true;
    r.fim_supported = sv->tok && model_tokenizer_fim_supported(sv->tok);
    if (send_message(call, &r.base)) rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    else fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "the response could not be sent");
}

static void handle_delete_session(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    service *sv = user;
    if (!check_ready(sv, call, false)) return;
    Infernode__V1__DeleteSessionRequest *m = infernode__v1__delete_session_request__unpack(NULL, len, msg);
    if (!m) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "request: not a valid DeleteSessionRequest message");
        return;
    }
    if (!m->session_id) {
        fail_call(call, GRPC_STATUS_INVALID_ARGUMENT, "session_id: required");
    } else if (check_session_id(sv, call, m->session_id)) {
        ifn_status st = scheduler_delete_session(sv->sch, m->session_id);
        if (st == IFN_OK) {
            Infernode__V1__DeleteSessionResponse resp = INFERNODE__V1__DELETE_SESSION_RESPONSE__INIT;
            if (send_message(call, &resp.base)) rpc_call_finish(call, GRPC_STATUS_OK, NULL);
            else fail_call(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "the response could not be sent");
        } else {
            fail_call(call, submit_status(st), "%s", ifn_error_detail());
            ifn_error_clear();
        }
    }
    infernode__v1__delete_session_request__free_unpacked(m, NULL);
}

/* ---- lifecycle ---- */

ifn_status service_create(metrics *m, service **out)
{
    service *sv = calloc(1, sizeof *sv);
    if (!sv) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the service");
    atomic_init(&sv->state, STATE_LOADING);
    atomic_init(&sv->seed_counter, (uint64_t)time(NULL) * 0xbf58476d1ce4e5b9ull);
    sv->met = m;
    ifn_status st = m ? metrics_counter(m, "infernode_errors_total", "Calls answered with a non-OK status, by code", "code",
                                        &sv->errors)
                      : IFN_OK;
    if (st != IFN_OK) {
        free(sv);
        return st;
    }
    *out = sv;
    return IFN_OK;
}

void service_destroy(service *sv) { free(sv); }

void service_methods(service *sv, rpc_method out[SERVICE_N_METHODS])
{
    const rpc_method methods[SERVICE_N_METHODS] = {
        { .path = "/infernode.v1.Inference/Generate", .kind = RPC_UNARY, .handler = handle_generate_unary, .user = sv },
        { .path = "/infernode.v1.Inference/GenerateStream", .kind = RPC_SERVER_STREAMING, .handler = handle_generate_stream, .user = sv },
        { .path = "/infernode.v1.Inference/Tokenize", .kind = RPC_UNARY, .handler = handle_tokenize, .user = sv },
        { .path = "/infernode.v1.Inference/Detokenize", .kind = RPC_UNARY, .handler = handle_detokenize, .user = sv },
        { .path = "/infernode.v1.Inference/ModelInfo", .kind = RPC_UNARY, .handler = handle_model_info, .user = sv },
        { .path = "/infernode.v1.Inference/DeleteSession", .kind = RPC_UNARY, .handler = handle_delete_session, .user = sv },
    };
    memcpy(out, methods, sizeof methods);
}

void service_ready(service *sv, const engine *e, const tokenizer *tok, scheduler *sch, int ranks, const service_kv *kv,
                   const service_spec *spec)
{
    sv->kv = *kv;
    sv->spec = *spec;
    sv->eng = e;
    sv->tok = tok;
    sv->sch = sch;
    sv->ranks = ranks;
    atomic_store_explicit(&sv->state, STATE_SERVING, memory_order_release);
}

void service_drain(service *sv) { atomic_store_explicit(&sv->state, STATE_DRAINING, memory_order_release); }
