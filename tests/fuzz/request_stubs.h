/* fuzz_request's stand-ins for the gRPC call, the engine and the scheduler (request_stubs.c). */
#ifndef IFN_FUZZ_REQUEST_STUBS_H
#define IFN_FUZZ_REQUEST_STUBS_H

#include <stdbool.h>

#include "engine.h"
#include "model_file.h"
#include "rpc_server.h"
#include "sampler.h"
#include "scheduler.h"

#define FUZZ_CTX 64 /* the engine's context per sequence */

/* The call a handler gets: how it ended. */
struct rpc_call {
    int method;
    bool finished;
    grpc_status_code code;
    int sent;
    void *user;
};

/* The model file whose config the engine reports (must outlive the calls). */
void fuzz_request_engine(const model_file *mf);

#endif
