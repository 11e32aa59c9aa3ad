#include "http_daemon.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "secret_file.h"

struct http_daemon {
    pthread_mutex_t log_mu; /* guards mhd_log */
    char mhd_log[256];      /* libmicrohttpd's last message */
    struct MHD_Daemon *daemon;
    int port;
};

/* libmicrohttpd's error log: keep the last message so that a failed start can say why. */
static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    http_daemon *d = cls;
    pthread_mutex_lock(&d->log_mu);
    vsnprintf(d->mhd_log, sizeof d->mhd_log, fmt, ap);
    d->mhd_log[strcspn(d->mhd_log, "\r\n")] = '\0';
    pthread_mutex_unlock(&d->log_mu);
}

static ifn_status check_options(const http_daemon_options *o, const char *where)
{
    if (o->port < 0 || o->port > 65535)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: port %d is out of range (0-65535)", o->what, o->port);
    bool cert = o->tls_cert_file && o->tls_cert_file[0], key = o->tls_key_file && o->tls_key_file[0];
    if (cert != key)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s on %s: TLS needs both a certificate and a key file", o->what,
                             where);
    if (cert && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s on %s: this libmicrohttpd was built without TLS", o->what, where);
    return IFN_OK;
}

/* Starts the daemon on addr, with TLS when cert and key are given. */
static ifn_status start_on(http_daemon *d, const http_daemon_options *o, const struct addrinfo *addr, const char *cert,
                           const char *key, const char *where)
{
    unsigned int flags = o->threading | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (addr->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (cert) flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[] = {
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)log_mhd, d },
        { MHD_OPTION_SOCK_ADDR, 0, addr->ai_addr },
        { MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout, NULL },
        { o->connection_limit ? MHD_OPTION_CONNECTION_LIMIT : MHD_OPTION_END, o->connection_limit, NULL },
        { o->completed ? MHD_OPTION_NOTIFY_COMPLETED : MHD_OPTION_END, (intptr_t)o->completed, o->completed_cls },
        { cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)cert },
        { cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *)key },
        { MHD_OPTION_END, 0, NULL },
    };
    /* An MHD_OPTION_END inside the array would end it early: squeeze the unused ones out. */
    size_t n = 0;
    for (size_t i = 0; i + 1 < sizeof opts / sizeof *opts; i++)
        if (opts[i].option != MHD_OPTION_END) opts[n++] = opts[i];
    opts[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
    errno = 0;
    d->daemon = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, o->handler, o->handler_cls, MHD_OPTION_ARRAY,
                                 opts, MHD_OPTION_END);
    int err = errno;
    if (!d->daemon) {
        pthread_mutex_lock(&d->log_mu);
        char why[sizeof d->mhd_log];
        snprintf(why, sizeof why, "%s", d->mhd_log[0] ? d->mhd_log : err ? strerror(err) : "libmicrohttpd did not start");
        pthread_mutex_unlock(&d->log_mu);
        return ifn_error_set(IFN_ERR_IO, "%s: cannot serve HTTP%s on %s: %s", o->what, cert ? "S" : "", where, why);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0)
        return ifn_error_set(IFN_ERR_INTERNAL, "%s: libmicrohttpd did not say which port it bound for %s", o->what, where);
    d->port = info->port;
    return IFN_OK;
}

/* Reads the TLS files (when given), resolves the address and starts the daemon. */
static ifn_status serve(http_daemon *d, const http_daemon_options *o, const char *host, const char *where)
{
    char *cert = NULL, *key = NULL;
    if (o->tls_cert_file && o->tls_cert_file[0]) {
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
    ifn_status st = gai == 0 ? start_on(d, o, res, cert, key, where)
                             : ifn_error_set(IFN_ERR_INVALID_ARG, "%s: cannot serve on %s: %s", o->what, where,
                                             gai_strerror(gai));
    if (gai == 0) freeaddrinfo(res);
    free(cert);
    secret_free(key);
    return st;
}

ifn_status http_daemon_start(const http_daemon_options *o, http_daemon **out)
{
    *out = NULL;
    const char *host = o->host && o->host[0] ? o->host : "127.0.0.1";
    char where[320];
    const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
    snprintf(where, sizeof where, "%s%s%s:%d", lb, host, rb, o->port);
    CHECK(check_options(o, where));
    http_daemon *d = calloc(1, sizeof *d);
    if (!d) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the %s server", o->what);
    pthread_mutex_init(&d->log_mu, NULL);
    ifn_status st = serve(d, o, host, where);
    if (st != IFN_OK) {
        http_daemon_stop(d);
        return st;
    }
    *out = d;
    return IFN_OK;
}

int http_daemon_port(const http_daemon *d) { return d->port; }

void http_daemon_stop(http_daemon *d)
{
    if (!d) return;
    if (d->daemon) MHD_stop_daemon(d->daemon);
    pthread_mutex_destroy(&d->log_mu);
    free(d);
}

ifn_status http_bearer_value(const char *token, char **out)
{
    *out = NULL;
    if (!token || !token[0]) return IFN_OK;
    size_t n = strlen("Bearer ") + strlen(token) + 1;
    *out = malloc(n);
    if (!*out) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the bearer token");
    snprintf(*out, n, "Bearer %s", token);
    return IFN_OK;
}

bool http_authorized(struct MHD_Connection *conn, const char *bearer)
{
    if (!bearer) return true;
    const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    size_t n = strlen(bearer);
    if (!given || strlen(given) != n) return false;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++) diff |= (uint8_t)(given[i] ^ bearer[i]);
    return diff == 0;
}
