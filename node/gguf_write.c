#include "gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALIGNMENT 32

typedef struct {
    char *key;
    gguf_type type;
    unsigned char *value;
    size_t len;
} kv_entry;

typedef struct {
    char *name;
    uint32_t ggml_type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t nbytes;
    uint64_t offset; /* from the start of the data section */
    bool written;
} tensor_entry;

struct gguf_writer {
    char *path, *tmp;
    int fd;
    kv_entry *kvs;
    int n_kvs, cap_kvs;
    tensor_entry *tensors;
    int n_tensors, cap_tensors;
    uint64_t data_start;
    bool started;
};

static ifn_status io_error(const gguf_writer *w, const char *what)
{
    return ifn_error_set(IFN_ERR_IO, "%s: %s: %s", w->tmp, what, strerror(errno));
}

ifn_status gguf_writer_create(const char *path, gguf_writer **out)
{
    *out = NULL;
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a GGUF writer");
    w->fd = -1;
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    if (!w->path || !w->tmp) {
        gguf_writer_destroy(w);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for a GGUF writer");
    }
    sprintf(w->tmp, "%s.tmp", path);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        ifn_status s = ifn_error_set(IFN_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        gguf_writer_destroy(w);
        return s;
    }
    *out = w;
    return IFN_OK;
}

void gguf_writer_destroy(gguf_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    for (int i = 0; i < w->n_kvs; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].value);
    }
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w->path);
    free(w->tmp);
    free(w);
}

ifn_status gguf_writer_kv_raw(gguf_writer *w, const char *key, gguf_type type, const void *value, size_t len)
{
    if (w->started) return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: metadata '%s' after the data began", w->path, key);
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) return ifn_error_set(IFN_ERR_NOMEM, "no memory for metadata '%s'", key);
    memcpy(copy, value, len);
    for (int i = 0; i < w->n_kvs; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].value);
            w->kvs[i] = (kv_entry){ w->kvs[i].key, type, copy, len };
            return IFN_OK;
        }
    if (w->n_kvs == w->cap_kvs) {
        int cap = w->cap_kvs ? 2 * w->cap_kvs : 32;
        kv_entry *n = realloc(w->kvs, (size_t)cap * sizeof *n);
        if (!n) {
            free(copy);
            return ifn_error_set(IFN_ERR_NOMEM, "no memory for metadata '%s'", key);
        }
        w->kvs = n;
        w->cap_kvs = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(copy);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for metadata '%s'", key);
    }
    w->kvs[w->n_kvs++] = (kv_entry){ k, type, copy, len };
    return IFN_OK;
}

ifn_status gguf_writer_kv_str(gguf_writer *w, const char *key, const char *value)
{
    uint64_t n = strlen(value);
    unsigned char *buf = malloc(8 + n);
    if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "no memory for metadata '%s'", key);
    memcpy(buf, &n, 8);
    memcpy(buf + 8, value, n);
    ifn_status s = gguf_writer_kv_raw(w, key, GGUF_TYPE_STRING, buf, 8 + n);
    free(buf);
    return s;
}

ifn_status gguf_writer_kv_u32(gguf_writer *w, const char *key, uint32_t value)
{
    return gguf_writer_kv_raw(w, key, GGUF_TYPE_UINT32, &value, 4);
}

ifn_status gguf_writer_kv_f32(gguf_writer *w, const char *key, float value)
{
    return gguf_writer_kv_raw(w, key, GGUF_TYPE_FLOAT32, &value, 4);
}

ifn_status gguf_writer_kv_bool(gguf_writer *w, const char *key, bool value)
{
    uint8_t b = value;
    return gguf_writer_kv_raw(w, key, GGUF_TYPE_BOOL, &b, 1);
}

ifn_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, const char *const *skip, int n_skip)
{
    for (size_t i = 0; i < gguf_n_kv(src); i++) {
        gguf_str key;
        gguf_type type;
        const void *value;
        size_t len;
        gguf_kv_at(src, i, &key, &type, &value, &len);
        bool skipped = false;
        for (int j = 0; j < n_skip && !skipped; j++)
            skipped = key.len >= strlen(skip[j]) && memcmp(key.ptr, skip[j], strlen(skip[j])) == 0;
        if (skipped) continue;
        char name[512];
        if (key.len >= sizeof name)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: a metadata key of %zu bytes is too long to copy", gguf_file_path(src),
                                 key.len);
        memcpy(name, key.ptr, key.len);
        name[key.len] = '\0';
        CHECK(gguf_writer_kv_raw(w, name, type, value, len));
    }
    return IFN_OK;
}

static bool ggml_type_of(ifn_dtype t, uint32_t *out)
{
    switch (t) {
    case IFN_DTYPE_F32: *out = 0; return true;
    case IFN_DTYPE_F16: *out = 1; return true;
    case IFN_DTYPE_Q4_0: *out = 2; return true;
    case IFN_DTYPE_Q4_1: *out = 3; return true;
    case IFN_DTYPE_Q8_0: *out = 8; return true;
    case IFN_DTYPE_I8: case IFN_DTYPE_U4: *out = 24; return true;
    case IFN_DTYPE_I32: *out = 26; return true;
    case IFN_DTYPE_BF16: *out = 30; return true;
    default: return false;
    }
}

ifn_status gguf_writer_add_tensor(gguf_writer *w, const char *name, ifn_dtype t, int n_dims, const int64_t *ne,
                                  int *index)
{
    uint32_t gt;
    if (w->started) return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: tensor '%s' declared after the data began", w->path, name);
    if (!ggml_type_of(t, &gt))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s': type %s cannot be written", w->path, name,
                             ifn_dtype_name(t));
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || ne[0] % ifn_dtype_block_size(t) != 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: tensor '%s': %d dimensions, innermost %lld, type %s", w->path, name,
                             n_dims, (long long)ne[0], ifn_dtype_name(t));
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        tensor_entry *n = realloc(w->tensors, (size_t)cap * sizeof *n);
        if (!n) return ifn_error_set(IFN_ERR_NOMEM, "no memory for tensor '%s'", name);
        w->tensors = n;
        w->cap_tensors = cap;
    }
    tensor_entry *e = &w->tensors[w->n_tensors];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return ifn_error_set(IFN_ERR_NOMEM, "no memory for tensor '%s'", name);
    e->ggml_type = gt;
    e->n_dims = n_dims;
    size_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        e->ne[d] = ne[d];
        if (d) rows *= (size_t)ne[d];
    }
    if (t == IFN_DTYPE_U4) e->ne[0] = ne[0] / 2; /* stored as bytes */
    e->nbytes = ifn_dtype_row_bytes(t, ne[0]) * rows;
    *index = w->n_tensors++;
    return IFN_OK;
}

size_t gguf_writer_tensor_bytes(const gguf_writer *w, int index) { return w->tensors[index].nbytes; }

/* A growing byte buffer for the header. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
    bool failed;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static ifn_status write_all(gguf_writer *w, const void *data, size_t n, uint64_t offset)
{
    const unsigned char *p = data;
    while (n) {
        ssize_t got = pwrite(w->fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return io_error(w, "write failed");
        p += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return IFN_OK;
}

ifn_status gguf_writer_begin_data(gguf_writer *w)
{
    buf b = { 0 };
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)w->n_tensors);
    put_u64(&b, (uint64_t)w->n_kvs);
    for (int i = 0; i < w->n_kvs; i++) {
        put_str(&b, w->kvs[i].key);
        put_u32(&b, (uint32_t)w->kvs[i].type);
        put(&b, w->kvs[i].value, w->kvs[i].len);
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        tensor_entry *e = &w->tensors[i];
        put_str(&b, e->name);
        put_u32(&b, (uint32_t)e->n_dims);
        for (int d = 0; d < e->n_dims; d++) put_u64(&b, (uint64_t)e->ne[d]);
        put_u32(&b, e->ggml_type);
        put_u64(&b, offset);
        e->offset = offset;
        offset = (offset + e->nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }
    if (b.failed) {
        free(b.p);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the GGUF header of %s", w->path);
    }
    w->data_start = (b.n + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    ifn_status s = write_all(w, b.p, b.n, 0);
    free(b.p);
    CHECK(s);
    if (ftruncate(w->fd, (off_t)(w->data_start + offset)) != 0) return io_error(w, "cannot size the file");
    w->started = true;
    return IFN_OK;
}

ifn_status gguf_writer_tensor_data(gguf_writer *w, int index, const void *data, size_t nbytes)
{
    if (!w->started || index < 0 || index >= w->n_tensors)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: tensor %d written before the header or not declared", w->path, index);
    tensor_entry *e = &w->tensors[index];
    if (nbytes != e->nbytes)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: tensor '%s' is %zu bytes, %zu given", w->path, e->name, e->nbytes,
                             nbytes);
    CHECK(write_all(w, data, nbytes, w->data_start + e->offset));
    e->written = true;
    return IFN_OK;
}

ifn_status gguf_writer_finish(gguf_writer *w)
{
    if (!w->started) CHECK(gguf_writer_begin_data(w));
    for (int i = 0; i < w->n_tensors; i++)
        if (!w->tensors[i].written)
            return ifn_error_set(IFN_ERR_INTERNAL, "%s: tensor '%s' was declared but never written", w->path,
                                 w->tensors[i].name);
    if (fsync(w->fd) != 0) return io_error(w, "cannot flush");
    if (close(w->fd) != 0) {
        w->fd = -1;
        unlink(w->tmp);
        return io_error(w, "cannot close");
    }
    w->fd = -1;
    if (rename(w->tmp, w->path) != 0) {
        ifn_status s = ifn_error_set(IFN_ERR_IO, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
        unlink(w->tmp);
        return s;
    }
    return IFN_OK;
}
