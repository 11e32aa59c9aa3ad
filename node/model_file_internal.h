/* Shared between model_file.c and the per-format openers; not a public header. */
#ifndef IFN_MODEL_FILE_INTERNAL_H
#define IFN_MODEL_FILE_INTERNAL_H

#include "json.h"
#include "mapped_file.h"
#include "model_file.h"
#include "safetensors.h"

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
    void **owned;              /* buffers of tensors made at open (imported GPTQ weights) */
    size_t n_owned;
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

/* Converts every GPTQ linear layer of the opened shards (<prefix>.qweight with its .qzeros,
 * .scales, .g_idx) into canonical quantized tensors owned by mf. q->on false: refuses a
 * directory that has GPTQ tensors anyway (its config does not say how to read them). */
ifn_status model_file_gptq_import(model_file *mf, const gptq_config *q);

/* Adds a tensor to the table (names are copied). */
ifn_status model_file_add_tensor(model_file *mf, const char *name, const char *file_name,
                                 const tensor_view *view);

/* A zeroed buffer that lives as long as mf, for tensors made at open; NULL with the error set
 * (naming `what`) when there is no memory. */
void *model_file_alloc(model_file *mf, size_t bytes, const char *what);

#endif
