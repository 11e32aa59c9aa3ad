/* A loaded model (Llama family, or GPT-BigCode / StarCoder) and the batched forward pass over
 * several sequences: one layer loop whose per-architecture choices (norm, FFN, positions,
 * biases; model_config) were made at load.
 *
 * The linear layers are packed for the kernels at load (the embedding stays in the model
 * file's mapping); norm vectors are converted to fp32. A model_ctx holds the KV caches of a
 * fixed number of sequence slots and the scratch of one step; the model itself is immutable
 * after loading (except for the quantizer's calls below, never while a step runs) and can
 * serve many contexts. */
#ifndef IFN_MODEL_H
#define IFN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "model_file.h"
#include "ops.h"
#include "status.h"
#include "tp_plan.h"

typedef struct model model;
typedef struct model_ctx model_ctx;

typedef struct {
    /* How to pack the linear layers (a qw_spec_parse name such as "w4a8-g128"); NULL keeps
     * each tensor's stored type losslessly (F32, F16, BF16, and GGUF Q8_0/Q5_0/IQ4_NL/Q3_K,
     * Q4_0/Q4_1/Q4_K as W8/W4 with int8 activations; GGUF Q6_K, Q5_1, Q5_K and Q2_K, which
     * have no lossless kind, are converted to W8 g32: qw_spec_for_dtype). "f32" gives the exact reference-grade path. */
    const char *quant;
    /* This rank's share under tensor parallelism (NULL: the whole model), and the ranks to
     * all-reduce partial sums with (NULL: a single process). */
    const tp_shard *shard;
    comm *comm;
    /* For the quantizer, whose calibration runs one layer at a time: model_load checks the
     * embedding, the output norm and the output head, but packs no transformer layer and not
     * the output head; model_load_layer packs a layer when it is needed, model_drop_layer frees
     * it. Only for the whole model in one process (shard and comm NULL) and only for
     * model_load (model_create_random refuses it). */
    bool layers_on_demand;
} model_options;

/* Checks every tensor's presence, shape and type and packs the linear layers for the kernels
 * (the embedding stays in the mapping: mf must outlive the model). Errors name the file, the
 * tensor and what was expected. */
ifn_status model_load(const model_file *mf, const model_options *opts, model **out);

/* Layers on demand (model_options.layers_on_demand): packs layer `layer` from the file the
 * model was loaded from, as the options at load said (their quant, copied at load), with
 * model_load's checks and messages for that layer. Refused with nothing changed: a model
 * loaded whole (IFN_ERR_INVALID_ARG), a layer outside 0..n_layers-1 (IFN_ERR_RANGE), a layer
 * already loaded (IFN_ERR_INVALID_ARG: loading it again would silently drop what
 * model_replace_linear put there). A failure while packing leaves the layer not loaded. Not
 * while a step runs. */
ifn_status model_load_layer(model *m, int layer);

/* Frees layer `layer`'s packed weights and vectors: a step through it is refused until
 * model_load_layer packs it again. Does nothing to a layer not loaded, a layer out of range or
 * a model loaded whole (it could not load the layer again). Not while a step runs. */
void model_drop_layer(model *m, int layer);

/* A model of the given shape with random weights packed as opts says (for benchmarks at
 * shapes no file here has). Deterministic for a seed. */
ifn_status model_create_random(const model_config *cfg, const model_options *opts, uint64_t seed, model **out);

/* Bytes of packed weights (under layers on demand: of the layers loaded now), and a
 * description of the packing ("w4a8-g128", or "as stored: q4_0 -> w4a8-g32, f32 -> f32"). */
size_t model_weight_bytes(const model *m);
const char *model_quant_desc(const model *m);
void model_destroy(model *m);

const model_config *model_get_config(const model *m);

/* The linear layers of a transformer layer. */
typedef enum {
    MODEL_LINEAR_Q, MODEL_LINEAR_K, MODEL_LINEAR_V, MODEL_LINEAR_O,
    MODEL_LINEAR_GATE, MODEL_LINEAR_UP, MODEL_LINEAR_DOWN, MODEL_LINEAR_COUNT
} model_linear;

/* For the quantizer: repacks one linear layer of a model held whole by one process from w (the
 * full [out][in] matrix), as quant says (NULL: losslessly). Refused (IFN_ERR_INVALID_ARG) for
 * a layer not loaded (layers on demand). Not while a step runs. */
ifn_status model_replace_linear(model *m, int layer, model_linear which, const ifn_weight *w, const char *quant);

/* Reads every page of what the model keeps in the file's mapping (the token embedding), so it
 * is resident from the start instead of page by page as tokens first appear. */
void model_touch_mapped(const model *m);

/* The output rows this rank computes: logits columns [first, first + n) of the vocabulary. */
void model_vocab_slice(const model *m, int *first, int *n);

/* KV caches for n_slots sequences of ctx_size positions each, and the scratch of one forward
 * step of at most n_batch tokens over all its sequences. ctx_size must be 1..the model's
 * context length; n_batch above n_slots * ctx_size is lowered to it. The model must outlive
 * the context. The caches hold this rank's KV heads in kv_type (keys after RoPE), head-major
 * per slot and layer: K and V each [n_slots][n_layers][n_kv_heads_local][ctx_size][head_dim],
 * so attention streams each head's rows contiguously. An allocation failure names the sizes
 * it asked for. */
ifn_status model_ctx_create(const model *m, int n_slots, int ctx_size, int n_batch, ifn_kv_type kv_type,
                            model_ctx **out);
void model_ctx_destroy(model_ctx *ctx);

/* Calibration: the inputs of the linear layers as a step computes them, [n_rows][n_cols] row
 * after row over the step's tokens (this rank's columns for ATTN_OUT and FFN_MID), and the
 * residual stream each layer hands to the next. */
typedef enum {
    MODEL_TAP_ATTN_IN,   /* normed input of Q, K, V */
    MODEL_TAP_ATTN_OUT,  /* attention output: input of O */
    MODEL_TAP_FFN_IN,    /* normed input of gate and up */
    MODEL_TAP_FFN_MID,   /* silu(gate) * up, or gelu(up + bias): input of down */
    MODEL_TAP_LAYER_OUT, /* the residual stream after the layer [n_rows][dim] (whole on every
                            rank): the next layer's input, for model_batch_eval_from */
} model_tap;
typedef void (*model_tap_fn)(void *user, int layer, model_tap tap, const float *x, int n_rows, int n_cols);

/* Calls fn at every tap of every step, in the order above within a layer. A step stops right
 * after tap last_tap of layer last_layer (no logits) unless last_layer >= n_layers. fn NULL
 * removes the tap. */
void model_ctx_set_tap(model_ctx *ctx, model_tap_fn fn, void *user, int last_layer, model_tap last_tap);

/* The batch size kept (n_batch, or n_slots * ctx_size if that is smaller). */
int model_ctx_n_batch(const model_ctx *ctx);
/* Bytes of this rank's K and V caches together, all slots. */
size_t model_ctx_kv_bytes(const model_ctx *ctx);
/* The bytes model_ctx_create allocates for these sizes (caches and step scratch), without
 * allocating: for checking that a context fits in memory before asking for it. */
size_t model_ctx_bytes(const model *m, int n_slots, int ctx_size, int n_batch, ifn_kv_type kv_type);

/* A slot is a ring of `window` positions (StreamingLLM): position p < n_keep (an attention
 * sink) lives in row p, position p >= n_keep in row n_keep + (p - n_keep + shift) mod
 * (window - n_keep). Dropping the oldest non-sink positions therefore moves no memory: the
 * caller advances shift by the number dropped, renumbers the later positions down by it, and
 * the step re-rotates their keys by that many positions back (shift-RoPE), which equals
 * having computed them at their new positions. window = ctx_size, n_keep = 0, shift = 0 is
 * the plain cache (row = position).
 *
 * One sequence's part of a batched step: n_tokens tokens at positions pos0..pos0+n_tokens-1
 * of a slot. The context does not track how much of a slot is filled: attention reads the
 * positions 0..pos0+n_tokens-1, so positions 0..pos0-1 must hold this sequence's earlier
 * entries (the caller's bookkeeping, e.g. engine_slot_len). Positions from pos0 on are
 * overwritten. */
typedef struct {
    int slot;              /* 0..n_slots-1, each slot at most once per step */
    int pos0;              /* 0..window-n_tokens */
    int n_tokens;          /* >= 1 */
    const int32_t *tokens; /* [n_tokens] */
    int n_out;             /* logits rows for the last n_out tokens, 0..n_tokens */
    int window;            /* the ring's positions, 1..ctx_size; 0 means ctx_size */
    int n_keep;            /* attention sinks, 0..window-1 */
    int shift;             /* the ring's rotation (after this step's discard), 0..window-n_keep-1 */
    int discard;           /* positions dropped just before this step: the keys of positions
                              n_keep..pos0-1 (numbered after the drop) turn back by discard
                              positions first; 0..window-n_keep */
} model_batch_seq;

/* What model_batch_eval checks before it starts: 1..n_slots sequences, each slot in range and
 * used once, n_tokens >= 1 with tokens given, the ring's window, n_keep, shift and discard in
 * their ranges, pos0 + n_tokens within the window, token ids in the vocabulary, at most
 * n_batch tokens in all, n_out in 0..n_tokens. The message names the
 * sequence and the field ("seqs[2].pos0 ..."); IFN_ERR_RANGE for a value outside its limits,
 * IFN_ERR_INVALID_ARG for a malformed step (no sequences, a slot used twice, no tokens). */
ifn_status model_batch_check(const model_ctx *ctx, const model_batch_seq *seqs, int n_seqs);

/* One forward step over n_seqs sequences: the linear layers see all their tokens at once, and
 * attention runs per sequence over its own slot. Writes this rank's logits for the output
 * rows, sequence after sequence: logits [sum of n_out][n_vocab] (n_vocab = model_vocab_slice's
 * n). Under tensor parallelism every rank must call it with the same step (the all-reduces
 * inside pair up across ranks).
 * A step that model_batch_check refuses changes nothing; so does a step that would run a layer
 * not loaded, or put out logits rows while the output head is not loaded (layers on demand:
 * IFN_ERR_INVALID_ARG, "layer 5 is not loaded (model loaded with layers on demand)"). A
 * failure after the step started (a kernel's error) leaves the slots' rows before pos0 as
 * they were and the rows from pos0 on undefined. */
ifn_status model_batch_eval(model_ctx *ctx, const model_batch_seq *seqs, int n_seqs, float *logits);

/* Calibration, layer by layer: model_batch_eval starting at layer first_layer from the
 * residual rows x [n][dim] (the step's n tokens in order, as MODEL_TAP_LAYER_OUT of layer
 * first_layer - 1 handed them out) instead of the embedding. The layers before first_layer do
 * not run, so their cache rows of this step's positions are not written (a discard still
 * re-rotates the kept keys of every layer); the tokens are checked, not read. From layer
 * first_layer on it computes, bit for bit, what a step from the embedding computes when its
 * layer first_layer - 1 puts out x. first_layer 0 with x NULL is model_batch_eval. Refused
 * (IFN_ERR_RANGE / INVALID_ARG, nothing changed): first_layer outside 0..n_layers-1, x NULL
 * with first_layer > 0, a tap whose last layer is before first_layer. */
ifn_status model_batch_eval_from(model_ctx *ctx, const model_batch_seq *seqs, int n_seqs, int first_layer,
                                 const float *x, float *logits);

#endif
