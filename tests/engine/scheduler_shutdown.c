/* The scheduler at shutdown, on the model given: a request running when scheduler_abort_all
 * runs ends once with SCHED_SHUTDOWN, and a request submitted afterwards (a handler that found
 * the server ready just before the drain ended) is refused with IFN_ERR_UNAVAILABLE at once,
 * its prompt left to the caller and no event sent: before, it was queued and never finished.
 * usage: scheduler_shutdown MODEL */
#include <stdio.h>
#include <stdlib.h>

#include "comm.h"
#include "engine.h"
#include "scheduler.h"

typedef struct {
    int events, last_events;
    sched_finish finish;
} outcome;

static void on_event(void *user, const sched_event *ev)
{
    outcome *o = user;
    o->events++;
    if (ev->finish != SCHED_RUNNING) {
        o->last_events++;
        o->finish = ev->finish;
    }
}

static sched_finish never_cancelled(void *user)
{
    (void)user;
    return SCHED_RUNNING;
}

static int failures;

static void expect(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    failures += !ok;
}

static ifn_status submit(scheduler *s, outcome *o)
{
    int32_t *ids = malloc(3 * sizeof *ids);
    if (!ids) return IFN_ERR_NOMEM;
    ids[0] = 1, ids[1] = 2, ids[2] = 3;
    sched_request r = { .prompt = ids, .n_prompt = 3, .max_new_tokens = 50, .sampling = sampler_params_default(),
                        .ignore_eos = true, .stream = true, .window = 64, .emit = on_event, .check = never_cancelled,
                        .user = o };
    ifn_status st = scheduler_submit(s, &r);
    if (st != IFN_OK) { /* refused: the prompt is still the caller's */
        printf("     refused: %s\n", ifn_error_detail());
        free(ids);
    }
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: scheduler_shutdown MODEL\n");
        return 2;
    }
    comm *c;
    engine *e;
    scheduler *s;
    engine_params p = { .model_path = argv[1], .n_slots = 2, .ctx_size = 64, .kv_type = IFN_KV_F32 };
    if (comm_init(&argc, &argv, &c) != IFN_OK || engine_create(c, &p, &e) != IFN_OK) {
        fprintf(stderr, "scheduler_shutdown: %s\n", ifn_error_detail());
        return 1;
    }
    sched_limits lim = { .max_queue = 4, .max_step_tokens = engine_n_batch(e), .prefill_chunk = engine_n_batch(e) };
    if (scheduler_create(e, NULL, NULL, &lim, &s) != IFN_OK) {
        fprintf(stderr, "scheduler_shutdown: %s\n", ifn_error_detail());
        return 1;
    }
    outcome running = { 0 }, late = { 0 };
    expect(submit(s, &running) == IFN_OK, "a request is accepted while serving");
    for (int i = 0; i < 3; i++) expect(scheduler_step(s, 0) == IFN_OK, "a step runs");
    expect(running.events >= 1 && running.last_events == 0, "the request is running after 3 steps");
    scheduler_abort_all(s);
    expect(running.last_events == 1 && running.finish == SCHED_SHUTDOWN, "abort_all ends it once, with SCHED_SHUTDOWN");
    ifn_status st = submit(s, &late);
    expect(st == IFN_ERR_UNAVAILABLE, "a submission after abort_all is refused as unavailable");
    ifn_error_clear();
    expect(late.events == 0 && scheduler_pending(s) == 0, "the refused request got no event and is not pending");
    expect(running.last_events == 1, "the aborted request got no second last event");
    scheduler_destroy(s);
    engine_stop(e);
    engine_destroy(e);
    comm_finalize(c);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
