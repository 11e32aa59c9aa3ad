#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "mapped_file.h"

struct safetensors_file {
    char *path;
    mapped_file map;
    json_value *header;
    safetensors_tensor *tensors;
    size_t n_tensors;
};

static ifn_status parse_dtype(const char *path, const char *name, const char *s, ifn_dtype *out)
{
    if (strcmp(s, "F32") == 0) *out = IFN_DTYPE_F32;
    else if (strcmp(s, "F16") == 0) *out = IFN_DTYPE_F16;
    else if (strcmp(s, "BF16") == 0) *out = IFN_DTYPE_BF16;
    else if (strcmp(s, "I32") == 0) *out = IFN_DTYPE_I32;
    else
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype '%s' (supported: F32, F16, BF16, I32)",
                             path, name, s);
    return IFN_OK;
}

static ifn_status parse_entry(safetensors_file *f, const json_member *m, size_t data_start, safetensors_tensor *t)
{
    const char *name = m->key;
    t->name = name;
    const char *dtype = json_get_string(&m->value, "dtype");
    const json_value *shape = json_get(&m->value, "shape");
    const json_value *offs = json_get(&m->value, "data_offsets");
    if (!dtype || !shape || shape->kind != JSON_ARRAY || !offs || offs->kind != JSON_ARRAY || offs->u.array.n != 2)
        return ifn_error_set(IFN_ERR_FORMAT,
                             "%s: tensor '%s' needs \"dtype\" (string), \"shape\" (array) and "
                             "\"data_offsets\" (two numbers) in the header", f->path, name);
    CHECK(parse_dtype(f->path, name, dtype, &t->type));
    if (shape->u.array.n > SAFETENSORS_MAX_DIMS)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s' has %zu dimensions (at most %d)", f->path,
                             name, shape->u.array.n, SAFETENSORS_MAX_DIMS);
    t->n_dims = (int)shape->u.array.n;
    double n_elem = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (!json_integer(&shape->u.array.items[d], 0, 1000000000000, &t->shape[d]))
            return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' dimension %d is not a valid size", f->path, name, d);
        n_elem *= (double)t->shape[d];
    }
    const json_value *jb = &offs->u.array.items[0], *je = &offs->u.array.items[1];
    int64_t b, e;
    size_t data_size = f->map.size - data_start;
    if (!json_integer(jb, 0, INT64_MAX, &b) || !json_integer(je, b, INT64_MAX, &e) || (uint64_t)e > data_size)
        return ifn_error_set(IFN_ERR_FORMAT,
                             "%s: tensor '%s' data_offsets [%.0f, %.0f] lie outside the data section of %zu bytes",
                             f->path, name, jb->kind == JSON_NUMBER ? jb->u.number : -1,
                             je->kind == JSON_NUMBER ? je->u.number : -1, data_size);
    double want = n_elem * (double)ifn_dtype_block_bytes(t->type);
    if ((double)(e - b) != want)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' has %lld bytes, its shape and dtype need %.0f",
                             f->path, name, (long long)(e - b), want);
    t->data = f->map.data + data_start + (size_t)b;
    t->nbytes = (size_t)(e - b);
    return IFN_OK;
}

static ifn_status parse(safetensors_file *f)
{
    uint64_t hlen;
    if (f->map.size < 8)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: truncated safetensors file: %zu bytes, the header length alone needs 8",
                             f->path, f->map.size);
    memcpy(&hlen, f->map.data, 8);
    if (hlen > f->map.size - 8)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: safetensors header length %llu runs past the end of the file (%zu bytes)",
                             f->path, (unsigned long long)hlen, f->map.size);
    CHECK(json_parse((const char *)f->map.data + 8, (size_t)hlen, f->path, &f->header));
    if (f->header->kind != JSON_OBJECT)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: safetensors header is a JSON %s, expected an object", f->path,
                             json_kind_name(f->header->kind));
    size_t n = f->header->u.object.n;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", f->path);
    for (size_t i = 0; i < n; i++) {
        const json_member *m = &f->header->u.object.members[i];
        if (strcmp(m->key, "__metadata__") == 0) continue;
        CHECK(parse_entry(f, m, 8 + (size_t)hlen, &f->tensors[f->n_tensors]));
        f->n_tensors++;
    }
    return IFN_OK;
}

ifn_status safetensors_open(const char *path, safetensors_file **out)
{
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", path);
    }
    ifn_status s = mapped_file_open(path, &f->map);
    if (s == IFN_OK) s = parse(f);
    if (s != IFN_OK) {
        safetensors_close(f);
        return s;
    }
    *out = f;
    return IFN_OK;
}

void safetensors_close(safetensors_file *f)
{
    if (!f) return;
    free(f->tensors);
    json_free(f->header);
    mapped_file_close(&f->map);
    free(f->path);
    free(f);
}

const char *safetensors_path(const safetensors_file *f) { return f->path; }

size_t safetensors_n_tensors(const safetensors_file *f) { return f->n_tensors; }

void safetensors_release_pages(const safetensors_file *f) { mapped_file_release_pages(&f->map); }

void safetensors_release_tensor(const safetensors_file *f, const safetensors_tensor *t)
{
    mapped_file_release_range(&f->map, t->data, t->nbytes);
}

const safetensors_tensor *safetensors_tensor_at(const safetensors_file *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}
