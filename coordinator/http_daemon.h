/* What the two HTTP servers (/metrics, metrics_http.c, and the OpenAI API, http_api.c) share:
 * a libmicrohttpd daemon on a host and port, HTTPS from the gRPC port's PEM files, a start-up
 * failure that says why (libmicrohttpd's own last message), and the bearer-token check. */
#ifndef IFN_HTTP_DAEMON_H
#define IFN_HTTP_DAEMON_H

#include <stdbool.h>

#include <microhttpd.h>

#include "status.h"

typedef struct http_daemon http_daemon;

typedef struct {
    const char *what;             /* the server's name in messages: "metrics", "http" */
    const char *host;             /* numeric IPv4/IPv6 address or host name; NULL or "": 127.0.0.1 */
    int port;                     /* 0 picks a free port (http_daemon_port) */
    const char *tls_cert_file;    /* PEM; both or neither: HTTPS, else plain HTTP */
    const char *tls_key_file;
    unsigned int threading;       /* MHD_USE_* threading flags (MHD_USE_AUTO or a thread per connection) */
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed; /* NULL: none */
    void *completed_cls;
    unsigned int connection_limit; /* 0: libmicrohttpd's */
    unsigned int idle_timeout;     /* seconds an idle connection is kept */
} http_daemon_options;

/* Serves until http_daemon_stop. Fails naming the server, the address and port or the file
 * when it cannot bind or read them, or when this libmicrohttpd has no TLS and TLS is asked for. */
ifn_status http_daemon_start(const http_daemon_options *o, http_daemon **out);
/* The port being served. */
int http_daemon_port(const http_daemon *d);
/* Stops serving (waiting for the handlers running) and frees d. NULL is a no-op. */
void http_daemon_stop(http_daemon *d);

/* "Bearer <token>" (malloc'd; secret_free), NULL in *out when token is NULL or "". */
ifn_status http_bearer_value(const char *token, char **out);
/* True when bearer is NULL or the request's Authorization header equals it; compared in time
 * that does not depend on where they differ. */
bool http_authorized(struct MHD_Connection *conn, const char *bearer);

#endif
