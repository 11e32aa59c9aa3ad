#include "client_rpc.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rpc_client {
    grpc_channel *channel;
    grpc_completion_queue *cq; /* one batch in flight at a time, driven by the calling thread */
    char *authorization;       /* "Bearer TOKEN", or NULL */
    double timeout;
};

/* One call; the address of this state is the tag of each of its batches. */
typedef struct {
    grpc_call *call;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_status_code code;
    grpc_slice details;
} call_state;

static const char *const STATUS_NAMES[] = {
    "OK",        "CANCELLED",          "UNKNOWN",      "INVALID_ARGUMENT",    "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *rpc_status_name(int code)
{
    if (code < 0 || code >= (int)(sizeof STATUS_NAMES / sizeof STATUS_NAMES[0])) return "UNKNOWN_STATUS";
    return STATUS_NAMES[code];
}

void rpc_status_free(rpc_status *s)
{
    free(s->details);
    s->details = NULL;
}

/* The PEM roots in `path`, NUL-terminated (malloc'd). */
static ifn_status read_pem(const char *path, char **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ifn_error_set(IFN_ERR_IO, "--tls-ca %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 16384;
            char *grown = realloc(text, cap);
            if (!grown) {
                free(text);
                fclose(fp);
                return ifn_error_set(IFN_ERR_NOMEM, "--tls-ca %s: no memory to read it", path);
            }
            text = grown;
        }
        got = fread(text + len, 1, 4096, fp);
        len += got;
    } while (got > 0);
    bool failed = ferror(fp);
    fclose(fp);
    if (failed) {
        free(text);
        return ifn_error_set(IFN_ERR_IO, "--tls-ca %s: read failed", path);
    }
    text[len] = '\0';
    if (!strstr(text, "-----BEGIN CERTIFICATE-----")) {
        free(text);
        return ifn_error_set(IFN_ERR_FORMAT, "--tls-ca %s: no PEM certificate in it (-----BEGIN CERTIFICATE-----)", path);
    }
    *out = text;
    return IFN_OK;
}

ifn_status rpc_client_create(const rpc_options *o, rpc_client **out)
{
    *out = NULL;
    char *pem = NULL;
    if (o->tls_ca) CHECK(read_pem(o->tls_ca, &pem));
    rpc_client *c = calloc(1, sizeof *c);
    size_t auth_len = o->token ? strlen("Bearer ") + strlen(o->token) + 1 : 0;
    if (c && o->token && (c->authorization = malloc(auth_len)))
        snprintf(c->authorization, auth_len, "Bearer %s", o->token);
    if (!c || (o->token && !c->authorization)) {
        free(c);
        free(pem);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for a gRPC client");
    }
    c->timeout = o->timeout;

    grpc_init();
    grpc_channel_credentials *creds = pem ? grpc_ssl_credentials_create(pem, NULL, NULL, NULL)
                                          : grpc_insecure_credentials_create();
    free(pem);
    c->channel = creds ? grpc_channel_create(o->addr, creds, NULL) : NULL;
    if (creds) grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_next(NULL);
    if (!c->channel || !c->cq) {
        rpc_client_destroy(c);
        return ifn_error_set(IFN_ERR_INTERNAL, "gRPC could not create a channel to %s", o->addr);
    }
    *out = c;
    return IFN_OK;
}

void rpc_client_destroy(rpc_client *c)
{
    if (!c) return;
    if (c->channel) grpc_channel_destroy(c->channel);
    if (c->cq) {
        grpc_completion_queue_shutdown(c->cq);
        while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
            continue;
        grpc_completion_queue_destroy(c->cq);
    }
    free(c->authorization);
    free(c);
    grpc_shutdown();
}

/* Starts a batch on the call and waits for it. *ok is false when the batch did not succeed
 * (the call failed; its status says why). */
static ifn_status run_batch(rpc_client *c, call_state *cs, const grpc_op *ops, size_t n, bool *ok)
{
    grpc_call_error e = grpc_call_start_batch(cs->call, ops, n, cs, NULL);
    if (e != GRPC_CALL_OK)
        return ifn_error_set(IFN_ERR_INTERNAL, "grpc_call_start_batch: %s", grpc_call_error_to_string(e));
    grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE || ev.tag != cs)
        return ifn_error_set(IFN_ERR_INTERNAL, "the completion queue returned event %d, not the call's batch", (int)ev.type);
    *ok = ev.success != 0;
    return IFN_OK;
}

/* Hands one received message to on_message and frees it. */
static ifn_status deliver(grpc_byte_buffer *bb, rpc_message_fn on_message, void *ctx)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        grpc_byte_buffer_destroy(bb);
        return ifn_error_set(IFN_ERR_FORMAT, "the server sent a message gRPC cannot decompress");
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(bb);
    ifn_status st = on_message(ctx, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
    grpc_slice_unref(s);
    return st;
}

static char *slice_copy(grpc_slice s)
{
    size_t n = GRPC_SLICE_LENGTH(s);
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, GRPC_SLICE_START_PTR(s), n);
    p[n] = '\0';
    return p;
}

ifn_status rpc_call(rpc_client *c, const char *method, const uint8_t *req, size_t len, rpc_message_fn on_message,
                    void *ctx, rpc_status *status)
{
    *status = (rpc_status){ .code = GRPC_STATUS_UNKNOWN };
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    if (c->timeout > 0)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_nanos((int64_t)(c->timeout * 1e9), GPR_TIMESPAN));
    call_state cs = { 0 };
    cs.call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                       grpc_slice_from_static_string(method), NULL, deadline, NULL);
    if (!cs.call) return ifn_error_set(IFN_ERR_INTERNAL, "gRPC could not create a call to %s", method);
    grpc_metadata_array_init(&cs.initial_md);
    grpc_metadata_array_init(&cs.trailing_md);

    grpc_metadata auth = { .key = grpc_slice_from_static_string("authorization") };
    if (c->authorization) auth.value = grpc_slice_from_static_string(c->authorization);
    grpc_slice payload = grpc_slice_from_copied_buffer((const char *)req, len);
    grpc_byte_buffer *request = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_slice_unref(payload);

    /* Batch 1: the whole request, half-closed, and the server's initial metadata. */
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->authorization ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = c->authorization ? &auth : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &cs.initial_md;
    bool ok;
    ifn_status st = run_batch(c, &cs, ops, 4, &ok);
    grpc_byte_buffer_destroy(request);

    /* Then one message per batch until the server ends the stream (or the call fails). */
    ifn_status delivered = IFN_OK;
    while (st == IFN_OK && ok) {
        grpc_byte_buffer *bb = NULL;
        grpc_op recv = { .op = GRPC_OP_RECV_MESSAGE };
        recv.data.recv_message.recv_message = &bb;
        st = run_batch(c, &cs, &recv, 1, &ok);
        if (st != IFN_OK || !ok || !bb) break;
        delivered = deliver(bb, on_message, ctx);
        if (delivered != IFN_OK) {
            grpc_call_cancel(cs.call, NULL);
            break;
        }
    }

    /* Finally the status, which also completes a failed or cancelled call. */
    if (st == IFN_OK) {
        const char *error_string = NULL;
        grpc_op recv = { .op = GRPC_OP_RECV_STATUS_ON_CLIENT };
        recv.data.recv_status_on_client.trailing_metadata = &cs.trailing_md;
        recv.data.recv_status_on_client.status = &cs.code;
        recv.data.recv_status_on_client.status_details = &cs.details;
        recv.data.recv_status_on_client.error_string = &error_string;
        st = run_batch(c, &cs, &recv, 1, &ok);
        if (st == IFN_OK) {
            status->code = cs.code;
            status->details = slice_copy(cs.details);
            if (!status->details) st = ifn_error_set(IFN_ERR_NOMEM, "no memory for a gRPC status");
            grpc_slice_unref(cs.details);
        }
        gpr_free((void *)error_string);
    }
    grpc_metadata_array_destroy(&cs.initial_md);
    grpc_metadata_array_destroy(&cs.trailing_md);
    grpc_call_unref(cs.call);
    if (st == IFN_OK) st = delivered;
    return st;
}
