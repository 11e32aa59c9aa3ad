/* GGUF v2/v3 reader over a memory map.
 *
 * Opening validates the whole header: every key/value, every tensor's name, shape, type and
 * that its bytes lie inside the file. Accessors then never read outside the mapping. Strings
 * returned are views into the mapping (not NUL-terminated); they live as long as the file. */
#ifndef IFN_GGUF_H
#define IFN_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} gguf_type;

typedef struct {
    const char *ptr; /* not NUL-terminated */
    size_t len;
} gguf_str;

/* An array value. For fixed-size element types `data` points at n packed little-endian
 * elements; for strings use gguf_arr_str(). Arrays of arrays are refused at open. */
typedef struct {
    gguf_type type;
    size_t n;
    const void *data;
    const uint64_t *str_offsets; /* strings only: offset of each string's length prefix */
    const unsigned char *base;
} gguf_arr;

#define GGUF_MAX_DIMS 4

typedef struct {
    const char *name;      /* NUL-terminated copy */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the innermost (contiguous) dimension; unused = 1 */
    ifn_dtype type;
    const void *data;      /* inside the mapping */
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Opens and validates path. Tensors of a type infernode does not read yet make the open fail
 * with IFN_ERR_UNSUPPORTED naming the tensor and the type. */
ifn_status gguf_file_open(const char *path, gguf_file **out);
void gguf_file_close(gguf_file *f);

const char *gguf_file_path(const gguf_file *f);
/* See mapped_file_release_pages. */
void gguf_file_release_pages(const gguf_file *f);

/* Metadata. Each getter returns IFN_ERR_NOT_FOUND if the key is absent and IFN_ERR_FORMAT if
 * it has an incompatible type (the message names the file, the key and both types). Integer
 * getters accept any integer type whose value fits. */
bool gguf_has_key(const gguf_file *f, const char *key);
ifn_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
ifn_status gguf_get_i32(const gguf_file *f, const char *key, int32_t *out);
ifn_status gguf_get_f32(const gguf_file *f, const char *key, float *out);
ifn_status gguf_get_bool(const gguf_file *f, const char *key, bool *out);
ifn_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
ifn_status gguf_get_arr(const gguf_file *f, const char *key, gguf_arr *out);
gguf_str gguf_arr_str(const gguf_arr *a, size_t i);

/* Every key in file order with its value as serialized (the bytes after the type; for arrays
 * the element type, the count and the elements), for copying metadata into another file. */
size_t gguf_n_kv(const gguf_file *f);
void gguf_kv_at(const gguf_file *f, size_t i, gguf_str *key, gguf_type *type, const void **value, size_t *value_len);

/* Tensors. */
size_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, size_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */

#endif
