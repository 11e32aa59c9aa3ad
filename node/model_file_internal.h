/* Shared between model_file.c and the per-format openers; not a public header. */
#ifndef IFN_MODEL_FILE_INTERNAL_H
#define IFN_MODEL_FILE_INTERNAL_H

#include "json.h"
#include "mapped_file.h"
#include "model_file.h"
#include "safetensors.h"

/* A GPTQ linear layer, checked at open and converted when read (model_file_gptq.c). */
typedef struct gptq_layer gptq_layer;

typedef struct {
    char *name;      /* canonical (GGUF) name */
    char *file_name; /* what the file calls it, for messages */
    tensor_view view;
} named_tensor;

struct model_file {
    char *path;
    model_format format;
    model_config cfg;
    gguf_file *gguf;           /* GGUF */
    safetensors_file **shards; /* Hugging Face */
    size_t n_shards;
    mapped_file map;           /* llama2.c */
    named_tensor *tensors;
    size_t n_tensors, cap_tensors;
    gptq_layer *gptq;          /* [n_gptq] a GPTQ checkpoint's linear layers, not in the table */
    size_t n_gptq;
};

/* Each opener fills mf->cfg (except what model_file.c derives) and the tensor table. */
ifn_status model_file_open_gguf(model_file *mf);
ifn_status model_file_open_hf(model_file *mf);
ifn_status model_file_open_llama2c(model_file *mf);

/* The Hugging Face name of a canonical tensor name in mf's architecture (for messages about
 * missing tensors). */
void model_file_hf_name(const model_file *mf, const char *canonical, char *buf, size_t cap);
/* The canonical name of a Hugging Face tensor name (Llama's "model.layers.N." or GPT-BigCode's
 * "transformer.h.N." names); false for tensors infernode does not use. */
bool model_file_hf_canonical(const char *hf, char *buf, size_t cap);

/* A GPTQ checkpoint's quantization config (model_file_gptq.c). */
typedef struct {
    bool on;              /* the directory holds a GPTQ checkpoint */
    int group_size;       /* inputs per group, or -1: one group per row */
    bool desc_act;        /* act-order: every layer must then have its g_idx */
    int zero_offset;      /* zero point = stored value + zero_offset: 1 ("gptq"), 0 ("gptq_v2") */
    char file_base[256];  /* quantize_config.json's model_file_base_name, or "" */
    char source[4096];    /* the file the config came from, for messages */
} gptq_config;

/* Reads config.json's "quantization_config" (config is its parsed tree, config_path its path)
 * or, when it has none, quantize_config.json beside it. q->on is false when neither is there;
 * a quant_method other than "gptq" or a config infernode cannot run is an error naming the
 * file and the field. */
ifn_status model_file_gptq_config(const model_file *mf, const json_value *config, const char *config_path,
                                  gptq_config *q);

/* Checks every GPTQ linear layer of the opened shards (<prefix>.qweight with its .qzeros,
 * .scales, .g_idx: shapes, types, groups, zero points, g_idx) and records it in mf->gptq; nothing
 * is converted and the pages read for the checks are released. q->on false: refuses a
 * directory that has GPTQ tensors anyway (its config does not say how to read them). */
ifn_status model_file_gptq_register(model_file *mf, const gptq_config *q);

/* The GPTQ layer of a canonical weight name ("blk.3.attn_q.weight"), or NULL. */
const gptq_layer *model_file_gptq_find(const model_file *mf, const char *canonical);

/* L as model_file_weight gives it (model_file.h): converted into one buffer, *owned, that the
 * caller frees; the layer's checkpoint pages are released after. in and out must be L's. */
ifn_status model_file_gptq_weight(const gptq_layer *L, int64_t in, int64_t out, ifn_weight *w, void **owned);

/* model_file_weight_kind (model_file.h) of L, from what open recorded. */
ifn_status model_file_gptq_kind(const gptq_layer *L, int64_t in, int64_t out, ifn_dtype *type, int *group);

/* One RoPE scaling key as a loader found it: name is the key without the format's prefix
 * (config.json's rope_scaling member, or what follows "<arch>.rope.scaling." in GGUF), file_key
 * the key as the file spells it (for messages), and its value: str for a string, else num
 * (booleans 0/1). */
typedef struct {
    const char *name;
    const char *file_key;
    const char *str;
    double num;
} rope_scaling_key;

/* The one rule of both loaders: fills mf->cfg.rope_scaling from keys (mf->cfg.ctx_len is the
 * default original context). gguf selects the GGUF meanings (an absent type with a factor is
 * linear, as llama.cpp reads it; attn_factor multiplies YaRN's own). A type, key or value that
 * changes the math and is not implemented is IFN_ERR_UNSUPPORTED naming the file, the key and
 * the value; keys that do not apply to the type are ignored. */
ifn_status model_file_rope_scaling(model_file *mf, const rope_scaling_key *keys, size_t n, bool gguf);

/* Adds a tensor to the table (names are copied). */
ifn_status model_file_add_tensor(model_file *mf, const char *name, const char *file_name,
                                 const tensor_view *view);

#endif
