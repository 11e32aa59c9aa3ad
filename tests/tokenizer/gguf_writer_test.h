/* A minimal GGUF v3 writer for tests: metadata only, no tensors. Keys are added in order and
 * the file is written by gw_save. Values are whatever the test asks for, including wrong
 * types, which is the point. */
#ifndef IFN_GGUF_WRITER_TEST_H
#define IFN_GGUF_WRITER_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned char *buf;
    size_t len, cap;
    uint64_t n_kv;
} gguf_writer;

static inline void gw_bytes(gguf_writer *w, const void *p, size_t n)
{
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n) cap *= 2;
        w->buf = realloc(w->buf, cap);
        if (!w->buf) abort();
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static inline void gw_u32_raw(gguf_writer *w, uint32_t v) { gw_bytes(w, &v, 4); }
static inline void gw_u64_raw(gguf_writer *w, uint64_t v) { gw_bytes(w, &v, 8); }
static inline void gw_str_raw(gguf_writer *w, const char *s)
{
    gw_u64_raw(w, strlen(s));
    gw_bytes(w, s, strlen(s));
}

static inline void gw_key(gguf_writer *w, const char *key, uint32_t type)
{
    gw_str_raw(w, key);
    gw_u32_raw(w, type);
    w->n_kv++;
}

static inline void gw_str(gguf_writer *w, const char *key, const char *v)
{
    gw_key(w, key, 8);
    gw_str_raw(w, v);
}

static inline void gw_u32(gguf_writer *w, const char *key, uint32_t v)
{
    gw_key(w, key, 4);
    gw_u32_raw(w, v);
}

static inline void gw_i32(gguf_writer *w, const char *key, int32_t v)
{
    gw_key(w, key, 5);
    gw_bytes(w, &v, 4);
}

static inline void gw_bool(gguf_writer *w, const char *key, int v)
{
    gw_key(w, key, 7);
    unsigned char b = (unsigned char)(v != 0);
    gw_bytes(w, &b, 1);
}

static inline void gw_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n)
{
    gw_key(w, key, 9);
    gw_u32_raw(w, 8);
    gw_u64_raw(w, n);
    for (size_t i = 0; i < n; i++) gw_str_raw(w, v[i]);
}

static inline void gw_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n)
{
    gw_key(w, key, 9);
    gw_u32_raw(w, 6);
    gw_u64_raw(w, n);
    gw_bytes(w, v, 4 * n);
}

static inline void gw_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n)
{
    gw_key(w, key, 9);
    gw_u32_raw(w, 5);
    gw_u64_raw(w, n);
    gw_bytes(w, v, 4 * n);
}

/* Writes header + metadata to path and resets the writer; returns 0 on success. */
static inline int gw_save(gguf_writer *w, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint32_t magic = 0x46554747u, version = 3; /* "GGUF" little-endian */
    uint64_t n_tensors = 0;
    int ok = fwrite(&magic, 4, 1, f) == 1 && fwrite(&version, 4, 1, f) == 1 &&
             fwrite(&n_tensors, 8, 1, f) == 1 && fwrite(&w->n_kv, 8, 1, f) == 1 &&
             (w->len == 0 || fwrite(w->buf, w->len, 1, f) == 1);
    ok = fclose(f) == 0 && ok;
    free(w->buf);
    memset(w, 0, sizeof *w);
    return ok ? 0 : -1;
}

#endif
