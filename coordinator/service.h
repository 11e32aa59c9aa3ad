/* The infernode.v1.Inference service: protobuf messages in, validated requests to the
 * scheduler, responses and gRPC statuses out.
 *
 * The service exists before the model: while loading (and while draining) Generate answers
 * UNAVAILABLE; Tokenize, Detokenize and ModelInfo answer as soon as the model is ready. A bad
 * request gets INVALID_ARGUMENT with the field it names; a full queue gets RESOURCE_EXHAUSTED;
 * an unknown session NOT_FOUND, a session with a request running FAILED_PRECONDITION, as do
 * speculative.enabled on a server that does not speculate and a fill-in-the-middle prompt on a
 * model without the FIM tokens. Handlers run on the gRPC thread and never touch
 * the engine; generation and sessions go through the scheduler. */
#ifndef IFN_SERVICE_H
#define IFN_SERVICE_H

#include "engine.h"
#include "metrics.h"
#include "rpc_server.h"
#include "scheduler.h"
#include "tokenizer.h"

#define SERVICE_N_METHODS 6

typedef struct service service;

/* metrics may be NULL. */
ifn_status service_create(metrics *m, service **out);
void service_destroy(service *sv);

/* The service's methods, for rpc_server_create. */
void service_methods(service *sv, rpc_method out[SERVICE_N_METHODS]);
/* rpc_server_options.on_status for the server that carries this service: counts every non-OK
 * status it sends, whichever method (health and unknown paths included), in
 * infernode_errors_total{code}. user is the service. */
void service_count_status(void *user, grpc_status_code code);

/* The server's KV defaults, for requests that leave them unset and for ModelInfo. */
typedef struct {
    int n_keep;           /* attention sinks (lowered to a window's size - 1) */
    int n_discard;        /* -1: half the non-sink window; 0: never; else that many */
    bool recompute;       /* the scheduler's kv_recompute */
    ifn_kv_type kv_type;  /* the engine's */
    double session_ttl;   /* seconds */
} service_kv;

/* The server's speculative decoding, for ModelInfo and the requests' options. */
typedef struct {
    sched_spec_mode mode;
    const char *draft_model; /* SCHED_SPEC_DRAFT: its path ... */
    const char *draft_quant; /* ... and its engine_quant_desc */
    int max_draft;           /* the most tokens proposed per step */
} service_spec;

/* From here on requests are served: e, tok (NULL: the model has no tokenizer), sch and the
 * strings of spec must outlive the service. Call from the thread that loaded them. */
void service_ready(service *sv, const engine *e, const tokenizer *tok, scheduler *sch, int ranks, const service_kv *kv,
                   const service_spec *spec);

/* New Generate calls get UNAVAILABLE; the ones already submitted run to their end. */
void service_drain(service *sv);

#endif
