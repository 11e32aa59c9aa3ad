/* The HTTP endpoint of a metrics registry: GET /metrics in the text format (metrics_render),
 * 404 for any other path, on libmicrohttpd's internal thread. It follows the gRPC server's
 * security: the same address by default, HTTPS with the same certificate and key, the same
 * bearer token (401 without it). */
#ifndef IFN_METRICS_HTTP_H
#define IFN_METRICS_HTTP_H

#include "metrics.h"

typedef struct metrics_http metrics_http;

typedef struct {
    const char *host;          /* numeric IPv4/IPv6 address or host name; NULL: 127.0.0.1 */
    int port;                  /* 0 picks a free port (metrics_http_port) */
    const char *tls_cert_file; /* PEM; both or neither: HTTPS, else plain HTTP */
    const char *tls_key_file;
    const char *auth_token;    /* NULL or "": none; else "Authorization: Bearer <token>" needed */
} metrics_http_options;

/* Serves m (which must outlive the endpoint). Fails naming the address, port or file when it
 * cannot bind or read them, or when this libmicrohttpd has no TLS and TLS is asked for. */
ifn_status metrics_http_start(metrics *m, const metrics_http_options *o, metrics_http **out);
/* The port being served. */
int metrics_http_port(const metrics_http *h);
/* Stops serving and frees h (NULL is a no-op). */
void metrics_http_stop(metrics_http *h);

#endif
