/* Shared between model_file.c and the per-format openers; not a public header. */
#ifndef IFN_MODEL_FILE_INTERNAL_H
#define IFN_MODEL_FILE_INTERNAL_H

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
};

/* Each opener fills mf->cfg (except what model_file.c derives) and the tensor table. */
ifn_status model_file_open_gguf(model_file *mf);
ifn_status model_file_open_hf(model_file *mf);
ifn_status model_file_open_llama2c(model_file *mf);

/* The Hugging Face name of a canonical tensor name (for messages about missing tensors). */
void model_file_hf_name(const char *canonical, char *buf, size_t cap);

/* Adds a tensor to the table (names are copied). */
ifn_status model_file_add_tensor(model_file *mf, const char *name, const char *file_name,
                                 const tensor_view *view);

#endif
