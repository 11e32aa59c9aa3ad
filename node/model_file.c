#include "model_file_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool has_gguf_magic(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    char magic[4] = { 0 };
    size_t got = fread(magic, 1, 4, fp);
    fclose(fp);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* Limits far above any real model, so that a corrupt header cannot ask for absurd memory. */
static ifn_status validate_config(const model_file *mf)
{
    const model_config *c = &mf->cfg;
    struct { const char *name; long v, max; } f[] = {
        { "layer count", c->n_layers, 1024 },     { "hidden size", c->dim, 1 << 17 },
        { "head count", c->n_heads, 4096 },       { "KV head count", c->n_kv_heads, 4096 },
        { "head dim", c->head_dim, 4096 },        { "FFN size", c->ffn_dim, 1 << 20 },
        { "vocab size", c->vocab_size, 1 << 24 }, { "context length", c->ctx_len, 1 << 24 },
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < 1 || f[i].v > f[i].max)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s is %ld (expected 1 to %ld)", mf->path, f[i].name,
                                 f[i].v, f[i].max);
    if (c->n_heads % c->n_kv_heads != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %d attention heads are not a multiple of %d KV heads",
                             mf->path, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: head dim %d is odd; RoPE needs pairs", mf->path, c->head_dim);
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f) || c->norm_eps > 1.0f)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: rope theta %g or norm epsilon %g out of range", mf->path,
                             c->rope_theta, c->norm_eps);
    return IFN_OK;
}

ifn_status model_file_open(const char *path, model_file **out)
{
    *out = NULL;
    model_file *mf = calloc(1, sizeof *mf);
    if (!mf || !(mf->path = strdup(path))) {
        free(mf);
        return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", path);
    }
    struct stat st;
    ifn_status s;
    if (stat(path, &st) != 0) {
        s = ifn_error_set(IFN_ERR_IO, "%s: no such file or directory", path);
    } else if (S_ISDIR(st.st_mode)) {
        mf->format = MODEL_FORMAT_HF;
        s = model_file_open_hf(mf);
    } else if (ends_with(path, ".gguf") || has_gguf_magic(path)) {
        mf->format = MODEL_FORMAT_GGUF;
        s = model_file_open_gguf(mf);
    } else {
        mf->format = MODEL_FORMAT_LLAMA2C;
        s = model_file_open_llama2c(mf);
    }
    if (s == IFN_OK) s = validate_config(mf);
    if (s != IFN_OK) {
        model_file_close(mf);
        return s;
    }
    *out = mf;
    return IFN_OK;
}

void model_file_close(model_file *mf)
{
    if (!mf) return;
    for (size_t i = 0; i < mf->n_tensors; i++) {
        free(mf->tensors[i].name);
        free(mf->tensors[i].file_name);
    }
    free(mf->tensors);
    for (size_t i = 0; i < mf->n_shards; i++) safetensors_close(mf->shards[i]);
    free(mf->shards);
    gguf_file_close(mf->gguf);
    mapped_file_close(&mf->map);
    free(mf->path);
    free(mf);
}

const char *model_file_path(const model_file *mf) { return mf->path; }
model_format model_file_format(const model_file *mf) { return mf->format; }
const model_config *model_file_config(const model_file *mf) { return &mf->cfg; }
const gguf_file *model_file_gguf(const model_file *mf) { return mf->gguf; }

void model_file_release_pages(const model_file *mf)
{
    if (mf->gguf) gguf_file_release_pages(mf->gguf);
    for (size_t i = 0; i < mf->n_shards; i++) safetensors_release_pages(mf->shards[i]);
    mapped_file_release_pages(&mf->map);
}

ifn_status model_file_add_tensor(model_file *mf, const char *name, const char *file_name,
                                 const tensor_view *view)
{
    if (mf->n_tensors == mf->cap_tensors) {
        size_t nc = mf->cap_tensors ? mf->cap_tensors * 2 : 64;
        named_tensor *nt = realloc(mf->tensors, nc * sizeof *nt);
        if (!nt) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for the tensor table", mf->path);
        mf->tensors = nt;
        mf->cap_tensors = nc;
    }
    named_tensor *t = &mf->tensors[mf->n_tensors];
    t->name = strdup(name);
    t->file_name = strdup(file_name);
    t->view = *view;
    if (!t->name || !t->file_name) {
        free(t->name);
        free(t->file_name);
        return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for the tensor table", mf->path);
    }
    mf->n_tensors++;
    return IFN_OK;
}

static const named_tensor *find(const model_file *mf, const char *name)
{
    for (size_t i = 0; i < mf->n_tensors; i++)
        if (strcmp(mf->tensors[i].name, name) == 0) return &mf->tensors[i];
    return NULL;
}

bool model_file_has_tensor(const model_file *mf, const char *name) { return find(mf, name) != NULL; }

static void format_shape(char *buf, size_t cap, int n_dims, const int64_t *ne)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int d = n_dims - 1; d >= 0 && o < cap; d--)
        o += (size_t)snprintf(buf + o, cap - o, "%lld%s", (long long)ne[d], d ? ", " : "]");
}

ifn_status model_file_tensor(const model_file *mf, const char *name, int n_dims, const int64_t *ne,
                             tensor_view *out)
{
    const named_tensor *t = find(mf, name);
    if (!t) {
        char file_name[256];
        if (mf->format == MODEL_FORMAT_HF) model_file_hf_name(name, file_name, sizeof file_name);
        else snprintf(file_name, sizeof file_name, "%s", name);
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: tensor '%s' is missing", mf->path, file_name);
    }
    bool ok = t->view.n_dims == n_dims;
    for (int d = 0; ok && d < n_dims; d++) ok = t->view.ne[d] == ne[d];
    if (!ok) {
        char want[96], have[96];
        format_shape(want, sizeof want, n_dims, ne);
        format_shape(have, sizeof have, t->view.n_dims, t->view.ne);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s (outer first)",
                             mf->path, t->file_name, have, want);
    }
    *out = t->view;
    return IFN_OK;
}
