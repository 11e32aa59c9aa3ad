#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#include "mapped_file.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_STRING (1u << 30)

typedef struct {
    gguf_str key;
    gguf_type type;
    const unsigned char *value; /* the value's bytes (for arrays: the element type) */
    size_t value_len;           /* bytes of the value as serialized */
    gguf_arr arr;               /* filled for GGUF_TYPE_ARRAY */
} gguf_kv;

struct gguf_file {
    char *path;
    mapped_file map;
    uint32_t version;
    gguf_kv *kvs;
    size_t n_kvs;
    gguf_tensor *tensors;
    size_t n_tensors;
};

/* A bounds-checked cursor over the mapping. Every read fails cleanly at the end of the file. */
typedef struct {
    const gguf_file *f;
    size_t pos;
    const char *what; /* which section is being read, for messages */
} cursor;

static ifn_status truncated(const cursor *c, size_t need)
{
    return ifn_error_set(IFN_ERR_FORMAT,
                         "%s: truncated GGUF file: %s needs %zu bytes at offset %zu, file has %zu",
                         c->f->path, c->what, need, c->pos, c->f->map.size);
}

static ifn_status take(cursor *c, size_t n, const unsigned char **p)
{
    if (n > c->f->map.size - c->pos) return truncated(c, n);
    *p = c->f->map.data + c->pos;
    c->pos += n;
    return IFN_OK;
}

static ifn_status read_u32(cursor *c, uint32_t *v)
{
    const unsigned char *p = NULL;
    CHECK(take(c, 4, &p));
    memcpy(v, p, 4);
    return IFN_OK;
}

static ifn_status read_u64(cursor *c, uint64_t *v)
{
    const unsigned char *p = NULL;
    CHECK(take(c, 8, &p));
    memcpy(v, p, 8);
    return IFN_OK;
}

static ifn_status read_str(cursor *c, gguf_str *s)
{
    uint64_t len;
    CHECK(read_u64(c, &len));
    if (len > GGUF_MAX_STRING)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s: string length %llu at offset %zu is implausible",
                             c->f->path, c->what, (unsigned long long)len, c->pos - 8);
    const unsigned char *p = NULL;
    CHECK(take(c, (size_t)len, &p));
    s->ptr = (const char *)p;
    s->len = (size_t)len;
    return IFN_OK;
}

static size_t scalar_size(gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    case GGUF_TYPE_STRING: case GGUF_TYPE_ARRAY: return 0;
    }
    return 0;
}

static const char *type_name(gguf_type t)
{
    static const char *const names[] = { "uint8", "int8", "uint16", "int16", "uint32", "int32",
                                         "float32", "bool", "string", "array", "uint64",
                                         "int64", "float64" };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static ifn_status read_value(cursor *c, gguf_kv *kv)
{
    uint32_t t;
    CHECK(read_u32(c, &t));
    if (t > GGUF_TYPE_FLOAT64)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: key '%.*s' has unknown value type %u", c->f->path,
                             (int)kv->key.len, kv->key.ptr, t);
    kv->type = (gguf_type)t;
    kv->value = c->f->map.data + c->pos;
    if (kv->type == GGUF_TYPE_STRING) {
        gguf_str s;
        return read_str(c, &s);
    }
    if (kv->type != GGUF_TYPE_ARRAY) {
        const unsigned char *p = NULL;
        return take(c, scalar_size(kv->type), &p);
    }
    uint32_t et;
    uint64_t n;
    CHECK(read_u32(c, &et));
    CHECK(read_u64(c, &n));
    if (et > GGUF_TYPE_FLOAT64 || et == GGUF_TYPE_ARRAY)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: key '%.*s' is an array of unsupported element type %u",
                             c->f->path, (int)kv->key.len, kv->key.ptr, et);
    kv->arr.type = (gguf_type)et;
    kv->arr.base = c->f->map.data;
    if (n > c->f->map.size) /* every element takes at least one byte */
        return truncated(c, (size_t)n);
    kv->arr.n = (size_t)n;
    kv->arr.data = c->f->map.data + c->pos;
    if (et != GGUF_TYPE_STRING) {
        const unsigned char *p = NULL;
        return take(c, (size_t)n * scalar_size(kv->arr.type), &p);
    }
    uint64_t *offs = malloc((n ? (size_t)n : 1) * sizeof *offs);
    if (!offs) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for %llu strings", c->f->path, (unsigned long long)n);
    kv->arr.str_offsets = offs;
    for (uint64_t i = 0; i < n; i++) {
        offs[i] = c->pos;
        gguf_str s;
        CHECK(read_str(c, &s));
    }
    return IFN_OK;
}

/* GGUF's ggml_type numbering for the types infernode reads. */
static ifn_status map_tensor_type(const gguf_file *f, const char *name, uint32_t t, ifn_dtype *out)
{
    switch (t) {
    case 0: *out = IFN_DTYPE_F32; return IFN_OK;
    case 1: *out = IFN_DTYPE_F16; return IFN_OK;
    case 2: *out = IFN_DTYPE_Q4_0; return IFN_OK;
    case 3: *out = IFN_DTYPE_Q4_1; return IFN_OK;
    case 6: *out = IFN_DTYPE_Q5_0; return IFN_OK;
    case 7: *out = IFN_DTYPE_Q5_1; return IFN_OK;
    case 8: *out = IFN_DTYPE_Q8_0; return IFN_OK;
    case 10: *out = IFN_DTYPE_Q2_K; return IFN_OK;
    case 11: *out = IFN_DTYPE_Q3_K; return IFN_OK;
    case 12: *out = IFN_DTYPE_Q4_K; return IFN_OK;
    case 13: *out = IFN_DTYPE_Q5_K; return IFN_OK;
    case 14: *out = IFN_DTYPE_Q6_K; return IFN_OK;
    case 20: *out = IFN_DTYPE_IQ4_NL; return IFN_OK;
    case 24: *out = IFN_DTYPE_I8; return IFN_OK;
    case 26: *out = IFN_DTYPE_I32; return IFN_OK;
    case 30: *out = IFN_DTYPE_BF16; return IFN_OK;
    default: break;
    }
    static const char *const known[] = { [4] = "Q4_2", [5] = "Q4_3", [9] = "Q8_1", [15] = "Q8_K",
                                         [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS",
                                         [19] = "IQ1_S", [21] = "IQ3_S", [22] = "IQ2_S", [23] = "IQ4_XS",
                                         [25] = "I16", [27] = "I64", [28] = "F64", [29] = "IQ1_M",
                                         [31] = "Q4_0_4_4", [32] = "Q4_0_4_8", [33] = "Q4_0_8_8",
                                         [34] = "TQ1_0", [35] = "TQ2_0", [36] = "IQ4_NL_4_4",
                                         [37] = "IQ4_NL_4_8", [38] = "IQ4_NL_8_8", [39] = "MXFP4" };
    const char *kn = t < sizeof known / sizeof known[0] ? known[t] : NULL;
    if (kn)
        return ifn_error_set(IFN_ERR_UNSUPPORTED,
                             "%s: tensor '%s' has GGUF type %s (%u), which infernode does not read "
                             "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, "
                             "Q4_K, Q5_K, Q6_K)", f->path, name, kn, t);
    return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' has unknown GGUF type id %u", f->path, name, t);
}

static ifn_status read_tensor_info(cursor *c, gguf_tensor *t, uint64_t *offset)
{
    gguf_str name = { NULL, 0 };
    CHECK(read_str(c, &name));
    t->name = strndup(name.ptr, name.len);
    if (!t->name) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", c->f->path);
    if (strlen(t->name) != name.len)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: a tensor name contains a NUL byte", c->f->path);
    uint32_t n_dims;
    CHECK(read_u32(c, &n_dims));
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (expected 1 to %d)",
                             c->f->path, t->name, n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    uint64_t n_elem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        CHECK(read_u64(c, &ne));
        if (ne == 0 || ne > (1ull << 40) || n_elem > (1ull << 48) / ne)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' dimension %u is %llu: implausible",
                                 c->f->path, t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        n_elem *= ne;
    }
    uint32_t type;
    CHECK(read_u32(c, &type));
    CHECK(map_tensor_type(c->f, t->name, type, &t->type));
    if (t->ne[0] % ifn_dtype_block_size(t->type) != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' of type %s has rows of %lld values, "
                             "not a multiple of its block size %d", c->f->path, t->name,
                             ifn_dtype_name(t->type), (long long)t->ne[0], ifn_dtype_block_size(t->type));
    t->nbytes = ifn_dtype_row_bytes(t->type, t->ne[0]) * (size_t)(n_elem / (uint64_t)t->ne[0]);
    return read_u64(c, offset);
}

typedef struct {
    uint64_t offset;
    size_t index;
} tensor_span;

static int by_offset(const void *a, const void *b)
{
    uint64_t x = ((const tensor_span *)a)->offset, y = ((const tensor_span *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Tensors whose bytes overlap mean a corrupt header: one of them would read another's data. */
static ifn_status check_overlaps(const gguf_file *f, const uint64_t *offsets)
{
    tensor_span *spans = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *spans);
    if (!spans) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", f->path);
    for (size_t i = 0; i < f->n_tensors; i++) spans[i] = (tensor_span){ offsets[i], i };
    qsort(spans, f->n_tensors, sizeof *spans, by_offset);
    ifn_status st = IFN_OK;
    for (size_t i = 0; i + 1 < f->n_tensors && st == IFN_OK; i++) {
        const gguf_tensor *a = &f->tensors[spans[i].index], *b = &f->tensors[spans[i + 1].index];
        if (spans[i].offset + a->nbytes > spans[i + 1].offset)
            st = ifn_error_set(IFN_ERR_FORMAT,
                               "%s: tensor '%s' (%s, %zu bytes at data offset %llu) overlaps tensor '%s' at %llu",
                               f->path, a->name, ifn_dtype_name(a->type), a->nbytes,
                               (unsigned long long)spans[i].offset, b->name,
                               (unsigned long long)spans[i + 1].offset);
    }
    free(spans);
    return st;
}

static ifn_status parse(gguf_file *f)
{
    cursor c = { .f = f, .pos = 0, .what = "header" };
    uint32_t magic;
    uint64_t n_tensors, n_kvs;
    CHECK(read_u32(&c, &magic));
    if (magic != GGUF_MAGIC)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: not a GGUF file (magic 0x%08x, expected 0x%08x \"GGUF\")",
                             f->path, magic, GGUF_MAGIC);
    CHECK(read_u32(&c, &f->version));
    if (f->version != 2 && f->version != 3)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: GGUF version %u (supported: 2 and 3)", f->path, f->version);
    CHECK(read_u64(&c, &n_tensors));
    CHECK(read_u64(&c, &n_kvs));
    /* Each key/value needs at least 12 bytes and each tensor info at least 24. */
    if (n_kvs > f->map.size / 12 || n_tensors > f->map.size / 24)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: header claims %llu tensors and %llu keys: more than the file can hold",
                             f->path, (unsigned long long)n_tensors, (unsigned long long)n_kvs);

    c.what = "metadata";
    f->kvs = calloc(n_kvs ? (size_t)n_kvs : 1, sizeof *f->kvs);
    if (!f->kvs) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for metadata", f->path);
    for (uint64_t i = 0; i < n_kvs; i++) {
        gguf_kv *kv = &f->kvs[i];
        f->n_kvs = (size_t)i + 1;
        CHECK(read_str(&c, &kv->key));
        CHECK(read_value(&c, kv));
        kv->value_len = (size_t)(f->map.data + c.pos - kv->value);
    }

    uint32_t alignment = GGUF_DEFAULT_ALIGNMENT;
    if (gguf_has_key(f, "general.alignment")) {
        CHECK(gguf_get_u32(f, "general.alignment", &alignment));
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: general.alignment is %u, not a power of two", f->path, alignment);
    }

    c.what = "tensor infos";
    f->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *f->tensors);
    uint64_t *offsets = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *offsets);
    ifn_status st = IFN_OK;
    if (!f->tensors || !offsets) {
        st = ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for tensor infos", f->path);
        goto done;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors = (size_t)i + 1;
        CHECK_GOTO(read_tensor_info(&c, &f->tensors[i], &offsets[i]), st, done);
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, f->tensors[i].name) == 0) {
                st = ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path, f->tensors[i].name);
                goto done;
            }
    }

    size_t data_start = (c.pos + alignment - 1) / alignment * alignment;
    for (size_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (offsets[i] % alignment != 0) {
            st = ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' offset %llu is not aligned to %u",
                               f->path, t->name, (unsigned long long)offsets[i], alignment);
            goto done;
        }
        if (data_start > f->map.size || offsets[i] > f->map.size - data_start ||
            t->nbytes > f->map.size - data_start - offsets[i]) {
            st = ifn_error_set(IFN_ERR_FORMAT,
                               "%s: truncated GGUF file: tensor '%s' needs bytes %llu..%llu of the data "
                               "section at offset %zu, file has %zu bytes",
                               f->path, t->name, (unsigned long long)offsets[i],
                               (unsigned long long)(offsets[i] + t->nbytes), data_start, f->map.size);
            goto done;
        }
        t->data = f->map.data + data_start + offsets[i];
    }
    CHECK_GOTO(check_overlaps(f, offsets), st, done);
done:
    free(offsets);
    return st;
}

ifn_status gguf_file_open(const char *path, gguf_file **out)
{
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", path);
    f->path = strdup(path);
    ifn_status st = f->path ? mapped_file_open(path, &f->map) : ifn_error_set(IFN_ERR_NOMEM, "no memory");
    if (st == IFN_OK) st = parse(f);
    if (st != IFN_OK) {
        gguf_file_close(f);
        return st;
    }
    *out = f;
    return IFN_OK;
}

void gguf_file_close(gguf_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_kvs; i++) free((void *)f->kvs[i].arr.str_offsets);
    for (size_t i = 0; i < f->n_tensors; i++) free((void *)f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    mapped_file_close(&f->map);
    free(f->path);
    free(f);
}

const char *gguf_file_path(const gguf_file *f) { return f->path; }
void gguf_file_release_pages(const gguf_file *f) { mapped_file_release_pages(&f->map); }

size_t gguf_n_kv(const gguf_file *f) { return f->n_kvs; }

void gguf_kv_at(const gguf_file *f, size_t i, gguf_str *key, gguf_type *type, const void **value, size_t *value_len)
{
    const gguf_kv *kv = &f->kvs[i];
    *key = kv->key;
    *type = kv->type;
    *value = kv->value;
    *value_len = kv->value_len;
}

static const gguf_kv *find_kv(const gguf_file *f, const char *key)
{
    size_t len = strlen(key);
    for (size_t i = 0; i < f->n_kvs; i++)
        if (f->kvs[i].key.len == len && memcmp(f->kvs[i].key.ptr, key, len) == 0) return &f->kvs[i];
    return NULL;
}

bool gguf_has_key(const gguf_file *f, const char *key) { return find_kv(f, key) != NULL; }

static ifn_status lookup(const gguf_file *f, const char *key, const gguf_kv **kv)
{
    *kv = find_kv(f, key);
    if (!*kv) return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: metadata key '%s' is missing", f->path, key);
    return IFN_OK;
}

static ifn_status wrong_type(const gguf_file *f, const char *key, gguf_type have, const char *want)
{
    return ifn_error_set(IFN_ERR_FORMAT, "%s: metadata key '%s' is a %s, expected %s", f->path, key,
                         type_name(have), want);
}

/* Reads any integer-typed value as int64 (uint64 above INT64_MAX is reported as out of range). */
static ifn_status get_int(const gguf_file *f, const char *key, int64_t *v, const char *want)
{
    const gguf_kv *kv;
    CHECK(lookup(f, key, &kv));
    const unsigned char *p = kv->value;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: *v = *p; return IFN_OK;
    case GGUF_TYPE_INT8: *v = (int8_t)*p; return IFN_OK;
    case GGUF_TYPE_UINT16: { uint16_t x; memcpy(&x, p, 2); *v = x; return IFN_OK; }
    case GGUF_TYPE_INT16: { int16_t x; memcpy(&x, p, 2); *v = x; return IFN_OK; }
    case GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, p, 4); *v = x; return IFN_OK; }
    case GGUF_TYPE_INT32: { int32_t x; memcpy(&x, p, 4); *v = x; return IFN_OK; }
    case GGUF_TYPE_INT64: memcpy(v, p, 8); return IFN_OK;
    case GGUF_TYPE_UINT64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > INT64_MAX) break;
        *v = (int64_t)x;
        return IFN_OK;
    }
    default: return wrong_type(f, key, kv->type, want);
    }
    return ifn_error_set(IFN_ERR_FORMAT, "%s: metadata key '%s' is out of range for %s", f->path, key, want);
}

ifn_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    int64_t v;
    CHECK(get_int(f, key, &v, "an unsigned 32-bit integer"));
    if (v < 0 || v > UINT32_MAX)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: metadata key '%s' is %lld, out of range for uint32",
                             f->path, key, (long long)v);
    *out = (uint32_t)v;
    return IFN_OK;
}

ifn_status gguf_get_i32(const gguf_file *f, const char *key, int32_t *out)
{
    int64_t v;
    CHECK(get_int(f, key, &v, "a 32-bit integer"));
    if (v < INT32_MIN || v > INT32_MAX)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: metadata key '%s' is %lld, out of range for int32",
                             f->path, key, (long long)v);
    *out = (int32_t)v;
    return IFN_OK;
}

ifn_status gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv;
    CHECK(lookup(f, key, &kv));
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->value, 4);
        return IFN_OK;
    }
    if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->value, 8);
        *out = (float)d;
        return IFN_OK;
    }
    int64_t v;
    if (scalar_size(kv->type) && kv->type != GGUF_TYPE_BOOL && get_int(f, key, &v, "a number") == IFN_OK) {
        *out = (float)v;
        return IFN_OK;
    }
    return wrong_type(f, key, kv->type, "a float32");
}

ifn_status gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv;
    CHECK(lookup(f, key, &kv));
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(f, key, kv->type, "a bool");
    *out = kv->value[0] != 0;
    return IFN_OK;
}

ifn_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv;
    CHECK(lookup(f, key, &kv));
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(f, key, kv->type, "a string");
    uint64_t len;
    memcpy(&len, kv->value, 8);
    out->ptr = (const char *)kv->value + 8;
    out->len = (size_t)len;
    return IFN_OK;
}

ifn_status gguf_get_arr(const gguf_file *f, const char *key, gguf_arr *out)
{
    const gguf_kv *kv;
    CHECK(lookup(f, key, &kv));
    if (kv->type != GGUF_TYPE_ARRAY) return wrong_type(f, key, kv->type, "an array");
    *out = kv->arr;
    return IFN_OK;
}

gguf_str gguf_arr_str(const gguf_arr *a, size_t i)
{
    gguf_str s = { "", 0 };
    if (a->type != GGUF_TYPE_STRING || i >= a->n) return s;
    const unsigned char *p = a->base + a->str_offsets[i];
    uint64_t len;
    memcpy(&len, p, 8);
    s.ptr = (const char *)p + 8;
    s.len = (size_t)len;
    return s;
}

size_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, size_t i) { return i < f->n_tensors ? &f->tensors[i] : NULL; }

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}
