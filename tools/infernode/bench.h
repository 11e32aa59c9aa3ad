/* Shared by the benchmarks of 'infernode bench'. */
#ifndef IFN_BENCH_H
#define IFN_BENCH_H

#include <stdbool.h>

#include "comm.h"
#include "engine.h"
#include "model_file.h"
#include "scheduler.h"

/* A real model's shape, for random weights. */
typedef struct {
    const char *name;  /* "tinyllama" */
    const char *label; /* "TinyLlama-1.1B shape" */
    model_config cfg;
} model_shape;

#define BENCH_MAX_LIST 16

/* "1,4,16" → out[n]: 1..BENCH_MAX_LIST integers, each in min_value..max_value; false if malformed. */
bool bench_parse_list(const char *s, int min_value, int max_value, int *out, int *n);

/* The shape of that name, or NULL. */
const model_shape *bench_shape(const char *name);

/* Creates the engine on every rank; rank 0 logs it and runs lead(e, arg) while the other
 * ranks follow its steps; then it stops and is destroyed. Returns the exit code (a failure of
 * lead is reported as "what: detail"). */
int bench_with_engine(comm *c, const engine_params *ep, ifn_status (*lead)(engine *e, void *arg), void *arg,
                      const char *what);

/* A scheduler request's check callback for benchmark requests: never cancelled. */
sched_finish bench_never_cancelled(void *user);

/* qsort comparison of doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

/* 'infernode bench serve': continuous batching at 1, 4, 16 concurrent streams. */
int bench_serve(comm *c, int argc, char **argv);

/* 'infernode bench kv': TPOT and memory over a long generation in a KV ring; session follow-up TTFT. */
int bench_kv(comm *c, int argc, char **argv);

/* 'infernode bench spec': TPOT with speculation off, by prompt lookup and with a draft model on
 * code prompts; acceptance, K, and the step costs that bound the speedup. */
int bench_spec(comm *c, int argc, char **argv);

#endif
