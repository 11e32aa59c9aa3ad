/* One model served by all ranks: the step protocol of tensor parallelism.
 *
 * Every rank creates the engine (it opens the file, builds the plan, binds to its NUMA node,
 * loads only its shard and allocates the KV caches of n_slots sequences for its KV heads).
 * Rank 0 then drives: each engine_step broadcasts a step (a header, then every sequence's
 * slot, positions and output request with the step's token ids), every rank runs one batched
 * forward pass over all the step's tokens on its shard with two all-reduces per layer, and
 * the output head's logits come back to rank 0 reduced as far as each sequence allows: an
 * argmax or top-k per rank first, the full vocabulary only when asked; one collective per
 * kind of output per step. Ranks other than 0 sit in engine_serve until rank 0 calls
 * engine_stop.
 *
 * Rank 0 alone keeps the slots' lengths and rings: a step carries its positions and each
 * sequence's ring, so no other rank needs them, and emptying, rolling back or reshaping a
 * slot needs no step.
 *
 * Each slot is a StreamingLLM ring (model.h): `window` positions of which the first n_keep
 * are attention sinks. When a sequence would outgrow its window, the caller drops the oldest
 * non-sink positions with engine_seq.discard: the later positions move back (numbered from
 * n_keep again), every rank re-rotates their cached keys by the distance (shift-RoPE) and no
 * memory moves.
 *
 * Failures: engine_create agrees across ranks, so a bad file or a failed allocation on any
 * rank makes every rank's engine_create fail (the detail is kept only on the lowest failing
 * rank, so one message is printed, and is "" elsewhere). A bad step is refused on rank 0
 * before any rank starts it. A failure inside a step, after the ranks have started it, cannot
 * be undone: the failing rank prints its message and aborts the whole job (MPI_Abort); in a
 * single process engine_step returns the error instead, and each of the step's slots then
 * keeps only its positions before the sequence's pos0. */
#ifndef IFN_ENGINE_H
#define IFN_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "model.h"
#include "model_file.h"
#include "ops.h"

typedef struct {
    const char *model_path;
    /* Instead of a file: random weights of this shape (benchmarks at shapes no file here
     * has); engine_model_file is then NULL. */
    const model_config *random_shape;
    const char *quant;  /* model_options.quant */
    int ctx_size;       /* positions per sequence slot; 0: the model's context length, at most 4096 */
    int n_batch;        /* most tokens in one forward step, over all its sequences (0: 512;
                           at most n_slots * ctx_size: engine_n_batch says what was kept) */
    int n_slots;        /* sequences that can hold a KV cache at once (0: 1) */
    ifn_kv_type kv_type; /* how the caches store K and V (IFN_KV_F32, the zero value, is exact) */
} engine_params;

typedef enum {
    ENGINE_LOGITS_NONE,   /* only fill the KV cache */
    ENGINE_LOGITS_ARGMAX, /* per output row: ids[1] = the argmax (lowest id on ties), values[1] its logit */
    ENGINE_LOGITS_TOPK,   /* per output row: ids[top_k], values[top_k], the k largest, descending,
                             lowest id first on ties */
    ENGINE_LOGITS_FULL,   /* per output row: logits[vocab] */
} engine_logits;

/* Output buffers hold n_out rows of what the mode asks for, row after row. */
typedef struct {
    engine_logits mode;
    int top_k;        /* TOPK */
    float *logits;    /* FULL: [n_out][vocab] */
    int32_t *ids;     /* ARGMAX: [n_out]; TOPK: [n_out][top_k] */
    float *values;    /* ARGMAX: [n_out] (may be NULL); TOPK: [n_out][top_k] */
} engine_output;

/* One sequence's part of a step: n_tokens tokens at positions pos0..pos0+n_tokens-1 of a
 * slot's KV cache. Writing at pos0 replaces whatever the slot held from pos0 on, so starting
 * a new sequence is pos0 = 0 and rolling back k tokens is continuing at length - k (O(1),
 * also after discards). */
typedef struct {
    int slot;               /* 0..n_slots-1, each slot at most once per step */
    int discard;            /* first drop the slot's positions n_keep..n_keep+discard-1 (the
                               oldest non-sinks), the later ones moving back by discard;
                               0..engine_slot_len(slot) - n_keep (0 while the slot
                               holds no more than its sinks) */
    int pos0;               /* 0..engine_slot_len(slot) - discard, within the slot's window */
    int n_tokens;           /* >= 1 */
    const int32_t *tokens;  /* [n_tokens] */
    int n_out;              /* output rows for the last n_out tokens (0..n_tokens; 0 with NONE) */
    engine_output out;
} engine_seq;

typedef struct engine engine;

ifn_status engine_create(comm *c, const engine_params *p, engine **out);
void engine_destroy(engine *e);

/* NULL for an engine of random weights. */
const model_file *engine_model_file(const engine *e);
const model_config *engine_config(const engine *e);
int engine_ctx_size(const engine *e);
int engine_n_slots(const engine *e);
int engine_n_batch(const engine *e);
/* Ranks the model is split over. */
int engine_ranks(const engine *e);
/* Rank 0: positions of a slot's KV cache that hold entries, -1 for a slot outside
 * 0..n_slots-1. */
int engine_slot_len(const engine *e, int slot);
/* Rank 0: empties a slot and makes it a ring of `window` positions (1..engine_ctx_size) with
 * n_keep attention sinks (0..window-1). Every slot starts as (engine_ctx_size, 0). Errors
 * name the argument out of range and change nothing. */
ifn_status engine_slot_ring(engine *e, int slot, int window, int n_keep);
/* This rank's bytes of K and V caches, all slots (every rank holds as much or, replicating
 * KV heads, the same). */
size_t engine_kv_bytes(const engine *e);
/* Packed weight bytes over all ranks, and their description ("f16 -> f16"). */
size_t engine_weight_bytes(const engine *e);
const char *engine_quant_desc(const engine *e);
/* "tp 2: heads 0..15, kv 0..1, ffn 0..2815, vocab 0..15999; numa: ..." for logs. */
const char *engine_describe(const engine *e);

/* Rank 0: one batched forward step over several sequences (the kernels see M = the step's
 * tokens) on every rank, and the outputs each sequence asks for; afterwards each slot holds
 * pos0 + n_tokens positions. Everything is checked before any rank starts (1..n_slots
 * sequences, distinct slots in range, discard and pos0 against the slot's length, the
 * window's room, token ids,
 * at most n_batch tokens in all, n_out in 0..n_tokens and 0 exactly with NONE, the mode, top_k
 * in 1..vocab, the output buffers the mode needs): a bad step returns IFN_ERR_RANGE (a value
 * beyond its limit) or IFN_ERR_INVALID_ARG (a malformed request) with a message naming the
 * sequence and the field ("seqs[1].pos0 ..."), and changes nothing. */
ifn_status engine_step(engine *e, engine_seq *seqs, int n_seqs);

/* Rank 0, one sequence in slot 0 (the CLI): appends n tokens at slot 0's length (any number,
 * run as steps of at most n_batch) and returns out->mode for the last token, or for every
 * token when all_rows (FULL only; out->logits holds [n][vocab]). The tokens, the context room
 * and out are checked before the first step (errors as engine_step's, nothing changes). */
ifn_status engine_eval(engine *e, const int32_t *tokens, int n, bool all_rows, engine_output *out);
/* Rank 0: empties slot 0 (no step: the next engine_eval starts at position 0). */
void engine_reset(engine *e);
/* Rank 0: releases the other ranks from engine_serve. */
ifn_status engine_stop(engine *e);

/* Ranks other than 0: runs steps until rank 0 calls engine_stop. */
ifn_status engine_serve(engine *e);

#endif
