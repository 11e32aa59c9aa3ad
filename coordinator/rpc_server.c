/* The gRPC server over the C core's completion-queue API.
 *
 * Notes on a call's life (one rpc_call object from request to free):
 *  - Request: every method keeps one pending request (grpc_server_request_registered_call,
 *    payload read with the call); paths no method names have one grpc_server_request_call.
 *    The tag is the pending call object itself (accept_tag); when it completes, a fresh object
 *    re-arms the request before the accepted call is handled.
 *  - Accept: one batch {RECV_CLOSE_ON_SERVER} (close_tag). It completes only when the call is
 *    over on the wire: cancelled (client, deadline, transport, server) or status sent. After
 *    that no batch starts.
 *  - Sends: a FIFO of messages and at most one SEND batch in flight (send_tag). The first
 *    batch carries SEND_INITIAL_METADATA, the last message travels with the status. A unary
 *    call holds its one message until finish, so it answers in one batch. Senders on other
 *    threads start batches directly (grpc_call_start_batch is thread-safe) under the call's
 *    mutex; a completion on the queue thread starts the next queued batch.
 *  - Receives (RPC_BIDI_STREAMING only; its method is registered without the payload): one
 *    RECV_MESSAGE batch at a time (recv_tag), started at accept and again once the handler
 *    has had the message, so the handler sees messages in order, one at a time; the end of
 *    the stream (or a failed receive, which marks the call cancelled) goes to it as msg NULL.
 *    `reading` holds the object and its grpc_call from the first receive until then.
 *  - Release: the grpc_call is unreferenced as soon as the close completed and no send is in
 *    flight, without waiting for the owner: the server's shutdown tag waits for every
 *    grpc_call, and an owner may hold a cancelled call past rpc_server_shutdown. The object
 *    itself is freed when, in addition, the owner has finished it.
 *  - Shutdown: the grace period waits for the server's active calls (pending requests and
 *    grpc_calls not yet released) to drop to zero, not for the shutdown tag: that one also
 *    waits for idle client connections to close, which a client may keep open for seconds.
 *    Then grpc_server_cancel_all_calls disconnects every client and the tag follows. */
#include "rpc_server.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "secret_file.h"
#include "work_pool.h"

typedef enum { TAG_ACCEPT, TAG_CLOSE, TAG_SEND, TAG_RECV, TAG_SHUTDOWN } tag_kind;

/* What a completion-queue tag points at: a member of the per-call object (or the server's
 * shutdown tag, call == NULL). */
typedef struct {
    tag_kind kind;
    rpc_call *call;
} call_tag;

typedef struct queued_msg {
    struct queued_msg *next;
    grpc_byte_buffer *bb;
} queued_msg;

typedef struct {
    char *path;
    rpc_kind kind;
    bool is_public;
    bool on_cq_thread;
    rpc_handler handler;
    void *user;
    void *registered; /* grpc_server_register_method's handle */
} server_method;

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    server_method *methods; /* [n_methods] */
    int n_methods;
    char *auth_value; /* "Bearer <token>"; NULL: no authentication */
    void (*on_status)(void *user, grpc_status_code code);
    void *status_user;
    size_t max_receive; /* bytes of a request message */
    work_pool *handlers; /* runs the handlers of methods not on_cq_thread */
    int port;
    bool started, shut_down;
    pthread_t thread;
    atomic_bool stopping;   /* shutdown began: pending requests are not re-armed */
    atomic_bool cancelling; /* the grace ended: every call reports cancelled */
    call_tag shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* signalled when shutdown_done turns true or active drops to 0 */
    bool shutdown_done;     /* the shutdown tag completed */
    int active;             /* armed requests + accepted calls whose grpc_call is held */
    rpc_call *owned_calls;  /* accepted calls not yet finished by their owner (owned_next) */
    bool failed;            /* rpc_server_fail_all: every call not public ends with fail_code */
    grpc_status_code fail_code;
    char fail_message[512];
};

struct rpc_call {
    rpc_server *server;
    int method; /* index into server->methods; -1: a path no method names */
    call_tag accept_tag, close_tag, send_tag, recv_tag;

    /* Filled when the request completes; read-only afterwards. */
    grpc_call *call;
    grpc_metadata_array metadata;
    grpc_call_details details; /* unregistered paths only */
    gpr_timespec deadline;     /* GPR_CLOCK_MONOTONIC once accepted */
    grpc_byte_buffer *payload;
    int close_cancelled;       /* RECV_CLOSE_ON_SERVER's out argument */
    grpc_byte_buffer *received; /* RPC_BIDI_STREAMING: RECV_MESSAGE's out argument */

    atomic_bool cancelled;
    void *user;

    pthread_mutex_t mu; /* guards the fields below */
    queued_msg *head, *tail;   /* messages not yet handed to gRPC */
    grpc_byte_buffer *sending; /* the message of the batch in flight, if any */
    bool send_in_flight;
    bool metadata_sent;
    bool status_queued;        /* finished and the status not yet handed to gRPC */
    grpc_status_code status_code;
    char *status_message;
    bool close_pending;        /* the RECV_CLOSE_ON_SERVER batch has not completed */
    bool closed;               /* over on the wire: no more batches */
    bool owned;                /* the owner has not called rpc_call_finish */
    rpc_call *owned_prev, *owned_next; /* server->owned_calls, under server->mu */
    bool failed;               /* rpc_server_fail_all sent its status: the owner's is ignored */
    bool reading;              /* bidi: a RECV_MESSAGE is in flight or its message is with the handler */
};

static rpc_call *call_create(rpc_server *s, int method)
{
    rpc_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->server = s;
    c->method = method;
    c->accept_tag = (call_tag){ TAG_ACCEPT, c };
    c->close_tag = (call_tag){ TAG_CLOSE, c };
    c->send_tag = (call_tag){ TAG_SEND, c };
    c->recv_tag = (call_tag){ TAG_RECV, c };
    grpc_metadata_array_init(&c->metadata);
    grpc_call_details_init(&c->details);
    atomic_init(&c->cancelled, false);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void queue_drop(rpc_call *c)
{
    while (c->head) {
        queued_msg *q = c->head;
        c->head = q->next;
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
    c->tail = NULL;
}

static void call_free(rpc_call *c)
{
    queue_drop(c);
    if (c->sending) grpc_byte_buffer_destroy(c->sending);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->received) grpc_byte_buffer_destroy(c->received);
    if (c->call) grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->metadata);
    grpc_call_details_destroy(&c->details);
    free(c->status_message);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void server_active_add(rpc_server *s, int delta)
{
    pthread_mutex_lock(&s->mu);
    s->active += delta;
    if (s->active == 0) pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static grpc_call_error call_arm(rpc_call *c)
{
    rpc_server *s = c->server;
    server_active_add(s, 1);
    grpc_call_error e;
    if (c->method >= 0) /* a bidi call reads its messages itself (call_recv_start_locked) */
        e = grpc_server_request_registered_call(s->server, s->methods[c->method].registered, &c->call, &c->deadline,
                                                &c->metadata,
                                                s->methods[c->method].kind == RPC_BIDI_STREAMING ? NULL : &c->payload,
                                                s->cq, s->cq, &c->accept_tag);
    else
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->metadata, s->cq, s->cq, &c->accept_tag);
    if (e != GRPC_CALL_OK) server_active_add(s, -1);
    return e;
}

/* Re-arms the request for a method after an accept. Out of memory (where gRPC itself would
 * already abort) leaves the method without a pending request. */
static void server_rearm(rpc_server *s, int method)
{
    if (atomic_load(&s->stopping)) return;
    rpc_call *c = call_create(s, method);
    if (c && call_arm(c) != GRPC_CALL_OK) call_free(c);
}

/* The call is over for the owner: nothing queued goes out any more. */
static void call_cancel_locked(rpc_call *c)
{
    atomic_store(&c->cancelled, true);
    queue_drop(c);
    c->status_queued = false;
}

static bool call_is_unary(const rpc_call *c)
{
    return c->method < 0 || c->server->methods[c->method].kind == RPC_UNARY;
}

/* Starts the next SEND batch when none is in flight and something can go out. */
static void call_pump_locked(rpc_call *c)
{
    if (c->send_in_flight || c->closed) return;
    if (!c->head && !c->status_queued) return;
    if (call_is_unary(c) && !c->status_queued) return; /* the message waits for the status */

    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->metadata_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    grpc_byte_buffer *bb = NULL;
    if (c->head) {
        queued_msg *q = c->head;
        c->head = q->next;
        if (!c->head) c->tail = NULL;
        bb = q->bb;
        free(q);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    bool with_status = c->status_queued && !c->head;
    grpc_slice details = grpc_empty_slice();
    if (with_status) {
        if (c->status_message) details = grpc_slice_from_copied_string(c->status_message);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = c->status_code;
        ops[n++].data.send_status_from_server.status_details = c->status_message ? &details : NULL;
    }
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL);
    grpc_slice_unref(details); /* gRPC does not keep the pointer past start_batch */
    if (e != GRPC_CALL_OK) {
        /* Only a broken invariant gets here; the owner sees a cancelled call. */
        if (bb) grpc_byte_buffer_destroy(bb);
        call_cancel_locked(c);
        return;
    }
    c->metadata_sent = true;
    c->sending = bb;
    c->send_in_flight = true;
    if (with_status) c->status_queued = false;
}

/* After a state change: hands back the grpc_call to unreference once gRPC is done with it,
 * and whether the object is to be freed. Both happen after the caller unlocks. */
static bool call_settle_locked(rpc_call *c, grpc_call **release)
{
    *release = NULL;
    if (c->closed && !c->send_in_flight && !c->reading && c->call) {
        *release = c->call;
        c->call = NULL;
    }
    return !c->owned && !c->close_pending && !c->send_in_flight && !c->reading;
}

static void call_unlock_settled(rpc_call *c)
{
    rpc_server *s = c->server;
    grpc_call *release;
    bool dead = call_settle_locked(c, &release);
    pthread_mutex_unlock(&c->mu);
    if (dead) call_free(c);
    if (release) {
        grpc_call_unref(release);
        server_active_add(s, -1);
    }
}

static void call_on_send_done(rpc_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    if (c->sending) grpc_byte_buffer_destroy(c->sending);
    c->sending = NULL;
    c->send_in_flight = false;
    if (ok)
        call_pump_locked(c);
    else
        call_cancel_locked(c);
    call_unlock_settled(c);
}

static void call_on_close(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->close_pending = false;
    c->closed = true;
    if (c->close_cancelled) call_cancel_locked(c);
    call_unlock_settled(c);
}

static bool slice_equals_secret(grpc_slice s, const char *secret)
{
    size_t n = strlen(secret);
    if (GRPC_SLICE_LENGTH(s) != n) return false;
    const uint8_t *p = GRPC_SLICE_START_PTR(s);
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++) diff |= (uint8_t)(p[i] ^ (uint8_t)secret[i]);
    return diff == 0;
}

static bool call_authorized(const rpc_call *c)
{
    const rpc_server *s = c->server;
    if (!s->auth_value || s->methods[c->method].is_public) return true;
    for (size_t i = 0; i < c->metadata.count; i++) {
        const grpc_metadata *md = &c->metadata.metadata[i];
        if (grpc_slice_str_cmp(md->key, "authorization") == 0 && slice_equals_secret(md->value, s->auth_value))
            return true;
    }
    return false;
}

/* Ends the call now with the server's status, whoever owns it: the owner sees it cancelled
 * (its sends fail, its rpc_call_finish is ignored on the wire). */
static void call_fail_locked(rpc_call *c, grpc_status_code code, const char *message)
{
    rpc_server *s = c->server;
    if (c->closed || c->failed || atomic_load(&c->cancelled)) return;
    c->failed = true;
    atomic_store(&c->cancelled, true);
    c->status_code = code;
    c->status_message = strdup(message);
    c->status_queued = true;
    call_pump_locked(c);
    if (s->on_status) s->on_status(s->status_user, code);
}

/* Starts reading a bidi call's next message (call_on_recv gets it); false when gRPC refuses
 * (the call is over). */
static bool call_recv_start_locked(rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->received;
    c->reading = grpc_call_start_batch(c->call, &op, 1, &c->recv_tag, NULL) == GRPC_CALL_OK;
    return c->reading;
}

static void call_dispatch(rpc_call *c, grpc_slice msg, bool end);

/* After the handler had a bidi call's message (more) or its end: reads the next message while
 * the owner keeps the call; when gRPC refuses, the handler gets the end. */
static void call_recv_done(rpc_call *c, bool more)
{
    pthread_mutex_lock(&c->mu);
    bool owned = more && c->owned;
    bool reading = owned && call_recv_start_locked(c);
    c->reading = reading || owned; /* an end still to deliver keeps the call alive */
    call_unlock_settled(c);
    if (owned && !reading) call_dispatch(c, grpc_empty_slice(), true);
}

/* Runs the handler on msg (end: a bidi call's stream ended, msg NULL to the handler); a bidi
 * call then reads on. */
static void call_handle(rpc_call *c, grpc_slice msg, bool end)
{
    const server_method *m = &c->server->methods[c->method];
    m->handler(m->user, c, end ? NULL : GRPC_SLICE_START_PTR(msg), end ? 0 : GRPC_SLICE_LENGTH(msg));
    grpc_slice_unref(msg);
    if (m->kind == RPC_BIDI_STREAMING) call_recv_done(c, !end);
}

/* A request message on its way to the handler, off the completion-queue thread. */
typedef struct {
    rpc_call *call;
    grpc_slice msg;
    bool end;
} handler_job;

static void run_handler(void *arg)
{
    handler_job *j = arg;
    call_handle(j->call, j->msg, j->end);
    free(j);
}

/* Runs the call's handler here (on_cq_thread methods) or on a handler thread; takes msg. */
static void call_dispatch(rpc_call *c, grpc_slice msg, bool end)
{
    const server_method *m = &c->server->methods[c->method];
    if (m->on_cq_thread) {
        call_handle(c, msg, end);
        return;
    }
    handler_job *j = malloc(sizeof *j);
    if (j) *j = (handler_job){ .call = c, .msg = msg, .end = end };
    if (!j || work_pool_post(c->server->handlers, run_handler, j) != IFN_OK) {
        ifn_error_clear();
        free(j);
        static const char text[] = "no memory to queue the call for a handler";
        if (m->kind != RPC_BIDI_STREAMING) {
            grpc_slice_unref(msg);
            rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
            return;
        }
        pthread_mutex_lock(&c->mu); /* the handler may own the call already: it still gets the end */
        call_fail_locked(c, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
        pthread_mutex_unlock(&c->mu);
        call_handle(c, msg, true);
    }
}

/* A bidi call's RECV_MESSAGE completed: its message goes to the handler; the end of the
 * client's stream, or of a broken call, as the end. A message too large or compressed ends the
 * call with the server's status (as for a first message) and the handler gets the end. */
static void call_on_recv(rpc_call *c, bool ok)
{
    rpc_server *s = c->server;
    grpc_byte_buffer *bb = c->received;
    c->received = NULL;
    pthread_mutex_lock(&c->mu);
    bool owned = c->owned;
    if (!ok) call_cancel_locked(c); /* a broken stream, seen here before the close may be */
    pthread_mutex_unlock(&c->mu);
    if (!ok || !bb || !owned) {
        if (bb) grpc_byte_buffer_destroy(bb);
        if (owned) call_dispatch(c, grpc_empty_slice(), true);
        else call_recv_done(c, false);
        return;
    }
    char text[160] = "";
    grpc_byte_buffer_reader reader;
    size_t size = grpc_byte_buffer_length(bb);
    if (size > s->max_receive)
        snprintf(text, sizeof text, "a request message has %zu bytes, more than this server's limit of %zu", size,
                 s->max_receive);
    else if (!grpc_byte_buffer_reader_init(&reader, bb))
        snprintf(text, sizeof text, "cannot decompress a request message");
    if (text[0]) {
        grpc_byte_buffer_destroy(bb);
        pthread_mutex_lock(&c->mu);
        call_fail_locked(c, size > s->max_receive ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT,
                         text);
        pthread_mutex_unlock(&c->mu);
        call_dispatch(c, grpc_empty_slice(), true);
        return;
    }
    grpc_slice msg = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(bb);
    call_dispatch(c, msg, false);
}

static void call_on_accept(rpc_call *c, bool ok)
{
    rpc_server *s = c->server;
    server_rearm(s, c->method);
    if (!ok) { /* the server is shutting down: the request was never matched */
        call_free(c);
        server_active_add(s, -1);
        return;
    }
    gpr_timespec deadline = c->method >= 0 ? c->deadline : c->details.deadline;
    c->deadline = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    c->owned = true;
    pthread_mutex_lock(&s->mu);
    c->owned_next = s->owned_calls;
    if (s->owned_calls) s->owned_calls->owned_prev = c;
    s->owned_calls = c;
    bool failed = s->failed;
    pthread_mutex_unlock(&s->mu);
    c->close_pending = true;
    grpc_op close_op;
    memset(&close_op, 0, sizeof close_op);
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (grpc_call_start_batch(c->call, &close_op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        c->close_pending = false;
        c->closed = true;
        atomic_store(&c->cancelled, true);
    }

    if (c->method < 0) {
        char *path = grpc_slice_to_c_string(c->details.method);
        char text[512];
        snprintf(text, sizeof text, "unknown method %s", path);
        gpr_free(path);
        rpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, text);
        return;
    }
    if (failed && !s->methods[c->method].is_public) {
        rpc_call_finish(c, s->fail_code, s->fail_message);
        return;
    }
    if (!call_authorized(c)) {
        rpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED,
                        "missing or wrong bearer token (authorization: Bearer <token>)");
        return;
    }
    if (s->methods[c->method].kind == RPC_BIDI_STREAMING) {
        pthread_mutex_lock(&c->mu);
        bool reading = call_recv_start_locked(c);
        pthread_mutex_unlock(&c->mu);
        if (!reading) rpc_call_finish(c, GRPC_STATUS_INTERNAL, "cannot read the request stream");
        return;
    }
    if (!c->payload) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        return;
    }
    size_t size = grpc_byte_buffer_length(c->payload);
    if (size > s->max_receive) {
        char text[160];
        snprintf(text, sizeof text, "the request message has %zu bytes, more than this server's limit of %zu",
                 size, s->max_receive);
        rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
        return;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->payload)) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "cannot decompress the request message");
        return;
    }
    grpc_slice msg = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    call_dispatch(c, msg, false);
}

static void server_on_shutdown(rpc_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->shutdown_done = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    grpc_completion_queue_shutdown(s->cq);
}

/* Drives the completion queue until it is shut down and drained. */
static void *server_loop(void *arg)
{
    rpc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        call_tag *t = ev.tag;
        switch (t->kind) {
        case TAG_ACCEPT: call_on_accept(t->call, ev.success); break;
        case TAG_CLOSE: call_on_close(t->call); break;
        case TAG_SEND: call_on_send_done(t->call, ev.success); break;
        case TAG_RECV: call_on_recv(t->call, ev.success); break;
        case TAG_SHUTDOWN: server_on_shutdown(s); break;
        }
    }
    return NULL;
}

static ifn_status options_check(const rpc_server_options *o, const rpc_method *methods, int n_methods)
{
    if (!o->addr || !o->addr[0]) return ifn_error_set(IFN_ERR_INVALID_ARG, "the gRPC server needs an address");
    if (o->max_message_bytes < 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "max_message_bytes must be >= 0 (got %d)", o->max_message_bytes);
    bool cert = o->tls_cert_file && o->tls_cert_file[0], key = o->tls_key_file && o->tls_key_file[0];
    if (cert != key)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "TLS needs both a certificate and a key file (got only the %s)",
                             cert ? "certificate" : "key");
    if (n_methods < 0 || (n_methods > 0 && !methods))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "bad method table (%d methods)", n_methods);
    for (int i = 0; i < n_methods; i++) {
        const rpc_method *m = &methods[i];
        if (!m->path || m->path[0] != '/' || !strchr(m->path + 1, '/'))
            return ifn_error_set(IFN_ERR_INVALID_ARG, "method %d: path \"%s\" is not /package.Service/Method", i,
                                 m->path ? m->path : "(null)");
        if (!m->handler) return ifn_error_set(IFN_ERR_INVALID_ARG, "method %s has no handler", m->path);
        if (m->kind != RPC_UNARY && m->kind != RPC_SERVER_STREAMING && m->kind != RPC_BIDI_STREAMING)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "method %s: unknown kind %d", m->path, (int)m->kind);
        for (int j = 0; j < i; j++)
            if (strcmp(methods[j].path, m->path) == 0)
                return ifn_error_set(IFN_ERR_INVALID_ARG, "method %s is given twice", m->path);
    }
    return IFN_OK;
}

/* Shuts down and drains a server whose thread never ran, then frees everything. */
static void server_free(rpc_server *s)
{
    if (s->server) {
        if (!s->shut_down) {
            atomic_store(&s->stopping, true);
            grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
            server_loop(s);
        }
        grpc_server_destroy(s->server);
    }
    work_pool_destroy(s->handlers); /* every call was finished: nothing is queued */
    if (s->cq) grpc_completion_queue_destroy(s->cq);
    for (int i = 0; i < s->n_methods; i++) free(s->methods[i].path);
    free(s->methods);
    free(s->auth_value);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    grpc_shutdown();
}

ifn_status rpc_server_create(const rpc_server_options *opts, const rpc_method *methods, int n_methods,
                             rpc_server **out)
{
    *out = NULL;
    CHECK(options_check(opts, methods, n_methods));
    char *cert = NULL, *key = NULL;
    bool tls = opts->tls_cert_file && opts->tls_cert_file[0];
    ifn_status st = IFN_OK;
    if (tls) {
        CHECK(secret_file_read_pem("certificate", opts->tls_cert_file, &cert));
        CHECK_GOTO(secret_file_read_pem("key", opts->tls_key_file, &key), st, fail_pem);
    }

    rpc_server *s = calloc(1, sizeof *s);
    if (!s) {
        st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the gRPC server");
        goto fail_pem;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->stopping, false);
    atomic_init(&s->cancelling, false);
    s->shutdown_tag = (call_tag){ TAG_SHUTDOWN, NULL };
    grpc_init(); /* paired with the grpc_shutdown in server_free */

    s->methods = calloc((size_t)n_methods + 1, sizeof *s->methods);
    if (!s->methods) goto fail_nomem;
    for (int i = 0; i < n_methods; i++) {
        s->methods[i] = (server_method){ .path = strdup(methods[i].path), .kind = methods[i].kind,
                                         .is_public = methods[i].is_public, .on_cq_thread = methods[i].on_cq_thread,
                                         .handler = methods[i].handler, .user = methods[i].user };
        s->n_methods = i + 1;
        if (!s->methods[i].path) goto fail_nomem;
    }
    s->on_status = opts->on_status;
    s->status_user = opts->status_user;
    st = work_pool_create(opts->handler_threads > 0 ? opts->handler_threads : RPC_DEFAULT_HANDLER_THREADS, &s->handlers);
    if (st != IFN_OK) goto fail;
    if (opts->auth_token && opts->auth_token[0]) {
        size_t n = strlen("Bearer ") + strlen(opts->auth_token) + 1;
        s->auth_value = malloc(n);
        if (!s->auth_value) goto fail_nomem;
        snprintf(s->auth_value, n, "Bearer %s", opts->auth_token);
    }

    /* gRPC's own receive limit rejects a large message before any handler sees the call, so
     * its RESOURCE_EXHAUSTED could not be counted; it buffers the whole message first all the
     * same (measured: 300 MiB sent to a 1 MiB server raised its RSS by 310 MiB). So gRPC takes
     * any size and call_on_accept enforces the limit. Compressed requests are refused: without
     * gRPC's limit, a small compressed message could inflate to gigabytes before that check. */
    s->max_receive = opts->max_message_bytes > 0 ? (size_t)opts->max_message_bytes : RPC_DEFAULT_MAX_MESSAGE;
    grpc_arg args[4];
    size_t n_args = 0;
    args[n_args++] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0 };
    args[n_args++] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = -1 };
    args[n_args++] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
                                 .value.integer = 1 << GRPC_COMPRESS_NONE };
    args[n_args++] = (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                                 .value.integer = (int)s->max_receive };
    grpc_channel_args channel_args = { .num_args = n_args, .args = args };
    s->server = grpc_server_create(&channel_args, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    for (int i = 0; i < n_methods; i++) {
        s->methods[i].registered = grpc_server_register_method(
            s->server, s->methods[i].path, NULL,
            s->methods[i].kind == RPC_BIDI_STREAMING ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!s->methods[i].registered) {
            st = ifn_error_set(IFN_ERR_INVALID_ARG, "gRPC refused to register method %s", s->methods[i].path);
            goto fail;
        }
    }

    grpc_server_credentials *creds;
    if (tls) {
        grpc_ssl_pem_key_cert_pair pair = { .private_key = key, .cert_chain = cert };
        creds = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    s->port = grpc_server_add_http2_port(s->server, opts->addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        if (tls)
            st = ifn_error_set(IFN_ERR_IO, "cannot listen on %s with TLS (address in use or unresolvable, or the "
                               "certificate %s and key %s are not a valid pair)", opts->addr, opts->tls_cert_file,
                               opts->tls_key_file);
        else
            st = ifn_error_set(IFN_ERR_IO, "cannot listen on %s (address in use or unresolvable)", opts->addr);
        goto fail;
    }
    free(cert);
    secret_free(key);
    *out = s;
    return IFN_OK;

fail_nomem:
    st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the gRPC server's methods");
fail:
    server_free(s);
fail_pem:
    free(cert);
    secret_free(key);
    return st;
}

ifn_status rpc_server_start(rpc_server *s)
{
    if (s->started || s->shut_down) return ifn_error_set(IFN_ERR_INVALID_ARG, "the gRPC server was already started");
    /* Everything that can fail without gRPC's help comes before grpc_server_start. */
    rpc_call **pending = calloc((size_t)s->n_methods + 1, sizeof *pending);
    bool have_all = pending != NULL;
    for (int m = -1; have_all && m < s->n_methods; m++) {
        pending[m + 1] = call_create(s, m);
        have_all = pending[m + 1] != NULL;
    }
    ifn_status st = IFN_OK;
    if (!have_all)
        st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the gRPC server's pending calls");
    else if (pthread_create(&s->thread, NULL, server_loop, s) != 0)
        st = ifn_error_set(IFN_ERR_INTERNAL, "cannot start the gRPC completion-queue thread");
    if (st != IFN_OK) {
        for (int i = 0; pending && i <= s->n_methods; i++)
            if (pending[i]) call_free(pending[i]);
        free(pending);
        return st;
    }
    s->started = true;
    grpc_server_start(s->server);
    for (int i = 0; i <= s->n_methods; i++) {
        grpc_call_error e = call_arm(pending[i]);
        if (e != GRPC_CALL_OK) {
            call_free(pending[i]);
            if (st == IFN_OK)
                st = ifn_error_set(IFN_ERR_INTERNAL, "cannot request calls for %s: %s",
                                   i == 0 ? "unknown methods" : s->methods[i - 1].path, grpc_call_error_to_string(e));
        }
    }
    free(pending);
    return st;
}

int rpc_server_port(const rpc_server *s) { return s->port; }

/* Waits until the shutdown tag came or (calls_only) no call is active, or `seconds` passed;
 * true unless the time ran out. */
static bool server_wait(rpc_server *s, bool calls_only, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    bool bounded = isfinite(seconds);
    if (bounded) {
        double whole = floor(seconds > 0 ? seconds : 0);
        until.tv_sec += (time_t)whole;
        until.tv_nsec += (long)((seconds > 0 ? seconds - whole : 0) * 1e9);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (!s->shutdown_done && !(calls_only && s->active == 0) && rc != ETIMEDOUT) {
        if (bounded)
            rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
        else
            pthread_cond_wait(&s->cv, &s->mu);
    }
    bool done = s->shutdown_done || (calls_only && s->active == 0);
    pthread_mutex_unlock(&s->mu);
    return done;
}

void rpc_server_shutdown(rpc_server *s, double grace_seconds)
{
    if (!s || s->shut_down) return;
    s->shut_down = true;
    atomic_store(&s->stopping, true);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
    if (!s->started) {
        server_loop(s); /* no calls were ever requested: only the shutdown tag comes */
        return;
    }
    if (!server_wait(s, true, grace_seconds)) atomic_store(&s->cancelling, true);
    grpc_server_cancel_all_calls(s->server);
    server_wait(s, false, INFINITY);
    pthread_join(s->thread, NULL);
}

void rpc_server_destroy(rpc_server *s)
{
    if (!s) return;
    rpc_server_shutdown(s, 0.0);
    server_free(s);
}

ifn_status rpc_call_send(rpc_call *c, const uint8_t *msg, size_t len)
{
    queued_msg *q = malloc(sizeof *q);
    if (!q) return ifn_error_set(IFN_ERR_NOMEM, "no memory to queue a %zu-byte message", len);
    grpc_slice slice = grpc_slice_from_copied_buffer((const char *)msg, len);
    q->bb = grpc_raw_byte_buffer_create(&slice, 1);
    q->next = NULL;
    grpc_slice_unref(slice);

    ifn_status st = IFN_OK;
    pthread_mutex_lock(&c->mu);
    if (c->closed || rpc_call_cancelled(c))
        st = ifn_error_set(IFN_ERR_CANCELLED, "the call to %s was cancelled", c->server->methods[c->method].path);
    else if (call_is_unary(c) && (c->head || c->metadata_sent))
        st = ifn_error_set(IFN_ERR_INVALID_ARG, "unary method %s answers with one message",
                           c->server->methods[c->method].path);
    if (st == IFN_OK) {
        if (c->tail)
            c->tail->next = q;
        else
            c->head = q;
        c->tail = q;
        call_pump_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (st != IFN_OK) {
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
    return st;
}

/* Takes an owned call off the server's list (before its own lock: the server's comes first). */
static void call_disown(rpc_call *c)
{
    rpc_server *s = c->server;
    pthread_mutex_lock(&s->mu);
    if (c->owned_prev) c->owned_prev->owned_next = c->owned_next;
    else if (s->owned_calls == c) s->owned_calls = c->owned_next;
    if (c->owned_next) c->owned_next->owned_prev = c->owned_prev;
    c->owned_prev = c->owned_next = NULL;
    pthread_mutex_unlock(&s->mu);
}

void rpc_server_fail_all(rpc_server *s, grpc_status_code code, const char *message)
{
    pthread_mutex_lock(&s->mu);
    s->failed = true;
    s->fail_code = code;
    snprintf(s->fail_message, sizeof s->fail_message, "%s", message ? message : "");
    for (rpc_call *c = s->owned_calls; c; c = c->owned_next) {
        if (c->method < 0 || s->methods[c->method].is_public) continue;
        pthread_mutex_lock(&c->mu);
        call_fail_locked(c, code, s->fail_message);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

void rpc_call_finish(rpc_call *c, grpc_status_code code, const char *message)
{
    rpc_server *s = c->server;
    call_disown(c);
    pthread_mutex_lock(&c->mu);
    c->owned = false;
    if (!c->closed && !c->failed && !atomic_load(&c->cancelled)) {
        c->status_code = code;
        c->status_message = message ? strdup(message) : NULL; /* out of memory: no text */
        c->status_queued = true;
        call_pump_locked(c);
        /* Counted before the call can settle: once it has, rpc_server_destroy may run. */
        if (s->on_status) s->on_status(s->status_user, code);
    }
    call_unlock_settled(c);
}

double rpc_call_seconds_left(const rpc_call *c)
{
    if (gpr_time_cmp(c->deadline, gpr_inf_future(GPR_CLOCK_MONOTONIC)) >= 0) return INFINITY;
    gpr_timespec left = gpr_time_sub(c->deadline, gpr_now(GPR_CLOCK_MONOTONIC));
    return (double)left.tv_sec + (double)left.tv_nsec * 1e-9;
}

bool rpc_call_deadline_passed(const rpc_call *c)
{
    return rpc_call_seconds_left(c) < RPC_DEADLINE_SLACK;
}

bool rpc_call_cancelled(const rpc_call *c)
{
    return atomic_load(&c->cancelled) || atomic_load(&c->server->cancelling) || rpc_call_seconds_left(c) < 0.0;
}

int rpc_call_method(const rpc_call *c) { return c->method; }

void rpc_call_set_user(rpc_call *c, void *user) { c->user = user; }

void *rpc_call_user(const rpc_call *c) { return c->user; }
