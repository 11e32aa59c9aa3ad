/* The OpenAI-compatible HTTP API (libmicrohttpd), a second front on the scheduler beside gRPC:
 *
 *   POST /v1/completions, POST /v1/chat/completions   (http_openai.h; "stream": server-sent events)
 *   GET  /v1/models
 *   GET  /health                                      200 while serving, else 503; no token needed
 *
 * It follows the gRPC server's security: the same address, HTTPS with the same certificate and
 * key, the same bearer token (401 without it). Request bodies above max_body_bytes get 413.
 * Errors are OpenAI's JSON shape with the status saying what kind: 400 (the field named), 401,
 * 404, 405, 409 (a session busy), 413, 429 (the queue is full), 503 (loading, draining). Every
 * response is counted in infernode_http_requests_total{status}.
 *
 * One thread per connection (libmicrohttpd's): tokenizing, validation and waiting for a result
 * happen there, never on the scheduler's thread or a thread other calls wait on. Before
 * http_api_ready every generating call answers 503 "loading". */
#ifndef IFN_HTTP_API_H
#define IFN_HTTP_API_H

#include <stddef.h>

#include "engine.h"
#include "metrics.h"
#include "scheduler.h"
#include "service.h"
#include "tokenizer.h"

typedef struct http_api http_api;

typedef struct {
    const char *host;          /* numeric IPv4/IPv6 address or host name; NULL: 127.0.0.1 */
    int port;                  /* 0 picks a free port (http_api_port) */
    const char *tls_cert_file; /* PEM; both or neither: HTTPS, else plain HTTP */
    const char *tls_key_file;
    const char *auth_token;    /* NULL or "": none; else "Authorization: Bearer <token>" needed */
    size_t max_body_bytes;     /* larger request bodies get 413 */
    int max_connections;       /* connections (threads) at once; 0: 256 */
    metrics *met;              /* NULL: no metrics */
} http_api_options;

/* Listens (health 503, generation 503 "loading"). Fails naming the address, port or file when
 * it cannot bind or read them, or when this libmicrohttpd has no TLS and TLS is asked for. */
ifn_status http_api_start(const http_api_options *o, http_api **out);
int http_api_port(const http_api *h);
/* From here on requests are served (the arguments as for service_ready, which must outlive
 * the API). Fails only when the model's chat template cannot be read. */
ifn_status http_api_ready(http_api *h, const engine *e, const tokenizer *tok, scheduler *sch, const service_kv *kv,
                          const service_spec *spec);
/* New generating calls get 503; the streams in flight run to their end. */
void http_api_drain(http_api *h);
/* Ends the streams still open, stops serving and frees h (NULL is a no-op). Call before the
 * scheduler is destroyed. */
void http_api_stop(http_api *h);

#endif
