/* A loaded Llama-family model and the forward pass over one sequence.
 *
 * The weights stay in the model file's mapping (zero-copy) in their stored type; only norm
 * vectors are converted to fp32. A model_seq holds one sequence's KV cache and scratch; the
 * model itself is immutable after loading and can serve many sequences. */
#ifndef IFN_MODEL_H
#define IFN_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "comm.h"
#include "model_file.h"
#include "status.h"
#include "tp_plan.h"

typedef struct model model;
typedef struct model_seq model_seq;

typedef struct {
    /* How to pack the linear layers (a qw_spec_parse name such as "w4a8-g128"); NULL keeps
     * each tensor's stored type losslessly (F32, F16, BF16, and GGUF Q8_0/Q4_0/Q4_1 as
     * W8/W4 with int8 activations). "f32" gives the exact reference-grade path. */
    const char *quant;
    /* This rank's share under tensor parallelism (NULL: the whole model), and the ranks to
     * all-reduce partial sums with (NULL: a single process). */
    const tp_shard *shard;
    comm *comm;
} model_options;

/* Checks every tensor's presence, shape and type and packs the linear layers for the kernels
 * (the embedding stays in the mapping: mf must outlive the model). Errors name the file, the
 * tensor and what was expected. */
ifn_status model_load(const model_file *mf, const model_options *opts, model **out);

/* A model of the given shape with random weights packed as opts says (for benchmarks at
 * shapes no file here has). Deterministic for a seed. */
ifn_status model_create_random(const model_config *cfg, const model_options *opts, uint64_t seed, model **out);

/* Bytes of packed weights, and a description of the packing ("w4a8-g128", or "as stored:
 * q4_0 -> w4a8-g32, f32 -> f32"). */
size_t model_weight_bytes(const model *m);
const char *model_quant_desc(const model *m);
void model_destroy(model *m);

const model_config *model_get_config(const model *m);

/* A sequence with room for ctx_size positions, evaluating at most n_batch tokens per internal
 * step (longer inputs are split). ctx_size must be 1..the model's context length. */
ifn_status model_seq_create(const model *m, int ctx_size, int n_batch, model_seq **out);
void model_seq_destroy(model_seq *s);

/* Positions used so far. */
int model_seq_pos(const model_seq *s);

/* The output rows this rank computes: logits columns [first, first + n) of the vocabulary. */
void model_vocab_slice(const model *m, int *first, int *n);

/* Appends n tokens to the sequence and computes this rank's logits (its vocabulary slice,
 * n_vocab = model_vocab_slice's n):
 *   all_logits:  logits [n][n_vocab], one row per input token;
 *   otherwise:   logits [n_vocab] for the last token only.
 * Under tensor parallelism every rank must call it with the same tokens (the all-reduces
 * inside pair up across ranks).
 * Fails without changing the sequence if a token id is outside the vocabulary (IFN_ERR_RANGE,
 * naming the id and its index) or the tokens do not fit in the context (IFN_ERR_RANGE). */
ifn_status model_seq_eval(model_seq *s, const int32_t *tokens, int n, bool all_logits, float *logits);

#endif
