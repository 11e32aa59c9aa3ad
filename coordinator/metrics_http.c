#include "metrics_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "secret_file.h"

struct metrics_http {
    metrics *m;
    char *auth_value;       /* "Bearer <token>"; NULL: no authentication */
    pthread_mutex_t log_mu; /* guards mhd_log */
    char mhd_log[256];      /* libmicrohttpd's last message */
    struct MHD_Daemon *daemon;
    int port;
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

/* Compares in time that does not depend on where the strings differ. */
static bool secret_equals(const char *given, const char *secret)
{
    size_t n = strlen(secret);
    if (!given || strlen(given) != n) return false;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++) diff |= (uint8_t)(given[i] ^ secret[i]);
    return diff == 0;
}

/* libmicrohttpd's request callback, on its internal thread. URLs arrive without the query. */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)version, (void)upload_data, (void)upload_data_size, (void)req_cls;
    metrics_http *h = cls;
    if (h->auth_value &&
        !secret_equals(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), h->auth_value))
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

/* libmicrohttpd's error log: keep the last message so that metrics_http_start can report why
 * the daemon did not start. */
static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    metrics_http *h = cls;
    pthread_mutex_lock(&h->log_mu);
    vsnprintf(h->mhd_log, sizeof h->mhd_log, fmt, ap);
    h->mhd_log[strcspn(h->mhd_log, "\r\n")] = '\0';
    pthread_mutex_unlock(&h->log_mu);
}

static ifn_status check_options(const metrics_http_options *o, const char *where)
{
    if (o->port < 0 || o->port > 65535)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: port %d is out of range (0-65535)", o->port);
    bool cert = o->tls_cert_file && o->tls_cert_file[0], key = o->tls_key_file && o->tls_key_file[0];
    if (cert != key)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics on %s: TLS needs both a certificate and a key file", where);
    if (cert && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics on %s: this libmicrohttpd was built without TLS", where);
    return IFN_OK;
}

/* Starts the daemon on addr with TLS when cert and key are given. */
static ifn_status start_daemon(metrics_http *h, const struct addrinfo *addr, int port, const char *cert,
                               const char *key, const char *where)
{
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (addr->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (cert) flags |= MHD_USE_TLS;
    errno = 0;
    struct MHD_Daemon *d =
        cert ? MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle_request, h, MHD_OPTION_EXTERNAL_LOGGER, log_mhd,
                                h, MHD_OPTION_SOCK_ADDR, addr->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END)
             : MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle_request, h, MHD_OPTION_EXTERNAL_LOGGER, log_mhd,
                                h, MHD_OPTION_SOCK_ADDR, addr->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                MHD_OPTION_END);
    int err = errno;
    if (!d) {
        pthread_mutex_lock(&h->log_mu);
        char why[sizeof h->mhd_log];
        snprintf(why, sizeof why, "%s", h->mhd_log[0] ? h->mhd_log : err ? strerror(err) : "libmicrohttpd did not start");
        pthread_mutex_unlock(&h->log_mu);
        return ifn_error_set(IFN_ERR_IO, "metrics: cannot serve HTTP%s on %s: %s", cert ? "S" : "", where, why);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0) {
        MHD_stop_daemon(d);
        return ifn_error_set(IFN_ERR_INTERNAL, "metrics: libmicrohttpd did not say which port it bound for %s", where);
    }
    h->daemon = d;
    h->port = info->port;
    return IFN_OK;
}

/* Reads the TLS files (when given), resolves the address and starts the daemon. */
static ifn_status serve(metrics_http *h, const metrics_http_options *o, const char *host, const char *where)
{
    char *cert = NULL, *key = NULL;
    bool tls = o->tls_cert_file && o->tls_cert_file[0];
    if (tls) {
        CHECK(secret_file_read_pem("certificate", o->tls_cert_file, &cert));
        ifn_status st = secret_file_read_pem("key", o->tls_key_file, &key);
        if (st != IFN_OK) {
            free(cert);
            return st;
        }
    }
    char service[8];
    snprintf(service, sizeof service, "%d", o->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    int gai = getaddrinfo(host, service, &hints, &res);
    ifn_status st = gai == 0 ? start_daemon(h, res, o->port, cert, key, where)
                             : ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: cannot serve on %s: %s", where, gai_strerror(gai));
    if (gai == 0) freeaddrinfo(res);
    free(cert);
    secret_free(key);
    return st;
}

ifn_status metrics_http_start(metrics *m, const metrics_http_options *o, metrics_http **out)
{
    *out = NULL;
    const char *host = o->host && o->host[0] ? o->host : "127.0.0.1";
    char where[320];
    const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
    snprintf(where, sizeof where, "%s%s%s:%d", lb, host, rb, o->port);
    CHECK(check_options(o, where));
    metrics_http *h = calloc(1, sizeof *h);
    if (!h) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the metrics endpoint");
    h->m = m;
    pthread_mutex_init(&h->log_mu, NULL);
    ifn_status st = IFN_OK;
    if (o->auth_token && o->auth_token[0]) {
        size_t n = strlen("Bearer ") + strlen(o->auth_token) + 1;
        h->auth_value = malloc(n);
        if (h->auth_value) snprintf(h->auth_value, n, "Bearer %s", o->auth_token);
        else st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the metrics endpoint");
    }
    if (st == IFN_OK) st = serve(h, o, host, where);
    if (st != IFN_OK) {
        metrics_http_stop(h);
        return st;
    }
    *out = h;
    return IFN_OK;
}

int metrics_http_port(const metrics_http *h) { return h->port; }

void metrics_http_stop(metrics_http *h)
{
    if (!h) return;
    if (h->daemon) MHD_stop_daemon(h->daemon);
    secret_free(h->auth_value);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
}
