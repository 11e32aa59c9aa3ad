/* The gRPC plumbing of `infernode client`: one channel, one completion queue driven by the
 * calling thread, and calls made of batches (send metadata + request + half-close, then one
 * message at a time, then the status), so that unary and server-streaming methods share one
 * path. Messages are opaque bytes here; client.c packs and unpacks them with protobuf-c. */
#ifndef IFN_CLIENT_RPC_H
#define IFN_CLIENT_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    const char *addr;    /* HOST:PORT, or any target gRPC understands */
    const char *token;   /* sent as "authorization: Bearer TOKEN"; NULL = none */
    const char *tls_ca;  /* PEM file of the roots to trust; NULL = plaintext */
    double timeout;      /* seconds a call may take; <= 0 = no deadline */
} rpc_options;

typedef struct rpc_client rpc_client;

/* Reads the CA file (if any) and creates the channel. The channel connects lazily, so an
 * unreachable server shows up as the first call's UNAVAILABLE status. */
ifn_status rpc_client_create(const rpc_options *o, rpc_client **out);
/* Shuts the completion queue down, drains it, and frees everything. NULL is a no-op. */
void rpc_client_destroy(rpc_client *c);

/* The status a call ended with. code is a grpc_status_code (0 = OK). */
typedef struct {
    int code;
    char *details; /* malloc'd, "" if the server gave none */
} rpc_status;

void rpc_status_free(rpc_status *s);

/* "OK", "INVALID_ARGUMENT", ... for a grpc_status_code; "UNKNOWN_STATUS" outside the range. */
const char *rpc_status_name(int code);

/* Called for each message the server sends, in order. A failure cancels the call and becomes
 * rpc_call's result. */
typedef ifn_status (*rpc_message_fn)(void *ctx, const uint8_t *data, size_t len);

/* Calls `method` ("/package.Service/Method") with the serialized request req[len]. Returns
 * IFN_OK once the call has ended, whatever its gRPC status (in *status; free it with
 * rpc_status_free); an error only when the call could not be made or on_message failed. */
ifn_status rpc_call(rpc_client *c, const char *method, const uint8_t *req, size_t len, rpc_message_fn on_message,
                    void *ctx, rpc_status *status);

#endif
