#include "http_openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_template.h"
#include "http_openai_job.h"
#include "json.h"
#include "json_writer.h"
#include "model_tokenizer.h"
#include "unicode.h"

#define MAX_STOPS 16
#define MAX_STOP_BYTES 256
#define MAX_TOKENS (1 << 20)
#define MAX_CHOICES 16
#define MAX_SESSION_ID 64
#define COMPLETION_DEFAULT_MAX_TOKENS 16 /* OpenAI's default for /v1/completions */
#define MODEL_ID_MAX (3 * 255 + 1)

struct openai_api {
    const engine *eng;
    const tokenizer *tok;
    scheduler *sch;
    service_kv kv;
    service_spec spec;
    chat_template *tmpl; /* NULL without a tokenizer */
    char model[MODEL_ID_MAX];
    _Atomic uint64_t seed_counter;
};

/* One request, parsed: the scheduler request every choice copies, and the API's options. */
typedef struct {
    sched_request r;
    int n;
    bool stream, include_usage, echo;
    int logprobs_shown;  /* alternatives per token shown (r.logprobs: stored) */
    char *prompt_text; /* the prompt as text (for echo), malloc'd */
    size_t prompt_len;
} oa_request;

/* The last path component of the model, as UTF-8: the model's id in the API. */
static void model_id_of(const char *path, char out[MODEL_ID_MAX])
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t n = end - start < 255 ? end - start : 255, used;
    out[unicode_utf8_scrub((const unsigned char *)path + start, n, UTF8_SCRUB_NUL, out, &used)] = '\0';
}

/* The text of a single token, for the chat template's BOS and EOS ("" without one). */
static char *token_text(const tokenizer *t, int32_t id)
{
    char *text = NULL;
    size_t len;
    if (id < 0 || tokenizer_decode(t, &id, 1, true, &text, &len) != IFN_OK) {
        ifn_error_clear();
        return strdup("");
    }
    return text;
}

ifn_status openai_api_create(const engine *e, const tokenizer *tok, scheduler *sch, const service_kv *kv,
                             const service_spec *spec, openai_api **out)
{
    openai_api *a = calloc(1, sizeof *a);
    if (!a) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the HTTP API");
    *a = (openai_api){ .eng = e, .tok = tok, .sch = sch, .kv = *kv, .spec = *spec };
    atomic_init(&a->seed_counter, (uint64_t)time(NULL) * 0x94d049bb133111ebull);
    model_id_of(model_file_path(engine_model_file(e)), a->model);
    ifn_status st = IFN_OK;
    if (tok) {
        char *bos = token_text(tok, tokenizer_bos(tok)), *eos = token_text(tok, tokenizer_eos(tok));
        st = bos && eos ? chat_template_create(model_tokenizer_chat_template(tok), bos, eos, false, &a->tmpl)
                        : ifn_error_set(IFN_ERR_NOMEM, "no memory for the chat template");
        free(bos);
        free(eos);
    }
    if (st != IFN_OK) {
        free(a);
        return st;
    }
    *out = a;
    return IFN_OK;
}

void openai_api_destroy(openai_api *a)
{
    if (!a) return;
    chat_template_destroy(a->tmpl);
    free(a);
}

void openai_models(const openai_api *a, openai_reply *out)
{
    json_writer w;
    json_writer_init(&w);
    json_object_begin(&w);
    json_kv_string(&w, "object", "list");
    json_key(&w, "data");
    json_array_begin(&w);
    json_object_begin(&w);
    json_kv_string(&w, "id", a->model);
    json_kv_string(&w, "object", "model");
    json_kv_int(&w, "created", 0);
    json_kv_string(&w, "owned_by", "infernode");
    json_kv_int(&w, "context_length", engine_ctx_size(a->eng));
    json_kv_string(&w, "chat_template", a->tmpl ? chat_template_name(a->tmpl) : "none");
    json_object_end(&w);
    json_array_end(&w);
    json_object_end(&w);
    *out = (openai_reply){ .status = 200 };
    if (json_writer_take(&w, &out->body, NULL) != IFN_OK) {
        ifn_error_clear();
        openai_error(out, 500, NULL, "no memory for the response");
    }
}

/* ---- reading the request ---- */

/* A member that is present and not null, else NULL (clients send null for "unset"). */
static const json_value *member(const json_value *o, const char *key)
{
    const json_value *v = json_get(o, key);
    return v && v->kind != JSON_NULL ? v : NULL;
}

/* An optional integer member in [min, max]; false after the error reply. */
static bool opt_int(const json_value *o, const char *key, const char *name, int64_t min, int64_t max, int64_t *out,
                    openai_reply *err)
{
    const json_value *v = member(o, key);
    if (!v) return true;
    if (!json_integer(v, min, max, out)) {
        openai_error(err, 400, name, "%s: must be an integer in %lld..%lld", name, (long long)min, (long long)max);
        return false;
    }
    return true;
}

/* An optional finite number member; false after the error reply. */
static bool opt_number(const json_value *o, const char *key, double *out, openai_reply *err)
{
    const json_value *v = member(o, key);
    if (!v) return true;
    if (v->kind != JSON_NUMBER || !isfinite(v->u.number)) {
        openai_error(err, 400, key, "%s: must be a number", key);
        return false;
    }
    *out = v->u.number;
    return true;
}

static bool opt_bool(const json_value *o, const char *key, const char *name, bool *out, openai_reply *err)
{
    const json_value *v = member(o, key);
    if (!v) return true;
    if (v->kind != JSON_BOOL) {
        openai_error(err, 400, name, "%s: must be true or false", name);
        return false;
    }
    *out = v->u.boolean;
    return true;
}

/* A number member that must lie in a range (lo_open: lo itself excluded, and so for hi). */
static bool opt_range(const json_value *o, const char *key, double lo, bool lo_open, double hi, bool hi_open,
                      float *out, openai_reply *err)
{
    double v = *out;
    if (!opt_number(o, key, &v, err)) return false;
    if (v < lo || (lo_open && v == lo) || v > hi || (hi_open && v == hi)) {
        openai_error(err, 400, key, "%s: %g is outside %s%g, %g%s", key, v, lo_open ? "(" : "[", lo, hi,
                     hi_open ? ")" : "]");
        return false;
    }
    *out = (float)v;
    return true;
}

/* Sampling: the gRPC service's defaults (greedy), OpenAI's names, and this server's extensions
 * top_k, min_p and repetition_penalty. */
static bool parse_sampling(openai_api *a, const json_value *body, sampler_params *p, openai_reply *err)
{
    *p = sampler_params_default();
    p->seed = atomic_fetch_add(&a->seed_counter, 0x9e3779b97f4a7c15ull);
    int64_t top_k = p->top_k, seed;
    if (!opt_range(body, "temperature", 0, false, INFINITY, true, &p->temperature, err) ||
        !opt_range(body, "top_p", 0, true, 1, false, &p->top_p, err) ||
        !opt_range(body, "min_p", 0, false, 1, true, &p->min_p, err) ||
        !opt_range(body, "repetition_penalty", 0, true, INFINITY, true, &p->repeat_penalty, err) ||
        !opt_int(body, "top_k", "top_k", 0, 1 << 30, &top_k, err))
        return false;
    p->top_k = (int)top_k;
    if (member(body, "seed")) {
        if (!opt_int(body, "seed", "seed", -(INT64_C(1) << 53), INT64_C(1) << 53, &seed, err)) return false;
        p->seed = (uint64_t)seed;
    }
    static const char *const zero_only[] = { "presence_penalty", "frequency_penalty" };
    for (size_t i = 0; i < sizeof zero_only / sizeof *zero_only; i++) {
        double v = 0;
        if (!opt_number(body, zero_only[i], &v, err)) return false;
        if (v != 0) {
            openai_error(err, 400, zero_only[i], "%s: only 0 is supported (repetition_penalty is this server's "
                         "penalty)", zero_only[i]);
            return false;
        }
    }
    const json_value *bias = member(body, "logit_bias");
    if (bias && (bias->kind != JSON_OBJECT || bias->u.object.n > 0)) {
        openai_error(err, 400, "logit_bias", "logit_bias: not supported");
        return false;
    }
    if (sampler_params_validate(p) != IFN_OK) {
        openai_error(err, 400, NULL, "%s", ifn_error_detail());
        ifn_error_clear();
        return false;
    }
    return true;
}

/* stop: a string or an array of strings. */
static bool parse_stop(const json_value *body, sched_request *r, openai_reply *err)
{
    const json_value *v = member(body, "stop");
    if (!v) return true;
    const json_value *items = v->kind == JSON_ARRAY ? v->u.array.items : v;
    size_t n = v->kind == JSON_ARRAY ? v->u.array.n : 1;
    if (v->kind != JSON_ARRAY && v->kind != JSON_STRING) {
        openai_error(err, 400, "stop", "stop: must be a string or an array of strings");
        return false;
    }
    if (n > MAX_STOPS) {
        openai_error(err, 400, "stop", "stop: %zu stop sequences, at most %d", n, MAX_STOPS);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (items[i].kind != JSON_STRING || items[i].u.string.len == 0 || items[i].u.string.len > MAX_STOP_BYTES ||
            strlen(items[i].u.string.ptr) != items[i].u.string.len) {
            openai_error(err, 400, "stop", "stop[%zu]: must be a string of 1..%d bytes without NUL", i, MAX_STOP_BYTES);
            return false;
        }
    if (n == 0) return true;
    r->stop = calloc(n, sizeof *r->stop);
    for (size_t i = 0; r->stop && i < n; i++, r->n_stop++)
        if (!(r->stop[i] = strdup(items[i].u.string.ptr))) break;
    if (!r->stop || r->n_stop != (int)n) {
        openai_error(err, 500, NULL, "no memory for the stop sequences");
        return false;
    }
    return true;
}

/* ---- the prompt ---- */

/* The ids of a token-id prompt; false after the error reply. */
static bool prompt_ids(openai_api *a, const json_value *arr, int32_t **ids, int *n, openai_reply *err)
{
    const int vocab = engine_config(a->eng)->vocab_size;
    if (arr->u.array.n == 0) {
        openai_error(err, 400, "prompt", "prompt: the prompt is empty");
        return false;
    }
    *ids = malloc(arr->u.array.n * sizeof **ids);
    if (!*ids) {
        openai_error(err, 500, NULL, "no memory for a prompt of %zu tokens", arr->u.array.n);
        return false;
    }
    for (size_t i = 0; i < arr->u.array.n; i++) {
        int64_t id;
        if (!json_integer(&arr->u.array.items[i], 0, vocab - 1, &id)) {
            openai_error(err, 400, "prompt", "prompt[%zu]: not a token id of the vocabulary (0..%d)", i, vocab - 1);
            return false;
        }
        (*ids)[i] = (int32_t)id;
    }
    *n = (int)arr->u.array.n;
    return true;
}

/* Text to ids (add_special as the vocabulary says); false after the error reply. */
static bool encode_text(openai_api *a, const char *field, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, int *n, openai_reply *err)
{
    size_t count = 0;
    if (!a->tok) {
        openai_error(err, 400, field, "%s: the model has no tokenizer; send token ids", field);
        return false;
    }
    if (tokenizer_encode(a->tok, text, len, add_special, parse_special, ids, &count) != IFN_OK) {
        openai_error(err, 400, field, "%s: %s", field, ifn_error_detail());
        ifn_error_clear();
        return false;
    }
    *n = (int)count;
    return true;
}

/* The one prompt of a completion: a string, token ids, or an array holding one of them. */
static const json_value *single_prompt(const json_value *v, openai_reply *err)
{
    if (v->kind == JSON_ARRAY && v->u.array.n == 1 &&
        (v->u.array.items[0].kind == JSON_STRING || v->u.array.items[0].kind == JSON_ARRAY))
        v = &v->u.array.items[0];
    if (v->kind == JSON_STRING || v->kind == JSON_ARRAY) {
        for (size_t i = 0; v->kind == JSON_ARRAY && i < v->u.array.n; i++)
            if (v->u.array.items[i].kind != JSON_NUMBER) {
                openai_error(err, 400, "prompt", "prompt: one prompt per request (a string or an array of token "
                             "ids)");
                return NULL;
            }
        return v;
    }
    openai_error(err, 400, "prompt", "prompt: must be a string or an array of token ids");
    return NULL;
}

/* The prompt of /v1/completions: text, token ids, or with suffix a fill-in-the-middle prompt
 * in the model's convention. Keeps the prompt's text for echo. */
static bool parse_prompt(openai_api *a, const json_value *body, oa_request *q, openai_reply *err)
{
    const json_value *v = member(body, "prompt"), *suffix = member(body, "suffix");
    bool add_special = true;
    if (!opt_bool(body, "add_special", "add_special", &add_special, err)) return false;
    if (!v) {
        openai_error(err, 400, "prompt", "prompt: required");
        return false;
    }
    if (!(v = single_prompt(v, err))) return false;
    if (suffix && (suffix->kind != JSON_STRING || v->kind != JSON_STRING)) {
        openai_error(err, 400, "suffix", "suffix: must be a string, with a string prompt");
        return false;
    }
    if (suffix && (q->echo || member(body, "session_id"))) {
        openai_error(err, 400, "suffix", "suffix: not with %s (a fill-in-the-middle prompt is a whole prompt)",
                     q->echo ? "echo" : "session_id");
        return false;
    }
    if (v->kind == JSON_ARRAY) {
        if (!prompt_ids(a, v, &q->r.prompt, &q->r.n_prompt, err)) return false;
    } else if (suffix) {
        size_t count = 0;
        if (!a->tok) {
            openai_error(err, 400, "suffix", "suffix: the model has no tokenizer");
            return false;
        }
        ifn_status st = model_tokenizer_encode_fim(a->tok, v->u.string.ptr, v->u.string.len, suffix->u.string.ptr,
                                                   suffix->u.string.len, add_special, &q->r.prompt, &count);
        if (st != IFN_OK) {
            openai_error(err, 400, "suffix", "suffix: %s", ifn_error_detail());
            ifn_error_clear();
            return false;
        }
        q->r.n_prompt = (int)count;
    } else if (!encode_text(a, "prompt", v->u.string.ptr, v->u.string.len, add_special, false, &q->r.prompt,
                            &q->r.n_prompt, err)) {
        return false;
    }
    if (!q->echo) return true;
    if (v->kind == JSON_STRING) {
        q->prompt_text = malloc(v->u.string.len + 1);
        if (q->prompt_text) memcpy(q->prompt_text, v->u.string.ptr, v->u.string.len + 1);
        q->prompt_len = v->u.string.len;
    } else if (a->tok && tokenizer_decode(a->tok, q->r.prompt, (size_t)q->r.n_prompt, false, &q->prompt_text,
                                          &q->prompt_len) != IFN_OK) {
        ifn_error_clear();
    }
    if (!q->prompt_text) q->prompt_text = strdup("");
    if (!q->prompt_text) openai_error(err, 500, NULL, "no memory for the echo");
    return q->prompt_text != NULL;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts joined. */
static char *message_content(const json_value *m, size_t i, openai_reply *err)
{
    const json_value *c = member(m, "content");
    char name[64];
    snprintf(name, sizeof name, "messages[%zu].content", i);
    if (c && c->kind == JSON_STRING) return strdup(c->u.string.ptr);
    if (!c || c->kind != JSON_ARRAY) {
        openai_error(err, 400, name, "%s: must be a string or an array of text parts", name);
        return NULL;
    }
    size_t len = 0;
    char *out = calloc(1, 1);
    for (size_t k = 0; out && k < c->u.array.n; k++) {
        const char *type = json_get_string(&c->u.array.items[k], "type");
        const char *text = json_get_string(&c->u.array.items[k], "text");
        if (!type || strcmp(type, "text") != 0 || !text) {
            openai_error(err, 400, name, "%s[%zu]: only {\"type\": \"text\", \"text\": ...} parts are served", name, k);
            free(out);
            return NULL;
        }
        char *grown = realloc(out, len + strlen(text) + 1);
        if (!grown) {
            free(out);
            out = NULL;
            break;
        }
        out = grown;
        memcpy(out + len, text, strlen(text) + 1);
        len += strlen(text);
    }
    if (!out) openai_error(err, 500, NULL, "no memory for the messages");
    return out;
}

/* The prompt of /v1/chat/completions: the messages through the model's chat template, then
 * tokenized with BOS as the vocabulary says and the template's special texts as their tokens
 * (chat_template.h's BOS contract). */
static bool parse_messages(openai_api *a, const json_value *body, oa_request *q, openai_reply *err)
{
    const json_value *v = member(body, "messages");
    if (!v || v->kind != JSON_ARRAY || v->u.array.n == 0) {
        openai_error(err, 400, "messages", "messages: required, a non-empty array of {role, content}");
        return false;
    }
    if (!a->tmpl) {
        openai_error(err, 400, "messages", "messages: the model has no tokenizer, so no chat template");
        return false;
    }
    const size_t n = v->u.array.n;
    chat_message *msgs = calloc(n, sizeof *msgs);
    char **contents = calloc(n, sizeof *contents);
    bool ok = msgs && contents;
    if (!ok) openai_error(err, 500, NULL, "no memory for the messages");
    for (size_t i = 0; ok && i < n; i++) {
        const json_value *m = &v->u.array.items[i];
        msgs[i].role = json_get_string(m, "role");
        if (!msgs[i].role) {
            char name[48];
            snprintf(name, sizeof name, "messages[%zu].role", i);
            openai_error(err, 400, name, "%s: required, a string", name);
            ok = false;
        } else {
            ok = (contents[i] = message_content(m, i, err)) != NULL;
            msgs[i].content = contents[i];
        }
    }
    char *text = NULL;
    if (ok && chat_template_render(a->tmpl, msgs, n, true, &text) != IFN_OK) {
        char param[48]; /* the message and field the template names: "messages[2].role: ..." */
        snprintf(param, sizeof param, "%.*s", (int)strcspn(ifn_error_detail(), ":"), ifn_error_detail());
        openai_error(err, 400, param, "%s", ifn_error_detail());
        ifn_error_clear();
        ok = false;
    }
    if (ok) ok = encode_text(a, "messages", text, strlen(text), true, true, &q->r.prompt, &q->r.n_prompt, err);
    free(text);
    for (size_t i = 0; contents && i < n; i++) free(contents[i]);
    free(contents);
    free(msgs);
    return ok;
}

/* The session extension (session_id, new_session) and the server's KV ring defaults, as the
 * gRPC service sets them for a request that leaves them unset. */
static bool parse_session(openai_api *a, const json_value *body, sched_request *r, openai_reply *err)
{
    const json_value *id = member(body, "session_id");
    if (!opt_bool(body, "new_session", "new_session", &r->new_session, err)) return false;
    if (id) {
        if (id->kind != JSON_STRING || id->u.string.len == 0 || id->u.string.len > MAX_SESSION_ID) {
            openai_error(err, 400, "session_id", "session_id: must be a string of 1..%d characters", MAX_SESSION_ID);
            return false;
        }
        if (r->new_session) {
            openai_error(err, 400, "new_session", "new_session: set with session_id; a request continues a session "
                         "or starts one");
            return false;
        }
        r->session = id->u.string.ptr;
        return true;
    }
    r->window = engine_ctx_size(a->eng);
    r->n_keep = a->kv.n_keep < r->window ? a->kv.n_keep : r->window - 1;
    const int room = r->window - r->n_keep;
    r->n_discard = a->kv.n_discard < room ? a->kv.n_discard : room;
    if (r->n_discard == -1) r->n_discard = room / 2 > 0 ? room / 2 : 1;
    return true;
}

/* The speculative extension: {"enabled": bool, "max_draft_tokens": int}. */
static bool parse_speculative(openai_api *a, const json_value *body, sched_request *r, openai_reply *err)
{
    const json_value *o = member(body, "speculative");
    if (!o) return true;
    if (o->kind != JSON_OBJECT) {
        openai_error(err, 400, "speculative", "speculative: must be an object");
        return false;
    }
    bool enabled = true;
    int64_t max_draft = 0;
    if (!opt_bool(o, "enabled", "speculative.enabled", &enabled, err)) return false;
    r->spec_off = !enabled;
    if (r->spec_off) return true;
    if (a->spec.mode == SCHED_SPEC_OFF) {
        if (!member(o, "enabled") && !member(o, "max_draft_tokens")) return true;
        openai_error(err, 400, "speculative", "speculative: this server does not speculate (start it with "
                     "--draft-model PATH or --spec ngram)");
        return false;
    }
    if (!opt_int(o, "max_draft_tokens", "speculative.max_draft_tokens", 1, a->spec.max_draft, &max_draft, err))
        return false;
    r->spec_max_draft = (int)max_draft;
    return true;
}

/* n, stream, echo, logprobs (completions: 1.. alternatives; chat: true, top_logprobs
 * alternatives), ignore_eos. */
static bool parse_options(const json_value *body, bool chat, oa_request *q, openai_reply *err)
{
    int64_t n = 1, best_of = 0, logprobs = 0, top_logprobs = 0;
    bool chat_logprobs = false;
    if (!opt_int(body, "n", "n", 1, MAX_CHOICES, &n, err) || !opt_bool(body, "stream", "stream", &q->stream, err) ||
        !opt_bool(body, "ignore_eos", "ignore_eos", &q->r.ignore_eos, err) ||
        !opt_int(body, "best_of", "best_of", 1, MAX_CHOICES, &best_of, err))
        return false;
    q->n = (int)n;
    if (best_of && best_of != n) {
        openai_error(err, 400, "best_of", "best_of: only equal to n (every choice is returned)");
        return false;
    }
    const json_value *so = member(body, "stream_options");
    if (so && !opt_bool(so, "include_usage", "stream_options.include_usage", &q->include_usage, err)) return false;
    if (chat) {
        if (!opt_bool(body, "logprobs", "logprobs", &chat_logprobs, err) ||
            !opt_int(body, "top_logprobs", "top_logprobs", 0, SCHED_MAX_LOGPROBS, &top_logprobs, err))
            return false;
        if (top_logprobs > 0 && !chat_logprobs) {
            openai_error(err, 400, "top_logprobs", "top_logprobs: needs logprobs true");
            return false;
        }
        q->logprobs_shown = (int)top_logprobs;
        q->r.logprobs = chat_logprobs ? (top_logprobs > 0 ? (int)top_logprobs : 1) : 0;
    } else {
        if (!opt_bool(body, "echo", "echo", &q->echo, err) ||
            !opt_int(body, "logprobs", "logprobs", 0, SCHED_MAX_LOGPROBS, &logprobs, err))
            return false;
        q->logprobs_shown = q->r.logprobs = (int)logprobs;
    }
    return true;
}

/* max_tokens (chat: also max_completion_tokens): given, else OpenAI's 16 for completions and
 * the rest of the context for chat. */
static bool parse_max_tokens(openai_api *a, const json_value *body, bool chat, sched_request *r, openai_reply *err)
{
    const char *key = chat && member(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    const int window = r->session ? engine_ctx_size(a->eng) : r->window;
    if (r->n_prompt > window) {
        openai_error(err, 400, chat ? "messages" : "prompt", "%s: the prompt has %d tokens, more than the context of %d",
                     chat ? "messages" : "prompt", r->n_prompt, window);
        return false;
    }
    int64_t max = chat ? (window - r->n_prompt > 0 ? window - r->n_prompt : 1) : COMPLETION_DEFAULT_MAX_TOKENS;
    if (!opt_int(body, key, key, 1, MAX_TOKENS, &max, err)) return false;
    r->max_new_tokens = (int)max;
    return true;
}

/* The HTTP status and field of a scheduler refusal. */
static void submit_error(ifn_status st, openai_reply *out)
{
    const char *detail = ifn_error_detail();
    switch (st) {
    case IFN_ERR_RANGE: openai_error(out, 429, NULL, "%s", detail); break;
    case IFN_ERR_NOT_FOUND: openai_error(out, 404, "session_id", "%s", detail); break;
    case IFN_ERR_BUSY: openai_error(out, 409, "session_id", "%s", detail); break;
    case IFN_ERR_UNAVAILABLE: openai_error(out, 503, NULL, "%s", detail); break;
    case IFN_ERR_INVALID_ARG: {
        const bool max = strncmp(detail, "max_new_tokens", 14) == 0;
        char param[64];
        snprintf(param, sizeof param, "%.*s", (int)strcspn(detail, ":"), detail);
        openai_error(out, 400, max ? "max_tokens" : param, "%s", detail);
        break;
    }
    default: openai_error(out, 500, NULL, "%s", detail); break;
    }
    ifn_error_clear();
}

/* A copy of the request for one choice (the scheduler owns a submitted one's prompt and stops). */
static bool copy_request(const sched_request *r, sched_request *c)
{
    *c = *r;
    c->stop = NULL;
    c->n_stop = 0;
    c->prompt = malloc((size_t)r->n_prompt * sizeof *c->prompt);
    if (c->prompt) memcpy(c->prompt, r->prompt, (size_t)r->n_prompt * sizeof *c->prompt);
    c->stop = r->n_stop ? calloc((size_t)r->n_stop, sizeof *c->stop) : NULL;
    bool ok = c->prompt && (!r->n_stop || c->stop);
    for (int i = 0; ok && i < r->n_stop; i++, c->n_stop++) ok = (c->stop[i] = strdup(r->stop[i])) != NULL;
    return ok;
}

static void free_request(sched_request *r)
{
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    r->prompt = NULL;
    r->stop = NULL;
    r->n_stop = 0;
}

/* Submits every choice (seed, seed + 1, ...); on a refusal the ones already running are
 * cancelled. */
static bool submit_all(openai_api *a, oa_request *q, openai_stream *job, openai_reply *err)
{
    for (int i = 0; i < q->n; i++) {
        sched_request c;
        if (!copy_request(&q->r, &c)) {
            free_request(&c);
            oa_job_cancel(job);
            openai_error(err, 500, NULL, "no memory for the request");
            return false;
        }
        c.sampling.seed += (uint64_t)i;
        c.emit = oa_job_emit;
        c.check = oa_job_check;
        c.user = oa_job_user(job, i);
        oa_job_submitting(job);
        ifn_status st = scheduler_submit(a->sch, &c);
        if (st != IFN_OK) {
            oa_job_refused(job);
            free_request(&c);
            oa_job_cancel(job);
            submit_error(st, err);
            return false;
        }
    }
    return true;
}

/* Reads the request body into q; false after the error reply. */
static bool parse_request(openai_api *a, const json_value *body, bool chat, oa_request *q, openai_reply *err)
{
    const json_value *model_field = json_get(body, "model");
    if (model_field && model_field->kind != JSON_STRING && model_field->kind != JSON_NULL) {
        openai_error(err, 400, "model", "model: must be a string");
        return false;
    }
    q->r.stream = true;
    return parse_options(body, chat, q, err) && parse_session(a, body, &q->r, err) &&
           parse_speculative(a, body, &q->r, err) && parse_sampling(a, body, &q->r.sampling, err) &&
           (chat ? parse_messages(a, body, q, err) : parse_prompt(a, body, q, err)) &&
           parse_max_tokens(a, body, chat, &q->r, err) && parse_stop(body, &q->r, err);
}

void openai_complete(openai_api *a, const char *text, size_t len, bool chat, bool (*gone)(void *user), void *user,
                     openai_reply *out)
{
    json_value *body = NULL;
    if (json_parse(text, len, "request body", &body) != IFN_OK) {
        openai_error(out, 400, NULL, "%s", ifn_error_detail());
        ifn_error_clear();
        return;
    }
    oa_request q = { .n = 1 };
    openai_stream *job = NULL;
    if (body->kind != JSON_OBJECT) {
        openai_error(out, 400, NULL, "request body: must be a JSON object");
    } else if (parse_request(a, body, chat, &q, out)) {
        oa_job_params p = { .n = q.n, .chat = chat, .stream = q.stream, .include_usage = q.include_usage,
                            .model = a->model, .echo = q.prompt_text, .echo_len = q.prompt_len,
                            .logprobs = q.r.logprobs, .logprobs_shown = q.logprobs_shown, .tok = a->tok };
        job = oa_job_create(&p);
        if (!job) openai_error(out, 500, NULL, "no memory for the request");
    }
    if (job && submit_all(a, &q, job, out)) {
        if (q.stream) *out = (openai_reply){ .status = 200, .stream = job };
        else oa_job_finish_whole(job, gone, user, out);
    } else if (job) {
        openai_stream_close(job);
    }
    free_request(&q.r);
    free(q.prompt_text);
    json_free(body);
}
