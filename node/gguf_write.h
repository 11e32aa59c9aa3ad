/* GGUF v3 writer (the layout gguf.h reads). Metadata is collected in memory; tensors are
 * declared (name, type, shape) before any data, then their bytes are written in any order, so
 * a quantizer can produce one layer at a time without holding the whole model. The file is
 * written as PATH.tmp and renamed to PATH by gguf_writer_finish: an interrupted run never
 * leaves a half-written model under the final name. */
#ifndef IFN_GGUF_WRITE_H
#define IFN_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "gguf.h"
#include "status.h"

typedef struct gguf_writer gguf_writer;

ifn_status gguf_writer_create(const char *path, gguf_writer **out);
/* Removes PATH.tmp if finish was not reached; frees w. */
void gguf_writer_destroy(gguf_writer *w);

/* Metadata, in the order given. A key given twice keeps its last value. */
ifn_status gguf_writer_kv_raw(gguf_writer *w, const char *key, gguf_type type, const void *value, size_t len);
ifn_status gguf_writer_kv_str(gguf_writer *w, const char *key, const char *value);
ifn_status gguf_writer_kv_u32(gguf_writer *w, const char *key, uint32_t value);
ifn_status gguf_writer_kv_f32(gguf_writer *w, const char *key, float value);
ifn_status gguf_writer_kv_bool(gguf_writer *w, const char *key, bool value);
/* Every key of src except those starting with one of the n prefixes in skip. */
ifn_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, const char *const *skip, int n_skip);

/* Declares a tensor of type t (F32, F16, BF16, Q8_0, Q4_0, Q4_1, I8, I32; U4 is written as I8
 * with ne[0] halved) and shape ne (innermost first). Returns its index in *index. */
ifn_status gguf_writer_add_tensor(gguf_writer *w, const char *name, ifn_dtype t, int n_dims, const int64_t *ne,
                                  int *index);
/* After the last declaration: writes the header, the metadata and the tensor table. */
ifn_status gguf_writer_begin_data(gguf_writer *w);
/* The bytes of tensor `index` (exactly its size). */
ifn_status gguf_writer_tensor_data(gguf_writer *w, int index, const void *data, size_t nbytes);
/* Checks that every tensor was written, flushes and renames PATH.tmp to PATH. */
ifn_status gguf_writer_finish(gguf_writer *w);

/* Bytes of tensor `index` as declared. */
size_t gguf_writer_tensor_bytes(const gguf_writer *w, int index);

#endif
