/* Serves a metrics registry that several threads update, for test_metrics_http.py.
 *
 * usage: metrics_server THREADS ITERATIONS
 * Prints "port N" once serving on 127.0.0.1 (port 0 = a free one), then starts THREADS
 * threads that each run ITERATIONS rounds of updates (the pattern below; the test recomputes
 * what they must add up to), prints "done" when they have all finished, and exits when its
 * standard input closes. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics.h"
#include "metrics_http.h"

/* Keep in step with test_metrics_http.py. */
static const char *const CODES[] = { "OK", "INVALID_ARGUMENT", "quote \" backslash \\ newline \n end", "unicode \xc3\xa9\xe2\x9c\x93" };
#define N_CODES 4
static const double BOUNDS[] = { 0.005, 0.01, 0.1, 1, 10 };
static const double OBSERVED[] = { 0.001, 0.005, 0.0075, 0.01, 0.05, 0.5, 1, 5, 10, 50 };
#define N_OBSERVED 10

typedef struct {
    metrics *m;
    int requests, tokens, depth, latency;
    int thread, iterations;
    ifn_status st;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    ifn_status st = IFN_OK;
    for (int i = 0; i < w->iterations && st == IFN_OK; i++) {
        st = metrics_add(w->m, w->requests, CODES[(w->thread + i) % N_CODES], 1);
        if (st == IFN_OK) st = metrics_add(w->m, w->tokens, NULL, 0.5);
        if (st == IFN_OK) st = metrics_observe(w->m, w->latency, OBSERVED[(7 * w->thread + i) % N_OBSERVED]);
        if (st == IFN_OK) st = metrics_add(w->m, w->depth, NULL, 1);
        if (st == IFN_OK) st = metrics_add(w->m, w->depth, NULL, -1);
    }
    if (st != IFN_OK) fprintf(stderr, "metrics_server: thread %d: %s\n", w->thread, ifn_error_detail());
    w->st = st;
    return NULL;
}

static int fail(const char *what)
{
    fprintf(stderr, "metrics_server: %s: %s\n", what, ifn_error_detail());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: metrics_server THREADS ITERATIONS\n");
        return 2;
    }
    int n_threads = atoi(argv[1]), iterations = atoi(argv[2]);
    if (n_threads < 1 || n_threads > 64 || iterations < 0) {
        fprintf(stderr, "metrics_server: THREADS must be 1..64 and ITERATIONS >= 0\n");
        return 2;
    }

    metrics *m;
    metrics_http *http = NULL;
    if (metrics_create(&m) != IFN_OK) return fail("create");
    worker proto = { .m = m, .iterations = iterations };
    int rc = 1;
    if (metrics_counter(m, "ifn_requests_total", "Finished requests by gRPC status code.", "code", &proto.requests) != IFN_OK ||
        metrics_counter(m, "ifn_generated_tokens_total", "Tokens generated.", NULL, &proto.tokens) != IFN_OK ||
        metrics_gauge(m, "ifn_queue_depth", "Requests waiting.\nA second line with a \\ backslash.", &proto.depth) != IFN_OK ||
        metrics_histogram(m, "ifn_request_seconds", "Request latency.", BOUNDS, 5, &proto.latency) != IFN_OK) {
        rc = fail("register");
        goto done;
    }
    if (metrics_http_start(m, &(metrics_http_options){ .host = "127.0.0.1" }, &http) != IFN_OK) {
        rc = fail("serve");
        goto done;
    }
    printf("port %d\n", metrics_http_port(http));
    fflush(stdout);

    worker workers[64];
    pthread_t threads[64];
    int started = 0;
    for (; started < n_threads; started++) {
        workers[started] = proto;
        workers[started].thread = started;
        if (pthread_create(&threads[started], NULL, work, &workers[started]) != 0) break;
    }
    bool ok = started == n_threads;
    for (int t = 0; t < started; t++) {
        pthread_join(threads[t], NULL);
        ok = ok && workers[t].st == IFN_OK;
    }
    if (!ok || metrics_set(m, proto.depth, 42) != IFN_OK) {
        fprintf(stderr, "metrics_server: the updates failed\n");
        goto done;
    }
    printf("done\n");
    fflush(stdout);
    while (getchar() != EOF) continue;
    rc = 0;
done:
    metrics_http_stop(http);
    metrics_destroy(m);
    return rc;
}
