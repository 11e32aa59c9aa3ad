/* What the service calls beyond itself, replaced for fuzz_request so that a decoded request is
 * validated without a server, an engine or a scheduler: the gRPC call records how it ended; the
 * engine answers from a real model file's config (fuzz_request_engine); the scheduler checks
 * that what validation let through is what its header requires, then ends the request as a
 * scheduler would. A linker that pulls rpc_server.o, engine.o or scheduler.o in as well fails
 * on the duplicate symbols: add the new function here. */
#include "request_stubs.h"

#include <math.h>

#include "fuzz_util.h"

static const model_file *stub_mf;

void fuzz_request_engine(const model_file *mf) { stub_mf = mf; }

/* ---- rpc_server.h ---- */

ifn_status rpc_call_send(rpc_call *c, const uint8_t *msg, size_t len)
{
    FUZZ_ASSERT(!c->finished);
    c->sent++;
    fuzz_touch(msg, len);
    return IFN_OK;
}

void rpc_call_finish(rpc_call *c, grpc_status_code code, const char *message)
{
    FUZZ_ASSERT(!c->finished); /* exactly once */
    c->finished = true;
    c->code = code;
    FUZZ_ASSERT(code == GRPC_STATUS_OK || (message && message[0])); /* a refusal says why */
}

bool rpc_call_cancelled(const rpc_call *c) { return false; }
double rpc_call_seconds_left(const rpc_call *c) { return INFINITY; }
bool rpc_call_deadline_passed(const rpc_call *c) { return false; }
int rpc_call_method(const rpc_call *c) { return c->method; }
void rpc_call_set_user(rpc_call *c, void *user) { c->user = user; }
void *rpc_call_user(const rpc_call *c) { return c->user; }

/* ---- engine.h: one process, the model file's config ---- */

const model_file *engine_model_file(const engine *e) { return stub_mf; }
const model_config *engine_config(const engine *e) { return model_file_config(stub_mf); }
int engine_ctx_size(const engine *e) { return FUZZ_CTX; }
int engine_n_slots(const engine *e) { return 4; }
size_t engine_kv_bytes(const engine *e) { return 0; }
size_t engine_weight_bytes(const engine *e) { return 0; }
const char *engine_quant_desc(const engine *e) { return "f16"; }

/* ---- scheduler.h ---- */

/* The scheduler's preconditions (scheduler.h), which the service's validation must ensure. */
static void check_request(const sched_request *r)
{
    const int vocab = model_file_config(stub_mf)->vocab_size;
    FUZZ_ASSERT(r->n_prompt >= 1 && r->prompt && r->max_new_tokens >= 1 && r->emit && r->check && r->user);
    for (int i = 0; i < r->n_prompt; i++) FUZZ_ASSERT(r->prompt[i] >= 0 && r->prompt[i] < vocab);
    FUZZ_ASSERT(sampler_params_validate(&r->sampling) == IFN_OK);
    FUZZ_ASSERT(r->n_stop >= 0 && (r->n_stop == 0 || r->stop));
    for (int i = 0; i < r->n_stop; i++) FUZZ_ASSERT(r->stop[i] && r->stop[i][0]);
    FUZZ_ASSERT(!(r->session && r->new_session));
    if (!r->session) {
        FUZZ_ASSERT(r->window >= 1 && r->window <= FUZZ_CTX && r->n_prompt <= r->window);
        FUZZ_ASSERT(r->n_keep >= 0 && r->n_keep < r->window);
        FUZZ_ASSERT(r->n_discard >= 0 && r->n_discard <= r->window - r->n_keep);
    }
}

ifn_status scheduler_submit(scheduler *s, const sched_request *r)
{
    check_request(r);
    static const char text[] = "x = 1\n";
    const int32_t ids[1] = { 0 };
    sched_event ev = { .text = text, .text_len = sizeof text - 1, .ids = ids, .n_ids = 1, .finish = SCHED_LENGTH,
                       .prompt_tokens = r->n_prompt, .completion_tokens = 1, .session_id = r->session };
    r->emit(r->user, &ev); /* the last event: the service ends the call and frees its state */
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    return IFN_OK;
}

void scheduler_spec_describe(const scheduler *s, char *buf, size_t cap) { snprintf(buf, cap, "no speculation"); }

ifn_status scheduler_delete_session(scheduler *s, const char *id)
{
    return ifn_error_set(IFN_ERR_NOT_FOUND, "session_id: no session \"%.64s\"", id);
}
