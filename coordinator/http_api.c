#define _GNU_SOURCE /* POLLRDHUP: a client that closed its side */

#include "http_api.h"

#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_daemon.h"
#include "http_openai.h"
#include "secret_file.h"

#define DEFAULT_MAX_CONNECTIONS 256
#define IDLE_TIMEOUT_SECONDS 60u /* an idle keep-alive connection; a waiting request is not idle */
#define POLL_SECONDS 0.1         /* how often a waiting request looks for its client leaving */

typedef enum { STATE_LOADING, STATE_SERVING, STATE_DRAINING } api_state;

struct http_api {
    _Atomic int state;
    _Atomic bool stopping;
    openai_api *api;        /* set before the state turns SERVING */
    metrics *met;
    int responses;          /* metric id: responses by status */
    char *bearer;           /* "Bearer <token>"; NULL: no authentication */
    size_t max_body;
    http_daemon *daemon;
};

/* One request on a connection: its body as it arrives. */
typedef struct {
    http_api *h;
    int fd;
    char *body;
    size_t len, cap;
    bool too_big, no_memory;
} http_req;

/* A streamed response being read by libmicrohttpd. */
typedef struct {
    http_api *h;
    int fd;
    openai_stream *s;
} stream_reader;

static void count(http_api *h, unsigned status)
{
    if (!h->met) return;
    char label[8];
    snprintf(label, sizeof label, "%u", status);
    metrics_add(h->met, h->responses, label, 1);
}

/* True when the client closed its side (or the connection broke), or the server is stopping. */
static bool client_gone(void *user)
{
    const http_req *r = user;
    if (atomic_load(&r->h->stopping)) return true;
    struct pollfd p = { .fd = r->fd, .events = POLLRDHUP };
    return r->fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_reader *sr = cls;
    http_req gone = { .h = sr->h, .fd = sr->fd };
    for (;;) {
        ssize_t n = openai_stream_read(sr->s, buf, max, POLL_SECONDS);
        if (n > 0) return n;
        if (n < 0) return MHD_CONTENT_READER_END_OF_STREAM;
        if (client_gone(&gone)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void free_stream(void *cls)
{
    stream_reader *sr = cls;
    openai_stream_close(sr->s);
    free(sr);
}

/* Queues r (its body or stream now belongs to libmicrohttpd) and counts it. */
static enum MHD_Result send_reply(http_api *h, struct MHD_Connection *conn, const http_req *req, openai_reply *r,
                                  const char *allow)
{
    struct MHD_Response *resp = NULL;
    if (r->stream) {
        stream_reader *sr = malloc(sizeof *sr);
        if (sr) *sr = (stream_reader){ h, req->fd, r->stream };
        resp = sr ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, read_stream, sr, free_stream) : NULL;
        if (!resp) {
            if (sr) free(sr);
            openai_stream_close(r->stream);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    } else {
        resp = r->body ? MHD_create_response_from_buffer(strlen(r->body), r->body, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!resp) {
            free(r->body);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        if (r->status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    count(h, r->status);
    enum MHD_Result ret = MHD_queue_response(conn, r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_error(http_api *h, struct MHD_Connection *conn, const http_req *req, unsigned status,
                                  const char *allow, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error(http_api *h, struct MHD_Connection *conn, const http_req *req, unsigned status,
                                  const char *allow, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    openai_reply r;
    openai_error(&r, status, NULL, "%s", msg);
    return send_reply(h, conn, req, &r, allow);
}

/* The routes: which methods a path takes. */
static const char *allowed_methods(const char *url)
{
    if (strcmp(url, "/health") == 0 || strcmp(url, "/v1/models") == 0) return "GET, HEAD";
    if (strcmp(url, "/v1/completions") == 0 || strcmp(url, "/v1/chat/completions") == 0) return "POST";
    return NULL;
}

static enum MHD_Result route(http_api *h, struct MHD_Connection *conn, const char *url, const char *method,
                             http_req *req)
{
    const char *allow = allowed_methods(url);
    const int state = atomic_load_explicit(&h->state, memory_order_acquire);
    const bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (allow && strcmp(url, "/health") == 0) { /* public, as gRPC health is */
        if (!get) return send_error(h, conn, req, MHD_HTTP_METHOD_NOT_ALLOWED, allow, "%s: only GET and HEAD", url);
        if (state != STATE_SERVING)
            return send_error(h, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "%s",
                              state == STATE_LOADING ? "the model is still loading" : "the server is shutting down");
        openai_reply ok = { .status = MHD_HTTP_OK, .body = strdup("{\"status\":\"ok\"}") };
        return send_reply(h, conn, req, &ok, NULL);
    }
    if (!http_authorized(conn, h->bearer))
        return send_error(h, conn, req, MHD_HTTP_UNAUTHORIZED, NULL,
                          "missing or wrong bearer token (Authorization: Bearer <token>)");
    if (!allow)
        return send_error(h, conn, req, MHD_HTTP_NOT_FOUND, NULL, "%s: no such path (the API serves /v1/completions, "
                          "/v1/chat/completions, /v1/models and /health)", url);
    const bool post = strcmp(allow, "POST") == 0;
    if (post ? strcmp(method, MHD_HTTP_METHOD_POST) != 0 : !get)
        return send_error(h, conn, req, MHD_HTTP_METHOD_NOT_ALLOWED, allow, "%s: only %s", url, allow);
    if (state == STATE_LOADING || (state == STATE_DRAINING && post))
        return send_error(h, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "%s",
                          state == STATE_LOADING ? "the model is still loading" : "the server is shutting down");
    openai_reply r;
    if (!post) {
        openai_models(h->api, &r);
        return send_reply(h, conn, req, &r, NULL);
    }
    if (req->too_big)
        return send_error(h, conn, req, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "request body: larger than %zu bytes",
                          h->max_body);
    if (req->no_memory)
        return send_error(h, conn, req, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "no memory for the request body");
    openai_complete(h->api, req->body ? req->body : "", req->len, strcmp(url, "/v1/chat/completions") == 0,
                    client_gone, req, &r);
    return send_reply(h, conn, req, &r, NULL);
}

/* Keeps the body's bytes, up to the limit (beyond it they are read and dropped: the answer is
 * 413 either way). */
static void take_body(http_api *h, http_req *req, const char *data, size_t n)
{
    if (req->too_big || req->no_memory) return;
    if (req->len + n > h->max_body) {
        req->too_big = true;
        return;
    }
    if (req->len + n + 1 > req->cap) {
        size_t cap = req->cap ? req->cap : 4096;
        while (cap < req->len + n + 1) cap *= 2;
        char *b = realloc(req->body, cap);
        if (!b) {
            req->no_memory = true;
            return;
        }
        req->body = b;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, n);
    req->len += n;
    req->body[req->len] = '\0';
}

/* libmicrohttpd's request callback, on the connection's thread: first call, body pieces, then
 * the request whole. URLs arrive without the query. */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)version;
    http_api *h = cls;
    http_req *req = *req_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req) return MHD_NO;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *req = (http_req){ .h = h, .fd = ci ? ci->connect_fd : -1 };
        *req_cls = req;
        const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > h->max_body) req->too_big = true;
        return MHD_YES;
    }
    if (*upload_data_size) {
        take_body(h, req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    return route(h, conn, url, method, req);
}

static void request_done(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)conn, (void)why;
    http_req *req = *req_cls;
    if (!req) return;
    free(req->body);
    free(req);
    *req_cls = NULL;
}

ifn_status http_api_start(const http_api_options *o, http_api **out)
{
    *out = NULL;
    http_api *h = calloc(1, sizeof *h);
    if (!h) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the HTTP API");
    atomic_init(&h->state, STATE_LOADING);
    atomic_init(&h->stopping, false);
    h->met = o->met;
    h->max_body = o->max_body_bytes;
    ifn_status st = h->met ? metrics_counter(h->met, "infernode_http_requests_total", "HTTP API responses, by status",
                                             "status", &h->responses)
                           : IFN_OK;
    http_daemon_options d = {
        .what = "http", .host = o->host, .port = o->port, .tls_cert_file = o->tls_cert_file,
        .tls_key_file = o->tls_key_file, .threading = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL,
        .handler = handle_request, .handler_cls = h, .completed = request_done, .completed_cls = h,
        .connection_limit = o->max_connections > 0 ? (unsigned)o->max_connections : DEFAULT_MAX_CONNECTIONS,
        .idle_timeout = IDLE_TIMEOUT_SECONDS,
    };
    if (st == IFN_OK) st = http_bearer_value(o->auth_token, &h->bearer);
    if (st == IFN_OK) st = http_daemon_start(&d, &h->daemon);
    if (st != IFN_OK) {
        http_api_stop(h);
        return st;
    }
    *out = h;
    return IFN_OK;
}

int http_api_port(const http_api *h) { return http_daemon_port(h->daemon); }

ifn_status http_api_ready(http_api *h, const engine *e, const tokenizer *tok, scheduler *sch, const service_kv *kv,
                          const service_spec *spec)
{
    CHECK(openai_api_create(e, tok, sch, kv, spec, &h->api));
    atomic_store_explicit(&h->state, STATE_SERVING, memory_order_release);
    return IFN_OK;
}

void http_api_drain(http_api *h)
{
    if (h) atomic_store_explicit(&h->state, STATE_DRAINING, memory_order_release);
}

void http_api_stop(http_api *h)
{
    if (!h) return;
    atomic_store(&h->stopping, true); /* waiting requests and streams end within POLL_SECONDS */
    http_daemon_stop(h->daemon);
    openai_api_destroy(h->api);
    secret_free(h->bearer);
    free(h);
}
