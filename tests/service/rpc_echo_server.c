/* A test server over rpc_server and health, driven by test_rpc_server.py.
 *
 * Methods (requests and answers are raw bytes, mostly text):
 *   /test.Echo/Unary      unary: answers the request.
 *   /test.Echo/Stream     streaming: "COUNT DELAY_MS TEXT" -> COUNT messages "TEXT I", one every
 *                         DELAY_MS (0: all at once with the status), sent from the worker thread
 *                         (not the completion-queue thread).
 *   /test.Echo/Hang       unary: "ID [hold]" never answers; the worker notices the cancel and
 *                         logs "hang ID cancel|deadline SECONDS_LEFT_AT_START". With "hold" it
 *                         keeps the cancelled call until the server has shut down, then tries a
 *                         send and finishes it (prints "held ID: send cancelled, finished").
 *   /test.Echo/Events     unary: returns the event log (one line per event) and clears it.
 *   /test.Echo/SetHealth  unary: "1|0 [SERVICE]" -> health_set (no SERVICE: the server, "").
 *   /test.Echo/Grow       unary: "N" -> N bytes of 'x' (to exceed the send limit).
 *   /test.Echo/Chat       bidirectional: each message "TEXT" -> "TEXT!" at once; "finish" ->
 *                         "finished after N" and the status OK (the server ends the stream);
 *                         at the end of the client's stream "end after N" and OK; a stream that
 *                         breaks logs "chat broken after N".
 * plus grpc.health.v1.Health. Prints "port N" when serving; SIGTERM or SIGINT shuts down with
 * --grace seconds and exits 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "health.h"
#include "rpc_server.h"

enum { M_UNARY, M_STREAM, M_HANG, M_EVENTS, M_SET_HEALTH, M_GROW, M_CHAT, N_TEST_METHODS };

typedef struct job {
    struct job *next;
    rpc_call *call;
    bool hang;
    bool hold; /* keep the call once cancelled until the server has shut down */
    int count, sent, delay_ms;
    double next_at;   /* monotonic seconds of the next send */
    double left0;     /* rpc_call_seconds_left at the start */
    char text[64];
} job;

typedef struct {
    health *health;
    pthread_mutex_t mu;
    job *jobs;
    bool stop; /* the worker leaves once no job is left */
    char events[8192];
    size_t events_len;
} echo_state;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void event_log_locked(echo_state *st, const char *line)
{
    int n = snprintf(st->events + st->events_len, sizeof st->events - st->events_len, "%s\n", line);
    if (n > 0 && (size_t)n < sizeof st->events - st->events_len) st->events_len += (size_t)n;
}

static void reply(rpc_call *call, const void *msg, size_t len)
{
    if (rpc_call_send(call, msg, len) == IFN_OK)
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    else
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
}

static void job_add(echo_state *st, job *j)
{
    pthread_mutex_lock(&st->mu);
    j->next = st->jobs;
    st->jobs = j;
    pthread_mutex_unlock(&st->mu);
}

static void on_request(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    echo_state *st = user;
    char text[256];
    size_t n = len < sizeof text - 1 ? len : sizeof text - 1;
    memcpy(text, msg, n);
    text[n] = '\0';

    switch (rpc_call_method(call)) {
    case M_UNARY: reply(call, msg, len); return;
    case M_EVENTS: {
        pthread_mutex_lock(&st->mu);
        char copy[sizeof st->events];
        size_t k = st->events_len;
        memcpy(copy, st->events, k);
        st->events_len = 0;
        pthread_mutex_unlock(&st->mu);
        reply(call, copy, k);
        return;
    }
    case M_SET_HEALTH: {
        char service[200] = "";
        int serving;
        if (sscanf(text, "%d %199s", &serving, service) < 1) {
            rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "want \"0|1 [SERVICE]\"");
            return;
        }
        if (health_set(st->health, service, serving != 0) != IFN_OK) {
            rpc_call_finish(call, GRPC_STATUS_INTERNAL, ifn_error_detail());
            ifn_error_clear();
            return;
        }
        reply(call, "ok", 2);
        return;
    }
    case M_GROW: {
        size_t size = strtoul(text, NULL, 10);
        char *big = malloc(size + 1);
        if (!big) {
            rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory");
            return;
        }
        memset(big, 'x', size);
        reply(call, big, size);
        free(big);
        return;
    }
    default: break;
    }

    job *j = calloc(1, sizeof *j);
    if (!j) {
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory");
        return;
    }
    j->call = call;
    j->left0 = rpc_call_seconds_left(call);
    j->next_at = now_seconds();
    if (rpc_call_method(call) == M_HANG) {
        j->hang = true;
        j->hold = strstr(text, " hold") != NULL;
        sscanf(text, "%63s", j->text);
    } else if (sscanf(text, "%d %d %63s", &j->count, &j->delay_ms, j->text) != 3 || j->count < 0) {
        free(j);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "want \"COUNT DELAY_MS TEXT\"");
        return;
    }
    job_add(st, j);
}

/* The bidirectional method: one call's messages come in order, never two at once, so the
 * count kept as the call's user pointer needs no lock. */
static void on_chat(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    echo_state *st = user;
    int *count = rpc_call_user(call);
    if (!count) {
        count = calloc(1, sizeof *count);
        if (!count) {
            rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory");
            return;
        }
        rpc_call_set_user(call, count);
    }
    char text[300];
    if (!msg && rpc_call_cancelled(call)) {
        snprintf(text, sizeof text, "chat broken after %d", *count);
        pthread_mutex_lock(&st->mu);
        event_log_locked(st, text);
        pthread_mutex_unlock(&st->mu);
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
        free(count);
        return;
    }
    bool finish = !msg || (len == 6 && memcmp(msg, "finish", 6) == 0);
    int n;
    if (finish) {
        n = snprintf(text, sizeof text, "%s after %d", msg ? "finished" : "end", *count);
    } else {
        n = snprintf(text, sizeof text, "%.*s!", (int)(len < 256 ? len : 256), (const char *)msg);
        ++*count;
    }
    bool sent = rpc_call_send(call, (const uint8_t *)text, (size_t)n) == IFN_OK;
    ifn_error_clear();
    if (finish || !sent) {
        rpc_call_finish(call, sent ? GRPC_STATUS_OK : GRPC_STATUS_CANCELLED, NULL);
        free(count);
    }
}

/* One step of a job; true when the job is over (its call finished). */
static bool job_step_locked(echo_state *st, job *j, double now)
{
    char line[160];
    if (rpc_call_cancelled(j->call)) {
        if (j->hold) {
            if (!st->stop) return false; /* the owner holds a cancelled call past rpc_server_shutdown */
            bool refused = rpc_call_send(j->call, (const uint8_t *)"late", 4) == IFN_ERR_CANCELLED;
            ifn_error_clear();
            printf("held %s: send %s, finished\n", j->text, refused ? "cancelled" : "accepted");
            fflush(stdout);
            rpc_call_finish(j->call, GRPC_STATUS_CANCELLED, "cancelled");
            return true;
        }
        if (j->hang)
            snprintf(line, sizeof line, "hang %s %s %.1f", j->text,
                     rpc_call_deadline_passed(j->call) ? "deadline" : "cancel", j->left0);
        else
            snprintf(line, sizeof line, "stream %s cancelled after %d", j->text, j->sent);
        event_log_locked(st, line);
        rpc_call_finish(j->call, GRPC_STATUS_CANCELLED, "cancelled");
        return true;
    }
    if (j->hang || now < j->next_at) return false;
    /* DELAY_MS 0: every message and the status at once, queued behind the send in flight. */
    do {
        if (j->sent == j->count) {
            rpc_call_finish(j->call, GRPC_STATUS_OK, NULL);
            return true;
        }
        int n = snprintf(line, sizeof line, "%s %d", j->text, j->sent);
        ifn_status s = rpc_call_send(j->call, (const uint8_t *)line, (size_t)n);
        if (s == IFN_ERR_CANCELLED) return false; /* logged and finished on the next step */
        if (s != IFN_OK) {
            rpc_call_finish(j->call, GRPC_STATUS_INTERNAL, ifn_error_detail());
            ifn_error_clear();
            return true;
        }
        j->sent++;
    } while (j->delay_ms == 0);
    j->next_at = now + j->delay_ms * 1e-3;
    return false;
}

/* The owner of every kept call, like the coordinator's scheduler: sends and finishes them from
 * a thread that is not the completion-queue thread. */
static void *worker_main(void *arg)
{
    echo_state *st = arg;
    for (;;) {
        pthread_mutex_lock(&st->mu);
        double now = now_seconds();
        for (job **p = &st->jobs; *p;) {
            job *j = *p;
            if (job_step_locked(st, j, now)) {
                *p = j->next;
                free(j);
            } else {
                p = &j->next;
            }
        }
        bool done = st->stop && !st->jobs;
        pthread_mutex_unlock(&st->mu);
        if (done) return NULL;
        nanosleep(&(struct timespec){ .tv_nsec = 2000000 }, NULL);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: rpc_echo_server [--addr HOST:PORT] [--token T] [--tls-cert PEM --tls-key PEM]\n"
                    "                       [--max-bytes N] [--grace SECONDS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    rpc_server_options opts = { .addr = "127.0.0.1:0" };
    double grace = 5.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (strcmp(a, "--addr") == 0) opts.addr = v;
        else if (strcmp(a, "--token") == 0) opts.auth_token = v;
        else if (strcmp(a, "--tls-cert") == 0) opts.tls_cert_file = v;
        else if (strcmp(a, "--tls-key") == 0) opts.tls_key_file = v;
        else if (strcmp(a, "--max-bytes") == 0) opts.max_message_bytes = atoi(v);
        else if (strcmp(a, "--grace") == 0) grace = atof(v);
        else return usage();
        i++;
    }

    /* Signals are taken by sigwait in main; every thread started later inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    echo_state st = { 0 };
    pthread_mutex_init(&st.mu, NULL);
    if (health_create(&st.health) != IFN_OK) {
        fprintf(stderr, "rpc_echo_server: %s\n", ifn_error_detail());
        return 1;
    }
    static const char *paths[N_TEST_METHODS] = { "/test.Echo/Unary", "/test.Echo/Stream", "/test.Echo/Hang",
                                                 "/test.Echo/Events", "/test.Echo/SetHealth", "/test.Echo/Grow",
                                                 "/test.Echo/Chat" };
    rpc_method methods[N_TEST_METHODS + 2];
    for (int m = 0; m < N_TEST_METHODS; m++)
        methods[m] = (rpc_method){ .path = paths[m], .kind = RPC_UNARY, .handler = on_request, .user = &st };
    methods[M_STREAM].kind = RPC_SERVER_STREAMING;
    methods[M_CHAT] = (rpc_method){ .path = paths[M_CHAT], .kind = RPC_BIDI_STREAMING, .handler = on_chat, .user = &st };
    health_methods(st.health, &methods[N_TEST_METHODS]);

    rpc_server *server;
    if (rpc_server_create(&opts, methods, N_TEST_METHODS + 2, &server) != IFN_OK) {
        fprintf(stderr, "rpc_echo_server: %s\n", ifn_error_detail());
        health_destroy(st.health);
        return 1;
    }
    pthread_t worker;
    if (pthread_create(&worker, NULL, worker_main, &st) != 0) {
        fprintf(stderr, "rpc_echo_server: cannot start the worker thread\n");
        return 1;
    }
    if (rpc_server_start(server) != IFN_OK) {
        fprintf(stderr, "rpc_echo_server: %s\n", ifn_error_detail());
        return 1;
    }
    printf("port %d\n", rpc_server_port(server));
    fflush(stdout);

    int sig;
    sigwait(&stop_signals, &sig);
    printf("shutting down\n");
    fflush(stdout);
    health_shutdown(st.health);
    rpc_server_shutdown(server, grace);
    pthread_mutex_lock(&st.mu);
    st.stop = true;
    pthread_mutex_unlock(&st.mu);
    pthread_join(worker, NULL);
    rpc_server_destroy(server);
    health_destroy(st.health);
    pthread_mutex_destroy(&st.mu);
    printf("stopped\n");
    return 0;
}
