#include "metrics_http.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "http_daemon.h"
#include "secret_file.h"

struct metrics_http {
    metrics *m;
    char *bearer;           /* "Bearer <token>"; NULL: no authentication */
    http_daemon *daemon;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, char *body, bool owned)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        if (owned) free(body);
        return MHD_NO;
    }
    const char *type = status == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8";
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* libmicrohttpd's request callback, on its internal thread. URLs arrive without the query. */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)version, (void)upload_data, (void)upload_data_size, (void)req_cls;
    metrics_http *h = cls;
    if (!http_authorized(conn, h->bearer))
        return reply(conn, MHD_HTTP_UNAUTHORIZED, "missing or wrong bearer token (Authorization: Bearer <token>)\n",
                     false);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD are served\n", false);
    if (strcmp(url, "/metrics") != 0) return reply(conn, MHD_HTTP_NOT_FOUND, "not found; metrics are at /metrics\n", false);
    char *text;
    ifn_error_clear();
    if (metrics_render(h->m, &text) != IFN_OK) return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", false);
    return reply(conn, MHD_HTTP_OK, text, true);
}

ifn_status metrics_http_start(metrics *m, const metrics_http_options *o, metrics_http **out)
{
    *out = NULL;
    metrics_http *h = calloc(1, sizeof *h);
    if (!h) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the metrics endpoint");
    h->m = m;
    http_daemon_options d = { .what = "metrics", .host = o->host, .port = o->port, .tls_cert_file = o->tls_cert_file,
                              .tls_key_file = o->tls_key_file, .threading = MHD_USE_AUTO, .handler = handle_request,
                              .handler_cls = h, .idle_timeout = 10 };
    ifn_status st = http_bearer_value(o->auth_token, &h->bearer);
    if (st == IFN_OK) st = http_daemon_start(&d, &h->daemon);
    if (st != IFN_OK) {
        metrics_http_stop(h);
        return st;
    }
    *out = h;
    return IFN_OK;
}

int metrics_http_port(const metrics_http *h) { return http_daemon_port(h->daemon); }

void metrics_http_stop(metrics_http *h)
{
    if (!h) return;
    http_daemon_stop(h->daemon);
    secret_free(h->bearer);
    free(h);
}
