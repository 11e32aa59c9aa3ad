#include "model_file_internal.h"

#include <math.h>
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
    if (c->pos == MODEL_POS_ROPE && c->head_dim % 2 != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: head dim %d is odd; RoPE needs pairs", mf->path, c->head_dim);
    if ((c->pos == MODEL_POS_ROPE && !(c->rope_theta > 0.0f)) || !(c->norm_eps > 0.0f) || c->norm_eps > 1.0f)
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
    free(mf->gptq);
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

bool model_file_has_tensor(const model_file *mf, const char *name)
{
    return find(mf, name) != NULL || model_file_gptq_find(mf, name) != NULL;
}

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
    if (!t && model_file_gptq_find(mf, name))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s' is a GPTQ layer; it is read as a weight "
                             "(model_file_weight), not as a tensor", mf->path, name);
    if (!t) {
        char file_name[256];
        if (mf->format == MODEL_FORMAT_HF) model_file_hf_name(mf, name, file_name, sizeof file_name);
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

/* "<base>.<suffix>" for a weight named "<base>.weight". */
static void companion(const char *name, const char *suffix, char *buf, size_t cap)
{
    size_t n = strlen(name);
    if (ends_with(name, ".weight")) n -= strlen(".weight");
    snprintf(buf, cap, "%.*s.%s", (int)n, name, suffix);
}

/* The optional companion "<base>.<suffix>" of weight name: *data NULL when absent, else its
 * data after checking its shape and that its type is `type` (else "FILE: WHAT 'NAME' IS
 * TYPE, expected TYPE", `is` being "is" or "are" as WHAT needs). */
static ifn_status optional_companion(const model_file *mf, const char *name, const char *suffix, int n_dims,
                                     const int64_t *ne, ifn_dtype type, const char *what, const char *is,
                                     const void **data)
{
    char cname[256];
    companion(name, suffix, cname, sizeof cname);
    *data = NULL;
    if (!model_file_has_tensor(mf, cname)) return IFN_OK;
    tensor_view v;
    CHECK(model_file_tensor(mf, cname, n_dims, ne, &v));
    if (v.type != type)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s '%s' %s %s, expected %s", mf->path, what, cname, is,
                             ifn_dtype_name(v.type), ifn_dtype_name(type));
    *data = v.data;
    return IFN_OK;
}

/* model_file_weight of a tensor in the table: w's views into the mapping, checked for shape and
 * type; *values is the tensor of the values. Their contents are model_file_weight's to check. */
static ifn_status weight_views(const model_file *mf, const char *name, int64_t in, int64_t out, ifn_weight *w,
                               const named_tensor **values)
{
    char sname[256];
    companion(name, "scales", sname, sizeof sname);
    tensor_view v;
    if (!model_file_has_tensor(mf, sname)) {
        int64_t ne[2] = { in, out };
        CHECK(model_file_tensor(mf, name, 2, ne, &v));
        *w = (ifn_weight){ .type = v.type, .n_out = out, .n_in = in, .data = v.data };
        *values = find(mf, name);
        return IFN_OK;
    }
    const named_tensor *t = *values = find(mf, name), *st = find(mf, sname);
    if (!t) return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: tensor '%s' is missing (its scales '%s' are there)", mf->path,
                                 name, sname);
    ifn_dtype type;
    if (t->view.n_dims == 2 && t->view.ne[1] == out && t->view.type == IFN_DTYPE_I8 && t->view.ne[0] == in)
        type = IFN_DTYPE_I8;
    else if (t->view.n_dims == 2 && t->view.ne[1] == out && in % 2 == 0 &&
             ((t->view.type == IFN_DTYPE_I8 && t->view.ne[0] == in / 2) ||
              (t->view.type == IFN_DTYPE_U4 && t->view.ne[0] == in)))
        type = IFN_DTYPE_U4;
    else {
        char have[96];
        format_shape(have, sizeof have, t->view.n_dims, t->view.ne);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: quantized tensor '%s' is %s %s; with %lld inputs and %lld outputs it "
                             "must be i8 [%lld, %lld] (8-bit) or i8 [%lld, %lld] (4-bit, two per byte)", mf->path,
                             t->file_name, ifn_dtype_name(t->view.type), have, (long long)in, (long long)out,
                             (long long)out, (long long)in, (long long)out, (long long)(in / 2));
    }
    const tensor_view *sv = &st->view;
    if (sv->n_dims != 2 || sv->ne[1] != out || sv->ne[0] < 1 || in % sv->ne[0] != 0 ||
        (sv->type != IFN_DTYPE_F32 && sv->type != IFN_DTYPE_F16 && sv->type != IFN_DTYPE_BF16)) {
        char have[96];
        format_shape(have, sizeof have, sv->n_dims, sv->ne);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: scales '%s' are %s %s; expected f32, f16 or bf16 [%lld, n_groups] "
                             "with n_groups dividing %lld inputs", mf->path, st->file_name, ifn_dtype_name(sv->type),
                             have, (long long)out, (long long)in);
    }
    int64_t n_groups = sv->ne[0];
    *w = (ifn_weight){ .type = type, .n_out = out, .n_in = in, .data = t->view.data, .scales = sv->data,
                       .scale_type = sv->type, .group = n_groups == 1 ? 0 : (int)(in / n_groups),
                       .scale_stride = n_groups };
    const void *data;
    int64_t zeros_ne[2] = { n_groups, out };
    CHECK(optional_companion(mf, name, "zeros", 2, zeros_ne, IFN_DTYPE_I8, "zero points", "are", &data));
    w->zeros = data;
    CHECK(optional_companion(mf, name, "perm", 1, &in, IFN_DTYPE_I32, "act-order permutation", "is", &data));
    w->perm = data;
    int64_t one = 1;
    CHECK(optional_companion(mf, name, "act_scale", 1, &one, IFN_DTYPE_F32, "activation scale", "is", &data));
    if (data) {
        memcpy(&w->act_scale, data, sizeof w->act_scale);
        char aname[256];
        companion(name, "act_scale", aname, sizeof aname);
        if (!(w->act_scale > 0.0f) || !isfinite(w->act_scale))
            return ifn_error_set(IFN_ERR_FORMAT, "%s: activation scale '%s' is %g, expected a positive number", mf->path,
                                 aname, (double)w->act_scale);
    }
    return IFN_OK;
}

ifn_status model_file_weight(const model_file *mf, const char *name, int64_t in, int64_t out, ifn_weight *w,
                             void **owned)
{
    *owned = NULL;
    const gptq_layer *L = model_file_gptq_find(mf, name);
    if (L) return model_file_gptq_weight(L, in, out, w, owned);
    const named_tensor *t;
    CHECK(weight_views(mf, name, in, out, w, &t));
    ifn_status s = ifn_weight_check_quant(w);
    if (s != IFN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ifn_error_detail());
        ifn_error_clear();
        return ifn_error_set(s, "%s: quantized tensor '%s': %s", mf->path, t->file_name, msg);
    }
    return IFN_OK;
}

ifn_status model_file_weight_kind(const model_file *mf, const char *name, int64_t in, int64_t out, ifn_dtype *type,
                                  int *group)
{
    const gptq_layer *L = model_file_gptq_find(mf, name);
    if (L) return model_file_gptq_kind(L, in, out, type, group);
    ifn_weight w;
    const named_tensor *values;
    CHECK(weight_views(mf, name, in, out, &w, &values));
    *type = w.type;
    *group = w.scales ? w.group : 0;
    return IFN_OK;
}
