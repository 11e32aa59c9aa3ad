/* A gRPC server (gRPC C core) of unary, server-streaming and bidirectional-streaming methods
 * over serialized bytes.
 *
 * The server knows nothing of the messages: a method is a path ("/infernode.v1.Inference/
 * Generate"), a kind, and a handler that receives the request bytes. One thread drives the
 * completion queue; every tag points at a per-call state object. Handlers run on a few
 * handler threads (work_pool.h), so that a slow one (tokenizing megabytes of text) holds up
 * neither the completion queue nor the methods marked on_cq_thread (health), which run on the
 * completion-queue thread itself and must be quick. A handler may answer at once
 * or keep the call and answer later from any thread (the scheduler does): rpc_call_send queues
 * messages that go out in order, one send in flight at a time, and rpc_call_finish sends the
 * status after the queued messages. The call object stays valid for its owner until
 * rpc_call_finish; the server frees it when both the owner has finished it and gRPC has
 * completed every operation on it.
 *
 * Calls to paths no method names are answered UNIMPLEMENTED. A method that is not public
 * needs "authorization: Bearer <token>" metadata when the server has a token
 * (UNAUTHENTICATED otherwise); the handler does not see such calls. */
#ifndef IFN_RPC_SERVER_H
#define IFN_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#include "status.h"

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

/* RPC_BIDI_STREAMING: the client streams requests too (bidirectional, or client-streaming
 * with one answer). Its handler runs once per request message, in order, never two at a time
 * for one call: the next message is read only after the handler returned. When the client's
 * stream ends (half-close), or the call breaks (cancelled, a message over the size limit, which
 * the server answers itself as for a first message), the handler runs once more with msg NULL
 * and must then finish the call if it has not. A handler that finished the call (from inside a
 * run) is not run again for it. */
typedef enum { RPC_UNARY, RPC_SERVER_STREAMING, RPC_BIDI_STREAMING } rpc_kind;

/* Runs when a call's request message has arrived, on a handler thread (or on the
 * completion-queue thread for on_cq_thread methods); it must not wait for other calls. msg is
 * valid until the handler returns (copy what it keeps). It owns the call from here: it must
 * end it with rpc_call_finish exactly once (now, or later from any thread). */
typedef void (*rpc_handler)(void *user, rpc_call *call, const uint8_t *msg, size_t len);

typedef struct {
    const char *path; /* "/package.Service/Method" */
    rpc_kind kind;
    bool is_public;   /* no bearer token needed (health checks) */
    bool on_cq_thread; /* a quick handler run on the completion-queue thread: it answers even
                          while every handler thread is busy (health checks) */
    rpc_handler handler;
    void *user;
} rpc_method;

#define RPC_DEFAULT_MAX_MESSAGE (4u << 20) /* gRPC's own default */
#define RPC_DEFAULT_HANDLER_THREADS 2

typedef struct {
    const char *addr;          /* "0.0.0.0:50051"; port 0 picks a free one (rpc_server_port) */
    int max_message_bytes;     /* receive and send limit; 0: RPC_DEFAULT_MAX_MESSAGE */
    int handler_threads;       /* threads running the handlers; 0: RPC_DEFAULT_HANDLER_THREADS */
    const char *tls_cert_file; /* PEM; both or neither: TLS, else plaintext */
    const char *tls_key_file;
    const char *auth_token;    /* NULL or "": no authentication */
    /* NULL, or called once for every status the server sends (OK included; not for calls the
     * client cancelled first, which get none), on the thread that ends the call and with the
     * call's lock held (it must not call into this server): for counting errors by code. */
    void (*on_status)(void *user, grpc_status_code code);
    void *status_user;
} rpc_server_options;

/* Binds the address and registers the methods (copied). Fails with a message naming the
 * address, the file or the method when it cannot. Nothing runs until rpc_server_start. */
ifn_status rpc_server_create(const rpc_server_options *opts, const rpc_method *methods, int n_methods,
                             rpc_server **out);
/* Starts the completion-queue thread. */
ifn_status rpc_server_start(rpc_server *s);
/* The port the server listens on. */
int rpc_server_port(const rpc_server *s);
/* Stops accepting calls, gives the calls in flight up to grace_seconds to finish, cancels the
 * rest, and joins the thread. Handlers that still own calls get rpc_call_cancelled == true and
 * must still call rpc_call_finish (it is then a no-op on the wire). During the grace period
 * calls are not reported cancelled, so streams can run to their end. Idempotent. */
void rpc_server_shutdown(rpc_server *s, double grace_seconds);
/* Ends every call in flight but the public ones (health) with this status and message now, and
 * every later one as it arrives: for a server that cannot serve any more (a lost rank). The
 * owners see their calls cancelled; their rpc_call_finish is then ignored on the wire. Thread-safe. */
void rpc_server_fail_all(rpc_server *s, grpc_status_code code, const char *message);
/* After rpc_server_shutdown (it shuts down with no grace if not), once every owner has
 * finished its calls. NULL is a no-op. */
void rpc_server_destroy(rpc_server *s);

/* Queues one message (copied). Thread-safe. For a unary method, at most one message before
 * finish (IFN_ERR_INVALID_ARG for a second); it goes out with the status in one batch.
 * Returns IFN_ERR_CANCELLED when the call is already cancelled (the message is dropped),
 * IFN_ERR_NOMEM when out of memory. */
ifn_status rpc_call_send(rpc_call *c, const uint8_t *msg, size_t len);
/* Ends the call with a status (message NULL or text for the client) after the queued
 * messages. Thread-safe; the owner must not touch c afterwards. */
void rpc_call_finish(rpc_call *c, grpc_status_code code, const char *message);
/* True once the client cancelled, the deadline passed, a send failed on the wire, or the
 * server's shutdown grace ended. Thread-safe. */
bool rpc_call_cancelled(const rpc_call *c);
/* Seconds until the call's deadline (INFINITY when it has none; negative once passed). */
double rpc_call_seconds_left(const rpc_call *c);
/* True when a cancelled call ended because of its deadline. A client whose own deadline timer
 * fires sends a plain cancel (HTTP/2 RST_STREAM) that can arrive before the server's copy of the
 * deadline passes: the server's copy starts when the headers arrive, so it runs late by their
 * transit time. A cancel within RPC_DEADLINE_SLACK seconds of the deadline therefore counts as
 * the deadline. */
#define RPC_DEADLINE_SLACK 0.1
bool rpc_call_deadline_passed(const rpc_call *c);
/* The method's index in the array given to rpc_server_create. */
int rpc_call_method(const rpc_call *c);
/* Owner's pointer, free for the handler's use (NULL at first). */
void rpc_call_set_user(rpc_call *c, void *user);
void *rpc_call_user(const rpc_call *c);

#endif
