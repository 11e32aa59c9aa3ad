#include "http_openai_job.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "http_openai_logprobs.h"
#include "json_writer.h"

typedef struct oa_event {
    struct oa_event *next;
    int index;
    char *text;
    size_t len;
    sched_finish finish;
    int prompt_tokens, completion_tokens;
    char session_id[SCHED_SESSION_ID_LEN + 1]; /* "" without a session */
    oa_logprobs lp;        /* its tokens' log-probabilities (logprobs requests) */
} oa_event;

typedef struct {
    openai_stream *s;
    int index;
} oa_choice;

/* What one choice has produced, for a response that does not stream. */
typedef struct {
    char *text;
    size_t len;
    sched_finish finish;
    int completion_tokens;
    oa_logprobs lp;
} oa_result;

struct openai_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;              /* under mu: the HTTP side and every choice not finished */
    int n_running;         /* under mu: choices submitted and not finished */
    oa_event *head, *tail; /* under mu */
    bool lost;             /* under mu: an event could not be kept (no memory) */
    _Atomic bool cancelled;
    oa_job_params p;
    char *echo;
    char id[48];
    long long created;
    oa_choice *choices;    /* [n] */
    bool *started;         /* [n] a choice's first event was sent (the HTTP thread) */
    size_t *sent;          /* [n] bytes of a choice's text sent (the HTTP thread) */
    oa_logprobs_format lpf;
    int prompt_tokens, completion_tokens;
    char session_id[SCHED_SESSION_ID_LEN + 1];
    bool failed, ended;    /* an error event was sent; [DONE] was sent */
    char *out;             /* bytes formatted and not read yet */
    size_t out_len, out_pos;
};

static void job_free(openai_stream *s)
{
    for (oa_event *e = s->head, *next; e; e = next) {
        next = e->next;
        oa_logprobs_free(&e->lp);
        free(e->text);
        free(e);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->echo);
    free(s->choices);
    free(s->started);
    free(s->sent);
    free(s->out);
    free(s);
}

/* Drops a reference (under mu, which it releases). */
static void job_unref_unlock(openai_stream *s)
{
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) job_free(s);
}

openai_stream *oa_job_create(const oa_job_params *p)
{
    openai_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->refs = 1;
    s->p = *p;
    s->choices = calloc((size_t)p->n, sizeof *s->choices);
    s->started = calloc((size_t)p->n, sizeof *s->started);
    s->sent = calloc((size_t)p->n, sizeof *s->sent);
    s->lpf = oa_logprobs_format_of(p->tok, p->logprobs, p->logprobs_shown, p->chat);
    if (p->echo) {
        s->echo = malloc(p->echo_len + 1);
        if (s->echo) memcpy(s->echo, p->echo, p->echo_len), s->echo[p->echo_len] = '\0';
    }
    uint8_t raw[12] = { 0 };
    if (getrandom(raw, sizeof raw, GRND_NONBLOCK) != (ssize_t)sizeof raw) memset(raw, 0, sizeof raw);
    int k = snprintf(s->id, sizeof s->id, "%s", p->chat ? "chatcmpl-" : "cmpl-");
    for (size_t i = 0; i < sizeof raw; i++) k += snprintf(s->id + k, sizeof s->id - (size_t)k, "%02x", raw[i]);
    s->created = (long long)time(NULL);
    if (!s->choices || !s->started || !s->sent || (p->echo && !s->echo)) {
        job_free(s);
        return NULL;
    }
    for (int i = 0; i < p->n; i++) s->choices[i] = (oa_choice){ s, i };
    return s;
}

void *oa_job_user(openai_stream *s, int choice) { return &s->choices[choice]; }

void oa_job_submitting(openai_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->refs++;
    s->n_running++;
    pthread_mutex_unlock(&s->mu);
}

void oa_job_refused(openai_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->refs--; /* the HTTP side still holds one */
    s->n_running--;
    pthread_mutex_unlock(&s->mu);
}

void oa_job_cancel(openai_stream *s) { atomic_store(&s->cancelled, true); }

sched_finish oa_job_check(void *user)
{
    const oa_choice *c = user;
    return atomic_load(&c->s->cancelled) ? SCHED_CANCELLED : SCHED_RUNNING;
}

/* On the scheduler's thread: a copy of the event joins the queue. */
void oa_job_emit(void *user, const sched_event *ev)
{
    const oa_choice *c = user;
    openai_stream *s = c->s;
    oa_event *e = calloc(1, sizeof *e);
    char *text = e ? malloc(ev->text_len + 1) : NULL;
    pthread_mutex_lock(&s->mu);
    if (e && text) {
        memcpy(text, ev->text, ev->text_len);
        *e = (oa_event){ .index = c->index, .text = text, .len = ev->text_len, .finish = ev->finish,
                         .prompt_tokens = ev->prompt_tokens, .completion_tokens = ev->completion_tokens };
        if (ev->session_id) snprintf(e->session_id, sizeof e->session_id, "%s", ev->session_id);
        if (s->p.logprobs && (!ev->logprobs || !oa_logprobs_append(&e->lp, s->p.logprobs, ev->ids, ev->logprobs,
                                                                    ev->top_ids, ev->top_logprobs, ev->n_ids)))
            s->lost = true;
        if (s->tail) s->tail->next = e;
        else s->head = e;
        s->tail = e;
    } else {
        free(e);
        free(text);
        s->lost = true;
    }
    pthread_cond_broadcast(&s->cv);
    if (ev->finish == SCHED_RUNNING) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->n_running--;
    job_unref_unlock(s);
}

/* ---- errors ---- */

static const char *error_type(unsigned status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *error_code(unsigned status)
{
    switch (status) {
    case 401: return "invalid_api_key";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "request_too_large";
    case 429: return "queue_full";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal_error" : "invalid_request";
    }
}

static void write_error(json_writer *w, unsigned status, const char *param, const char *msg)
{
    json_object_begin(w);
    json_key(w, "error");
    json_object_begin(w);
    json_kv_string(w, "message", msg);
    json_kv_string(w, "type", error_type(status));
    json_key(w, "param");
    if (param) json_string(w, param);
    else json_null(w);
    json_kv_string(w, "code", error_code(status));
    json_object_end(w);
    json_object_end(w);
}

/* A fixed body for when even an error cannot be written. */
static char *no_memory_body(void)
{
    static const char body[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                               "\"code\":\"internal_error\"}}";
    return strdup(body);
}

void openai_error(openai_reply *out, unsigned status, const char *param, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_writer w;
    json_writer_init(&w);
    write_error(&w, status, param, msg);
    *out = (openai_reply){ .status = status };
    if (json_writer_take(&w, &out->body, NULL) != IFN_OK) {
        ifn_error_clear();
        out->body = no_memory_body();
    }
}

/* ---- responses ---- */

static const char *finish_name(sched_finish f) { return f == SCHED_LENGTH ? "length" : "stop"; }

/* The members every response object starts with. */
static void write_head(json_writer *w, const openai_stream *s, const char *object)
{
    json_kv_string(w, "id", s->id);
    json_kv_string(w, "object", object);
    json_kv_int(w, "created", s->created);
    json_kv_string(w, "model", s->p.model);
}

static void write_usage(json_writer *w, const openai_stream *s)
{
    json_key(w, "usage");
    json_object_begin(w);
    json_kv_int(w, "prompt_tokens", s->prompt_tokens);
    json_kv_int(w, "completion_tokens", s->completion_tokens);
    json_kv_int(w, "total_tokens", (int64_t)s->prompt_tokens + s->completion_tokens);
    json_object_end(w);
    if (s->session_id[0]) json_kv_string(w, "session_id", s->session_id);
}

/* One choice: its text (after the echo when asked) and how it ended (f: SCHED_RUNNING for a
 * chunk that does not end it). */
static void write_choice(json_writer *w, const openai_stream *s, int index, const char *text, size_t len, bool first,
                         sched_finish f, const oa_logprobs *lp, size_t offset)
{
    json_object_begin(w);
    json_kv_int(w, "index", index);
    if (s->p.chat) {
        json_key(w, s->p.stream ? "delta" : "message");
        json_object_begin(w);
        if (first || !s->p.stream) json_kv_string(w, "role", "assistant");
        json_key(w, "content");
        json_string_n(w, text, len);
        json_object_end(w);
    } else {
        json_key(w, "text");
        json_string_n(w, text, len);
    }
    json_key(w, "logprobs");
    oa_logprobs_write(w, &s->lpf, lp, offset);
    json_key(w, "finish_reason");
    if (f == SCHED_RUNNING) json_null(w);
    else json_string(w, finish_name(f));
    json_object_end(w);
}

/* A choice's text with the echo in front when it is its first. */
static char *with_echo(const openai_stream *s, const char *text, size_t len, bool first, size_t *out_len)
{
    size_t echo = first && s->echo ? s->p.echo_len : 0;
    char *t = malloc(echo + len + 1);
    if (!t) return NULL;
    if (echo) memcpy(t, s->echo, echo);
    memcpy(t + echo, text, len);
    t[echo + len] = '\0';
    *out_len = echo + len;
    return t;
}

/* ---- a response that does not stream ---- */

/* Moves the queued events into the results (under mu). */
static void collect(openai_stream *s, oa_result *res)
{
    for (oa_event *e; (e = s->head);) {
        s->head = e->next;
        oa_result *r = &res[e->index];
        char *t = realloc(r->text, r->len + e->len + 1);
        if (t) {
            memcpy(t + r->len, e->text, e->len);
            r->len += e->len;
            t[r->len] = '\0';
            r->text = t;
        } else {
            s->lost = true;
        }
        if (s->p.logprobs && !oa_logprobs_append(&r->lp, s->p.logprobs, e->lp.ids, e->lp.lp, e->lp.top, e->lp.top_lp,
                                                  e->lp.n))
            s->lost = true;
        oa_logprobs_free(&e->lp);
        if (e->finish != SCHED_RUNNING) {
            r->finish = e->finish;
            r->completion_tokens = e->completion_tokens;
            s->prompt_tokens = e->prompt_tokens;
            if (e->session_id[0]) memcpy(s->session_id, e->session_id, sizeof s->session_id);
        }
        free(e->text);
        free(e);
    }
    s->tail = NULL;
}

static void write_whole(openai_stream *s, const oa_result *res, openai_reply *out)
{
    json_writer w;
    json_writer_init(&w);
    json_object_begin(&w);
    write_head(&w, s, s->p.chat ? "chat.completion" : "text_completion");
    json_key(&w, "choices");
    json_array_begin(&w);
    for (int i = 0; i < s->p.n; i++) {
        size_t len = 0;
        char *t = with_echo(s, res[i].text ? res[i].text : "", res[i].len, true, &len);
        if (!t) w.failed = true;
        else write_choice(&w, s, i, t, len, true, res[i].finish, &res[i].lp, s->echo ? s->p.echo_len : 0);
        free(t);
        s->completion_tokens += res[i].completion_tokens;
    }
    json_array_end(&w);
    write_usage(&w, s);
    json_object_end(&w);
    *out = (openai_reply){ .status = 200 };
    if (json_writer_take(&w, &out->body, NULL) != IFN_OK) {
        ifn_error_clear();
        openai_error(out, 500, NULL, "no memory for the response");
    }
}

void oa_job_finish_whole(openai_stream *s, bool (*gone)(void *), void *user, openai_reply *out)
{
    oa_result *res = calloc((size_t)s->p.n, sizeof *res);
    int gone_polls = 0;
    pthread_mutex_lock(&s->mu);
    while (s->n_running > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->cv, &s->mu, &until);
        if (res) collect(s, res);
        if (!gone(user)) continue;
        oa_job_cancel(s);
        /* A cancel ends the choices at the scheduler's next step; a scheduler that no longer
         * steps (the server stopping) must not hold this thread: after a second the choices
         * keep their references and the job outlives this call. */
        if (++gone_polls > 10) break;
    }
    if (res) collect(s, res);
    bool lost = s->lost || !res;
    pthread_mutex_unlock(&s->mu);
    bool shutdown = false;
    for (int i = 0; res && i < s->p.n; i++) shutdown |= res[i].finish != SCHED_STOP && res[i].finish != SCHED_EOS &&
                                                      res[i].finish != SCHED_LENGTH;
    pthread_mutex_lock(&s->mu);
    shutdown |= s->n_running > 0;
    pthread_mutex_unlock(&s->mu);
    if (lost) openai_error(out, 500, NULL, "no memory for the response");
    else if (shutdown) openai_error(out, 503, NULL, "the server stopped before the request finished");
    else write_whole(s, res, out);
    for (int i = 0; res && i < s->p.n; i++) {
        free(res[i].text);
        oa_logprobs_free(&res[i].lp);
    }
    free(res);
    pthread_mutex_lock(&s->mu);
    job_unref_unlock(s);
}

/* ---- server-sent events ---- */

/* Replaces the bytes waiting to be read with the writer's text as one event. */
static bool set_event(openai_stream *s, json_writer *w)
{
    char *json;
    size_t len;
    if (json_writer_take(w, &json, &len) != IFN_OK) {
        ifn_error_clear();
        return false;
    }
    char *out = malloc(len + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, json, len);
        memcpy(out + 6 + len, "\n\n", 3);
        free(s->out);
        s->out = out;
        s->out_len = len + 8;
        s->out_pos = 0;
    }
    free(json);
    return out != NULL;
}

/* The event for one of the scheduler's: a chunk of a choice, or an error. */
static bool format_event(openai_stream *s, const oa_event *e)
{
    json_writer w;
    json_writer_init(&w);
    if (e->finish != SCHED_RUNNING && e->finish != SCHED_STOP && e->finish != SCHED_EOS && e->finish != SCHED_LENGTH) {
        s->failed = true;
        write_error(&w, 503, NULL, "the server stopped before the request finished");
        return set_event(s, &w);
    }
    if (e->finish != SCHED_RUNNING) {
        s->prompt_tokens = e->prompt_tokens;
        s->completion_tokens += e->completion_tokens;
        if (e->session_id[0]) memcpy(s->session_id, e->session_id, sizeof s->session_id);
    }
    const bool first = !s->started[e->index];
    s->started[e->index] = true;
    size_t len = 0;
    char *text = with_echo(s, e->text, e->len, first, &len);
    if (!text) return false;
    json_object_begin(&w);
    write_head(&w, s, s->p.chat ? "chat.completion.chunk" : "text_completion");
    json_key(&w, "choices");
    json_array_begin(&w);
    write_choice(&w, s, e->index, text, len, first, e->finish, &e->lp, s->sent[e->index] + len - e->len);
    s->sent[e->index] += len;
    json_array_end(&w);
    if (e->finish != SCHED_RUNNING && e->session_id[0]) json_kv_string(&w, "session_id", e->session_id);
    json_object_end(&w);
    free(text);
    return set_event(s, &w);
}

/* After the last choice: the usage chunk when asked, then [DONE]. */
static bool format_end(openai_stream *s)
{
    static const char done[] = "data: [DONE]\n\n";
    json_writer w;
    json_writer_init(&w);
    if (s->p.include_usage && !s->failed) {
        json_object_begin(&w);
        write_head(&w, s, s->p.chat ? "chat.completion.chunk" : "text_completion");
        json_key(&w, "choices");
        json_array_begin(&w);
        json_array_end(&w);
        write_usage(&w, s);
        json_object_end(&w);
        if (!set_event(s, &w)) return false;
    }
    if (s->out_pos >= s->out_len) { /* no usage chunk waits before it */
        free(s->out);
        s->out = NULL;
        s->out_len = s->out_pos = 0;
    }
    char *out = realloc(s->out, s->out_len + sizeof done);
    if (!out) return false;
    memcpy(out + s->out_len, done, sizeof done);
    s->out = out;
    s->out_len += sizeof done - 1;
    s->ended = true;
    return true;
}

/* Formats the next event into s->out; 0 if none came within wait, -1 at the end, 1 else. */
static int next_event(openai_stream *s, double wait_seconds)
{
    pthread_mutex_lock(&s->mu);
    if (!s->head && s->n_running > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double end = (double)until.tv_nsec * 1e-9 + wait_seconds;
        until.tv_sec += (time_t)end;
        until.tv_nsec = (long)((end - floor(end)) * 1e9);
        pthread_cond_timedwait(&s->cv, &s->mu, &until);
    }
    oa_event *e = s->head;
    if (e) {
        s->head = e->next;
        if (!s->head) s->tail = NULL;
    }
    const bool running = s->n_running > 0, lost = s->lost;
    pthread_mutex_unlock(&s->mu);
    bool ok = true;
    if (e) {
        ok = format_event(s, e);
        oa_logprobs_free(&e->lp);
        free(e->text);
        free(e);
    } else if (running) {
        return 0;
    } else if (!s->ended) {
        ok = !lost && format_end(s);
    } else {
        return -1;
    }
    if (!ok) { /* out of memory: end the stream where it is rather than send a gap */
        oa_job_cancel(s);
        s->ended = true;
        return -1;
    }
    return 1;
}

ssize_t openai_stream_read(openai_stream *s, char *buf, size_t cap, double wait_seconds)
{
    while (s->out_pos >= s->out_len) {
        int r = next_event(s, wait_seconds);
        if (r <= 0) return r;
    }
    size_t n = s->out_len - s->out_pos < cap ? s->out_len - s->out_pos : cap;
    memcpy(buf, s->out + s->out_pos, n);
    s->out_pos += n;
    return (ssize_t)n;
}

void openai_stream_close(openai_stream *s)
{
    oa_job_cancel(s);
    pthread_mutex_lock(&s->mu);
    job_unref_unlock(s);
}
