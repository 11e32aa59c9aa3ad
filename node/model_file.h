/* A model file, whatever its format: GGUF, a Hugging Face directory (config.json +
 * safetensors, single or sharded, or a GPTQ checkpoint) or a llama2.c checkpoint. It gives the
 * architecture's hyper-parameters and zero-copy views of tensors by their canonical (GGUF)
 * names; nothing is read until a tensor's bytes are touched, so a rank that loads only its
 * slices reads only those pages. A GPTQ layer is the exception: its layout differs from the
 * kernels' (model_file_weight), so reading it converts the whole layer into memory the caller
 * owns and frees after taking its slice; open only checks it, so a loader that frees each
 * layer once packed holds at most one converted layer at a time. */
#ifndef IFN_MODEL_FILE_H
#define IFN_MODEL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "gguf.h"
#include "ops.h"
#include "status.h"
#include "weight.h"

typedef enum { MODEL_FORMAT_GGUF, MODEL_FORMAT_HF, MODEL_FORMAT_LLAMA2C } model_format;

/* The per-architecture choices of the forward pass, made at load (the zero values are Llama's). */
typedef enum {
    MODEL_NORM_RMS,   /* RMSNorm, weight only (Llama) */
    MODEL_NORM_LAYER, /* LayerNorm with weight and bias (GPT-BigCode) */
} model_norm_kind;

typedef enum {
    MODEL_FFN_SILU_GATED, /* down(silu(gate(x)) * up(x)) (Llama) */
    MODEL_FFN_GELU,       /* down(gelu(up(x))), no gate (GPT-BigCode: c_fc, c_proj) */
} model_ffn_kind;

typedef enum {
    MODEL_POS_ROPE,    /* rotary embeddings on Q and K (Llama) */
    MODEL_POS_LEARNED, /* absolute position embeddings added to the token embedding
                          ("position_embd.weight" [ctx_len][dim]; GPT-BigCode) */
} model_pos_kind;

typedef struct {
    char arch[32];      /* "llama" or "starcoder" (GPT-BigCode) */
    int n_layers;
    int dim;            /* residual stream width */
    int n_heads;
    int n_kv_heads;
    int head_dim;       /* may differ from dim / n_heads */
    int ffn_dim;
    int vocab_size;
    int ctx_len;        /* the context the model was trained for */
    float rope_theta;
    float norm_eps;
    ifn_rope_layout rope_layout; /* how this file's Q/K rows pair up for RoPE */
    ifn_rope_scaling rope_scaling; /* kind NONE: plain RoPE (docs/formats.md, "RoPE scaling") */
    bool rope_freqs_tensor; /* GGUF "rope_freqs.weight" [head_dim / 2] divides the base frequencies */
    bool tied_output;   /* output head shares the token embedding */
    model_norm_kind norm;
    model_ffn_kind ffn;
    ifn_gelu_kind gelu; /* MODEL_FFN_GELU's flavour */
    model_pos_kind pos;
    bool biases;        /* every linear layer has a bias ("<base>.bias" beside "<base>.weight"; for Q, K
                           and V the fused attn_qkv.bias, so biases go with qkv_fused) */
    bool qkv_fused;     /* Q, K and V are one tensor, blk.N.attn_qkv (with biases, attn_qkv.bias) */
} model_config;

/* A tensor's bytes inside a mapped file. ne[0] is the innermost (contiguous) dimension, so a
 * weight of a linear layer with `in` inputs and `out` outputs has ne = { in, out }. */
typedef struct {
    ifn_dtype type;
    int n_dims;
    int64_t ne[4];
    const void *data;
    size_t nbytes;
} tensor_view;

typedef struct model_file model_file;

/* Opens path: a directory is a Hugging Face model; a file is GGUF by its magic, otherwise a
 * llama2.c checkpoint if its header is consistent with its size. Errors name the file and
 * what was expected. The whole config is validated here. */
ifn_status model_file_open(const char *path, model_file **out);
void model_file_close(model_file *mf);

const char *model_file_path(const model_file *mf);
model_format model_file_format(const model_file *mf);
const model_config *model_file_config(const model_file *mf);

/* The GGUF file behind mf, or NULL for other formats (for its tokenizer metadata). */
const gguf_file *model_file_gguf(const model_file *mf);

/* Looks up a tensor by canonical name (e.g. "blk.3.attn_q.weight") and checks that it has
 * exactly n_dims dimensions of sizes ne (innermost first). Errors name the file, the tensor as
 * the file calls it, and the expected and actual shapes. */
ifn_status model_file_tensor(const model_file *mf, const char *name, int n_dims, const int64_t *ne,
                             tensor_view *out);

/* The weight of a linear layer by canonical name ("blk.3.attn_q.weight"), with `in` inputs and
 * `out` outputs: a plain tensor of shape {in, out}, or, when the file has "<base>.scales"
 * beside "<base>.weight", integer values with their companions (the quantized layout that
 * `infernode quantize` writes; docs/quantization.md, "Quantized GGUF layout"):
 *   <base>.weight     i8 {in, out}: W8 values; or i8 {in/2, out} / u4 {in, out}: W4 nibbles
 *   <base>.scales     f32/f16/bf16 {n_groups, out}; group = in / n_groups (1 group: per row)
 *   <base>.zeros      i8 {n_groups, out}, optional (W4): zero points 0..15, else 8
 *   <base>.perm       i32 {in}, optional: act-order, stored column j is input perm[j]
 *   <base>.act_scale  f32 {1}, optional: static int8 activation scale (SmoothQuant)
 * Everything is checked (shapes, types, groups, zero points, the permutation); errors name the
 * file and the tensor. *owned is NULL when w points into the file's mapping; for a layer of a
 * GPTQ checkpoint it is the one buffer that w's values, scales, zero points and permutation
 * were converted into (u4, as above), which the caller frees when done with w. On failure
 * *owned is NULL. */
ifn_status model_file_weight(const model_file *mf, const char *name, int64_t in, int64_t out, ifn_weight *w,
                             void **owned);

/* What model_file_weight would give for the same arguments, from the file's metadata alone
 * (nothing is converted; only a SmoothQuant act_scale is read): the values' type and the
 * inputs per scale (0: no scales, or one per row). The same checks of names and shapes. */
ifn_status model_file_weight_kind(const model_file *mf, const char *name, int64_t in, int64_t out, ifn_dtype *type,
                                  int *group);

/* Drops the file pages read so far from the resident set (after packing; see
 * mapped_file_release_pages). Views stay valid. */
void model_file_release_pages(const model_file *mf);

/* True if the file holds a tensor by that canonical name. */
bool model_file_has_tensor(const model_file *mf, const char *name);

#endif
