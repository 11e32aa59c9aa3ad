/* One model served by all ranks: the step protocol of tensor parallelism.
 *
 * Every rank creates the engine (it opens the file, builds the plan, binds to its NUMA node
 * and loads only its shard). Rank 0 then drives: each engine_eval broadcasts a step (the
 * token ids and what to return), every rank runs the forward pass on its shard with two
 * all-reduces per layer, and the output head's logits come back to rank 0 reduced as far as
 * the caller allows: an argmax or top-k per rank first, the full vocabulary only when asked.
 * Ranks other than 0 sit in engine_serve until rank 0 calls engine_stop.
 *
 * Failures: engine_create agrees across ranks, so a bad file or a failed allocation on any
 * rank makes every rank's engine_create fail (the detail is kept only on the lowest failing
 * rank, so one message is printed, and is "" elsewhere). A failure inside a step, after the
 * ranks have started it, cannot be undone: the failing rank prints its message and aborts
 * the whole job (MPI_Abort); in a single process engine_eval returns the error instead. */
#ifndef IFN_ENGINE_H
#define IFN_ENGINE_H

#include <stdint.h>

#include "comm.h"
#include "model.h"
#include "model_file.h"

typedef struct {
    const char *model_path;
    const char *quant;  /* model_options.quant */
    int ctx_size;       /* 0: the model's context length, at most 4096 */
    int n_batch;        /* tokens per forward step (0: 512) */
} engine_params;

typedef enum {
    ENGINE_LOGITS_NONE,      /* only fill the KV cache */
    ENGINE_LOGITS_ARGMAX,    /* ids[0] = argmax of the last row (lowest id on ties) */
    ENGINE_LOGITS_TOPK,      /* ids[k], values[k]: the last row's k largest, descending */
    ENGINE_LOGITS_FULL_LAST, /* logits[vocab] of the last row */
    ENGINE_LOGITS_FULL_ALL,  /* logits[n][vocab], every row */
} engine_logits;

typedef struct {
    engine_logits mode;
    int top_k;        /* TOPK */
    float *logits;    /* FULL_*: caller's buffer */
    int32_t *ids;     /* ARGMAX: [1]; TOPK: [top_k] */
    float *values;    /* TOPK: [top_k]; ARGMAX: [1] */
} engine_output;

typedef struct engine engine;

ifn_status engine_create(comm *c, const engine_params *p, engine **out);
void engine_destroy(engine *e);

const model_file *engine_model_file(const engine *e);
const model_config *engine_config(const engine *e);
int engine_ctx_size(const engine *e);
int engine_pos(const engine *e);
/* "tp 2: heads 0..15, kv 0..1, ffn 0..2815, vocab 0..15999; numa: ..." for logs. */
const char *engine_describe(const engine *e);

/* Rank 0. Appends tokens to the sequence and returns what out->mode asks for. Token ids
 * and the context room are checked before any rank starts (IFN_ERR_RANGE, nothing
 * changes). */
ifn_status engine_eval(engine *e, const int32_t *tokens, int n, engine_output *out);
/* Rank 0: starts a new sequence on every rank. */
ifn_status engine_reset(engine *e);
/* Rank 0: releases the other ranks from engine_serve. */
ifn_status engine_stop(engine *e);

/* Ranks other than 0: runs steps until rank 0 calls engine_stop. */
ifn_status engine_serve(engine *e);

#endif
