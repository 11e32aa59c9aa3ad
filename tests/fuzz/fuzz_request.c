/* Request validation without a server: the first byte picks a method of the infernode.v1
 * service (and a server with or without speculation); the rest is the request message as the
 * client sent it, which the handler decodes with protobuf-c and validates. The handler must end
 * every call exactly once, with a message when it refuses, and may hand the scheduler only
 * requests that meet its preconditions (request_stubs.c). The model is the shipped draft model
 * (IFN_FUZZ_MODEL): its config and its tokenizer. */
#include "fuzz_util.h"
#include "model_tokenizer.h"
#include "request_stubs.h"
#include "service.h"

enum { N_SERVERS = 2 };

static rpc_method methods[N_SERVERS][SERVICE_N_METHODS];

/* The engine and the scheduler are stand-ins: the service only passes their pointers on. */
static char engine_stand_in, scheduler_stand_in;

static void start(int i, const tokenizer *tok, sched_spec_mode mode)
{
    service *sv = NULL;
    FUZZ_ASSERT(service_create(NULL, &sv) == IFN_OK);
    const service_kv kv = { .n_keep = 4, .n_discard = -1, .kv_type = IFN_KV_F16, .session_ttl = 600 };
    const service_spec spec = { .mode = mode, .max_draft = mode == SCHED_SPEC_OFF ? 0 : 4 };
    service_ready(sv, (const engine *)&engine_stand_in, tok, (scheduler *)&scheduler_stand_in, 1, &kv, &spec);
    service_methods(sv, methods[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *path = getenv("IFN_FUZZ_MODEL");
    model_file *mf = NULL;
    tokenizer *tok = NULL;
    if (!path || model_file_open(path, &mf) != IFN_OK || model_tokenizer_load(mf, &tok) != IFN_OK) {
        fprintf(stderr, "fuzz: IFN_FUZZ_MODEL must name a model with a tokenizer: %s\n", ifn_error_detail());
        abort();
    }
    fuzz_request_engine(mf);
    start(0, tok, SCHED_SPEC_OFF);
    start(1, tok, SCHED_SPEC_NGRAM);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const rpc_method *m = &methods[data[0] / SERVICE_N_METHODS % N_SERVERS][data[0] % SERVICE_N_METHODS];
    rpc_call call = { .method = data[0] % SERVICE_N_METHODS };
    m->handler(m->user, &call, data + 1, size - 1);
    FUZZ_ASSERT(call.finished);
    ifn_error_clear();
    return 0;
}
