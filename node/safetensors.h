/* One .safetensors file: an 8-byte little-endian header length, a JSON header mapping tensor
 * names to {dtype, shape, data_offsets}, then the data. Opening validates every entry: known
 * dtype (F32, F16, BF16; I32 for GPTQ's packed integers), byte range inside the data section
 * and consistent with the shape. */
#ifndef IFN_SAFETENSORS_H
#define IFN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

#define SAFETENSORS_MAX_DIMS 4

typedef struct {
    const char *name;
    ifn_dtype type;
    int n_dims;
    int64_t shape[SAFETENSORS_MAX_DIMS]; /* outer first, as the file writes it */
    const void *data;
    size_t nbytes;
} safetensors_tensor;

typedef struct safetensors_file safetensors_file;

ifn_status safetensors_open(const char *path, safetensors_file **out);
void safetensors_close(safetensors_file *f);
/* See mapped_file_release_pages. */
void safetensors_release_pages(const safetensors_file *f);
/* The pages of one of f's tensors only (mapped_file_release_range). */
void safetensors_release_tensor(const safetensors_file *f, const safetensors_tensor *t);

const char *safetensors_path(const safetensors_file *f);
size_t safetensors_n_tensors(const safetensors_file *f);
const safetensors_tensor *safetensors_tensor_at(const safetensors_file *f, size_t i);

#endif
