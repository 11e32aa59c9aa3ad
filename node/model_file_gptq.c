/* GPTQ checkpoints (AutoGPTQ, Transformers/Optimum, GPTQModel) in a Hugging Face directory:
 * their 4-bit weights become the canonical quantized tensors that model_file_weight reads
 * (model_file.h), integers and scales as they are, without requantization.
 *
 * The config is config.json's "quantization_config" (Transformers) or else quantize_config.json
 * (AutoGPTQ): quant_method "gptq", bits 4, group_size 32/64/128 or -1 (one group per row),
 * desc_act (act-order), checkpoint_format "gptq" (the default) or "gptq_v2". `sym` is not read:
 * the zero points say it. Per linear layer <p> (e.g. model.layers.3.self_attn.q_proj), shapes
 * as torch writes them, outer first:
 *   <p>.qweight  int32 [in/8, out]         word w of column o: input 8w+i at bits 4i..4i+3
 *   <p>.qzeros   int32 [n_groups, out/8]   word c of row g: output 8c+i's zero at bits 4i..4i+3
 *   <p>.scales   f16   [n_groups, out]     (bf16 and f32 are taken too)
 *   <p>.g_idx    int32 [in]                group of each input; optional without desc_act
 *   <p>.bias     optional, and then all zero (infernode's Llama has no biases)
 * value(o, k) = scales[g][o] * (q(o, k) - zero(o, g)) with g = g_idx[k]. "gptq" stores
 * zero - 1 (AutoGPTQ's convention: the zero point is the stored nibble + 1), "gptq_v2" the
 * zero point itself.
 *
 * What open makes of each (buffers owned by the model_file; the transposes are unavoidable):
 *   <base>.weight  u4 {in, out}         row o: output o; stored column j: input perm[j] (or j)
 *   <base>.scales  as stored {n_groups, out}
 *   <base>.zeros   i8 {n_groups, out}   0..15; left out when every zero point is 8 (symmetric)
 *   <base>.perm    i32 {in}             act-order only
 * Act-order checkpoints number their groups in the order GPTQ visited the inputs, so a group's
 * inputs are scattered. Sorting the inputs stably by g_idx makes each group contiguous (perm);
 * that needs exactly group_size inputs in every group, which is checked. */
#include "model_file_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An integer member of a quantization config: absent or null → dflt. */
static ifn_status config_int(const char *path, const json_value *qc, const char *key, int dflt, int *out)
{
    const json_value *v = json_get(qc, key);
    if (!v || v->kind == JSON_NULL) {
        *out = dflt;
        return IFN_OK;
    }
    if (v->kind != JSON_NUMBER || v->u.number < -1e9 || v->u.number > 1e9 || v->u.number != (double)(int)v->u.number)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: field \"%s\" must be an integer", path, key);
    *out = (int)v->u.number;
    return IFN_OK;
}

static ifn_status config_bool(const char *path, const json_value *qc, const char *key, bool *out)
{
    const json_value *v = json_get(qc, key);
    *out = false;
    if (!v || v->kind == JSON_NULL) return IFN_OK;
    if (v->kind != JSON_BOOL) return ifn_error_set(IFN_ERR_FORMAT, "%s: field \"%s\" must be true or false", path, key);
    *out = v->u.boolean;
    return IFN_OK;
}

/* The fields of one quantization config object (qc, read from q->source). */
static ifn_status parse_gptq(const json_value *qc, bool from_autogptq, gptq_config *q)
{
    const char *path = q->source;
    if (qc->kind != JSON_OBJECT)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: the quantization config is a JSON %s, expected an object", path,
                             json_kind_name(qc->kind));
    const char *method = json_get_string(qc, "quant_method");
    if (!method && !from_autogptq) /* AutoGPTQ's own file may predate the field */
        return ifn_error_set(IFN_ERR_FORMAT, "%s: quantization_config has no \"quant_method\" string", path);
    if (method && strcmp(method, "gptq") != 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: quant_method \"%s\" is not supported (supported: gptq)", path,
                             method);
    int bits = 0;
    if (!json_get(qc, "bits")) return ifn_error_set(IFN_ERR_FORMAT, "%s: GPTQ config has no \"bits\"", path);
    CHECK(config_int(path, qc, "bits", 0, &bits));
    if (bits != 4)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: GPTQ with bits %d is not supported (supported: 4)", path, bits);
    CHECK(config_int(path, qc, "group_size", 128, &q->group_size));
    if (q->group_size != -1 && q->group_size != 32 && q->group_size != 64 && q->group_size != 128)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: GPTQ group_size %d is not supported (supported: 32, 64, 128, "
                             "-1 for one group per row)", path, q->group_size);
    CHECK(config_bool(path, qc, "desc_act", &q->desc_act));
    const char *format = json_get_string(qc, "checkpoint_format");
    if (!format || strcmp(format, "gptq") == 0) q->zero_offset = 1;
    else if (strcmp(format, "gptq_v2") == 0) q->zero_offset = 0;
    else
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: GPTQ checkpoint_format \"%s\" is not supported (supported: "
                             "gptq, gptq_v2)", path, format);
    const char *base = json_get_string(qc, "model_file_base_name");
    if (from_autogptq && base) snprintf(q->file_base, sizeof q->file_base, "%s", base);
    q->on = true;
    return IFN_OK;
}

ifn_status model_file_gptq_config(const model_file *mf, const json_value *config, const char *config_path,
                                  gptq_config *q)
{
    memset(q, 0, sizeof *q);
    const json_value *qc = json_get(config, "quantization_config");
    if (qc && qc->kind != JSON_NULL) {
        snprintf(q->source, sizeof q->source, "%s", config_path);
        return parse_gptq(qc, false, q);
    }
    snprintf(q->source, sizeof q->source, "%s/quantize_config.json", mf->path);
    if (access(q->source, F_OK) != 0) return IFN_OK;
    json_value *doc;
    CHECK(json_parse_file(q->source, &doc));
    ifn_status s = parse_gptq(doc, true, q);
    json_free(doc);
    return s;
}

/* A tensor of the opened shards by its Hugging Face name, and the file holding it. */
static const safetensors_tensor *find_hf(const model_file *mf, const char *name, const char **file)
{
    for (size_t i = 0; i < mf->n_shards; i++)
        for (size_t j = 0; j < safetensors_n_tensors(mf->shards[i]); j++) {
            const safetensors_tensor *t = safetensors_tensor_at(mf->shards[i], j);
            if (strcmp(t->name, name) == 0) {
                *file = safetensors_path(mf->shards[i]);
                return t;
            }
        }
    return NULL;
}

static void format_shape(char *buf, size_t cap, const safetensors_tensor *t)
{
    size_t o = (size_t)snprintf(buf, cap, "%s [", ifn_dtype_name(t->type));
    for (int d = 0; d < t->n_dims && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%lld%s", (long long)t->shape[d], d + 1 < t->n_dims ? ", " : "");
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static bool has_shape(const safetensors_tensor *t, ifn_dtype type, int64_t rows, int64_t cols)
{
    return t->type == type && t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols;
}

/* Inputs and outputs of the linear layer a canonical weight name stands for; false for names
 * that are not a linear layer of the model (the token embedding, norms). */
static bool linear_shape(const model_config *c, const char *canonical, int64_t *in, int64_t *out)
{
    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    const struct { const char *name; int64_t in, out; } layer_linears[] = {
        { "attn_q.weight", c->dim, q_dim },       { "attn_k.weight", c->dim, kv_dim },
        { "attn_v.weight", c->dim, kv_dim },      { "attn_output.weight", q_dim, c->dim },
        { "ffn_gate.weight", c->dim, c->ffn_dim }, { "ffn_up.weight", c->dim, c->ffn_dim },
        { "ffn_down.weight", c->ffn_dim, c->dim },
    };
    if (strcmp(canonical, "output.weight") == 0) {
        *in = c->dim;
        *out = c->vocab_size;
        return true;
    }
    int layer, off = 0;
    if (sscanf(canonical, "blk.%d.%n", &layer, &off) != 1 || off == 0) return false;
    for (size_t i = 0; i < sizeof layer_linears / sizeof layer_linears[0]; i++)
        if (strcmp(canonical + off, layer_linears[i].name) == 0) {
            *in = layer_linears[i].in;
            *out = layer_linears[i].out;
            return true;
        }
    return false;
}

static uint32_t word_at(const void *data, size_t i)
{
    uint32_t w;
    memcpy(&w, (const unsigned char *)data + 4 * i, sizeof w); /* the mapped file need not align it */
    return w;
}

/* One GPTQ linear layer as the file has it. */
typedef struct {
    const char *prefix, *canonical;          /* "model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight" */
    int64_t in, out, group, n_groups;        /* group: inputs per group (in when one per row) */
    const safetensors_tensor *qweight, *qzeros, *scales, *g_idx;
    const char *qweight_file, *qzeros_file, *scales_file, *g_idx_file;
} gptq_linear;

/* Looks up <prefix>.<suffix>; a missing one is an error when required. */
static ifn_status companion(const model_file *mf, const gptq_linear *L, const char *suffix, bool required,
                            const safetensors_tensor **t, const char **file)
{
    char name[512];
    snprintf(name, sizeof name, "%s.%s", L->prefix, suffix);
    *t = find_hf(mf, name, file);
    if (!*t && required)
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: GPTQ tensor '%s' is missing ('%s.qweight' is in %s)", mf->path,
                             name, L->prefix, L->qweight_file);
    return IFN_OK;
}

/* Every companion present with the shape and type the layer's size and the config ask for. */
static ifn_status check_layer(const model_file *mf, const gptq_config *q, gptq_linear *L)
{
    char have[96];
    if (model_file_has_tensor(mf, L->canonical))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: layer '%s' has both a plain weight and a GPTQ '%s.qweight'", mf->path,
                             L->prefix, L->prefix);
    if (L->in % 8 != 0 || L->out % 8 != 0 || L->in < 8)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: '%s.qweight': a layer of %lld inputs and %lld outputs cannot be "
                             "4-bit GPTQ (both must be multiples of 8)", L->qweight_file, L->prefix, (long long)L->in,
                             (long long)L->out);
    if (!has_shape(L->qweight, IFN_DTYPE_I32, L->in / 8, L->out)) {
        format_shape(have, sizeof have, L->qweight);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s.qweight' is %s; with %lld inputs and %lld outputs "
                             "(config.json) 4-bit GPTQ needs i32 [%lld, %lld]", L->qweight_file, L->prefix, have,
                             (long long)L->in, (long long)L->out, (long long)(L->in / 8), (long long)L->out);
    }
    L->group = q->group_size < 0 || q->group_size >= L->in ? L->in : q->group_size;
    L->n_groups = L->in / L->group;
    if (L->in % L->group != 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: '%s' has %lld inputs, not a whole number of groups of %lld "
                             "(group_size in %s)", L->qweight_file, L->prefix, (long long)L->in, (long long)L->group,
                             q->source);
    CHECK(companion(mf, L, "scales", true, &L->scales, &L->scales_file));
    CHECK(companion(mf, L, "qzeros", true, &L->qzeros, &L->qzeros_file));
    CHECK(companion(mf, L, "g_idx", q->desc_act, &L->g_idx, &L->g_idx_file));
    const safetensors_tensor *s = L->scales;
    if (!(s->type == IFN_DTYPE_F16 || s->type == IFN_DTYPE_BF16 || s->type == IFN_DTYPE_F32) ||
        !has_shape(s, s->type, L->n_groups, L->out)) {
        format_shape(have, sizeof have, s);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; %lld inputs in groups of %lld (group_size in %s) "
                             "need f16, bf16 or f32 [%lld, %lld]", L->scales_file, s->name, have, (long long)L->in,
                             (long long)L->group, q->source, (long long)L->n_groups, (long long)L->out);
    }
    if (L->qzeros->type != IFN_DTYPE_I32)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; GPTQ zero points are packed in i32", L->qzeros_file,
                             L->qzeros->name, ifn_dtype_name(L->qzeros->type));
    if (!has_shape(L->qzeros, IFN_DTYPE_I32, L->n_groups, L->out / 8)) {
        format_shape(have, sizeof have, L->qzeros);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; %lld inputs in groups of %lld (group_size in %s) "
                             "and %lld outputs need i32 [%lld, %lld]", L->qzeros_file, L->qzeros->name, have,
                             (long long)L->in, (long long)L->group, q->source, (long long)L->out,
                             (long long)L->n_groups, (long long)(L->out / 8));
    }
    if (L->g_idx && (L->g_idx->type != IFN_DTYPE_I32 || L->g_idx->n_dims != 1 || L->g_idx->shape[0] != L->in)) {
        format_shape(have, sizeof have, L->g_idx);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; a layer of %lld inputs needs i32 [%lld]",
                             L->g_idx_file, L->g_idx->name, have, (long long)L->in, (long long)L->in);
    }
    const safetensors_tensor *bias;
    const char *bias_file;
    CHECK(companion(mf, L, "bias", false, &bias, &bias_file));
    if (bias) {
        bool zero = bias->type == IFN_DTYPE_F16 || bias->type == IFN_DTYPE_BF16 || bias->type == IFN_DTYPE_F32;
        size_t esz = ifn_dtype_block_bytes(bias->type);
        for (size_t i = 0; zero && i < bias->nbytes / esz; i++) {
            float v;
            ifn_dtype_to_f32(bias->type, (const unsigned char *)bias->data + i * esz, &v, 1);
            zero = v == 0.0f;
        }
        if (!zero)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s' is a bias that is not all zero; infernode's "
                                 "Llama has no biases", bias_file, bias->name);
    }
    return IFN_OK;
}

/* perm (left NULL when g_idx is k / group for every input k, the usual order) from g_idx:
 * inputs sorted stably by group. */
static ifn_status act_order(model_file *mf, const gptq_linear *L, int32_t **perm)
{
    *perm = NULL;
    if (!L->g_idx) return IFN_OK;
    int64_t *count = calloc((size_t)L->n_groups, sizeof *count);
    if (!count) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for '%s'", mf->path, L->g_idx->name);
    bool plain = true;
    for (int64_t k = 0; k < L->in; k++) {
        int32_t g = (int32_t)word_at(L->g_idx->data, (size_t)k);
        if (g < 0 || g >= L->n_groups) {
            free(count);
            return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s': entry %lld is %d, not a group 0..%lld", L->g_idx_file,
                                 L->g_idx->name, (long long)k, g, (long long)(L->n_groups - 1));
        }
        count[g]++;
        plain = plain && g == k / L->group;
    }
    ifn_status s = IFN_OK;
    for (int64_t g = 0; g < L->n_groups && s == IFN_OK && !plain; g++)
        if (count[g] != L->group)
            s = ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s': group %lld has %lld inputs; act-order needs group_size "
                              "(%lld) inputs in every group", L->g_idx_file, L->g_idx->name, (long long)g,
                              (long long)count[g], (long long)L->group);
    free(count);
    if (s != IFN_OK || plain) return s;
    char what[600];
    snprintf(what, sizeof what, "the act-order permutation of '%s'", L->prefix);
    if (!(*perm = model_file_alloc(mf, (size_t)L->in * sizeof **perm, what))) return IFN_ERR_NOMEM;
    int64_t *next = malloc((size_t)L->n_groups * sizeof *next);
    if (!next) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for %s", mf->path, what);
    for (int64_t g = 0; g < L->n_groups; g++) next[g] = g * L->group;
    for (int64_t k = 0; k < L->in; k++) (*perm)[next[(int32_t)word_at(L->g_idx->data, (size_t)k)]++] = (int32_t)k;
    free(next);
    return IFN_OK;
}

/* zeros [out][n_groups] 0..15 from qzeros; NULL when every one is 8 (symmetric). */
static ifn_status zero_points(model_file *mf, const gptq_config *q, const gptq_linear *L, uint8_t **zeros)
{
    *zeros = NULL;
    char what[600];
    snprintf(what, sizeof what, "the zero points of '%s'", L->prefix);
    uint8_t *z = model_file_alloc(mf, (size_t)(L->out * L->n_groups), what);
    if (!z) return IFN_ERR_NOMEM;
    bool all_8 = true;
    for (int64_t g = 0; g < L->n_groups; g++)
        for (int64_t o = 0; o < L->out; o++) {
            uint32_t word = word_at(L->qzeros->data, (size_t)(g * (L->out / 8) + o / 8));
            unsigned stored = (word >> (4 * (o % 8))) & 15u, zero = stored + (unsigned)q->zero_offset;
            if (zero > 15)
                return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s': the zero point of output %lld, group %lld is "
                                     "%u (stored %u + 1, checkpoint_format gptq); 4-bit zero points must be 0..15",
                                     L->qzeros_file, L->qzeros->name, (long long)o, (long long)g, zero, stored);
            z[o * L->n_groups + g] = (uint8_t)zero;
            all_8 = all_8 && zero == 8;
        }
    *zeros = all_8 ? NULL : z;
    return IFN_OK;
}

/* Converts one checked layer and registers its canonical tensors. */
static ifn_status import_layer(model_file *mf, const gptq_config *q, const gptq_linear *L)
{
    int32_t *perm;
    uint8_t *zeros;
    CHECK(act_order(mf, L, &perm));
    CHECK(zero_points(mf, q, L, &zeros));
    char what[600];
    snprintf(what, sizeof what, "the 4-bit values of '%s'", L->prefix);
    const int64_t in = L->in, out = L->out, n_groups = L->n_groups;
    uint8_t *values = model_file_alloc(mf, (size_t)(out * in / 2), what); /* [out][in/2] */
    if (!values) return IFN_ERR_NOMEM;
    const void *qw = L->qweight->data;
    #pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < in; j += 2) {
            int64_t k0 = perm ? perm[j] : j, k1 = perm ? perm[j + 1] : j + 1;
            unsigned lo = (word_at(qw, (size_t)((k0 / 8) * out + o)) >> (4 * (k0 % 8))) & 15u;
            unsigned hi = (word_at(qw, (size_t)((k1 / 8) * out + o)) >> (4 * (k1 % 8))) & 15u;
            values[o * (in / 2) + j / 2] = (uint8_t)(lo | hi << 4);
        }
    size_t esz = ifn_dtype_block_bytes(L->scales->type);
    snprintf(what, sizeof what, "the scales of '%s'", L->prefix);
    unsigned char *scales = model_file_alloc(mf, (size_t)(out * n_groups) * esz, what); /* [out][n_groups] */
    if (!scales) return IFN_ERR_NOMEM;
    for (int64_t g = 0; g < n_groups; g++)
        for (int64_t o = 0; o < out; o++)
            memcpy(scales + (size_t)(o * n_groups + g) * esz,
                   (const unsigned char *)L->scales->data + (size_t)(g * out + o) * esz, esz);

    char base[256], name[300], file_name[600];
    snprintf(base, sizeof base, "%.*s", (int)(strlen(L->canonical) - strlen(".weight")), L->canonical);
    tensor_view v = { .type = IFN_DTYPE_U4, .n_dims = 2, .ne = { in, out, 1, 1 }, .data = values,
                      .nbytes = (size_t)(out * in / 2) };
    snprintf(file_name, sizeof file_name, "%s.qweight", L->prefix);
    CHECK(model_file_add_tensor(mf, L->canonical, file_name, &v));
    v = (tensor_view){ .type = L->scales->type, .n_dims = 2, .ne = { n_groups, out, 1, 1 }, .data = scales,
                       .nbytes = (size_t)(out * n_groups) * esz };
    snprintf(name, sizeof name, "%s.scales", base);
    CHECK(model_file_add_tensor(mf, name, L->scales->name, &v));
    if (zeros) {
        v = (tensor_view){ .type = IFN_DTYPE_I8, .n_dims = 2, .ne = { n_groups, out, 1, 1 }, .data = zeros,
                           .nbytes = (size_t)(out * n_groups) };
        snprintf(name, sizeof name, "%s.zeros", base);
        CHECK(model_file_add_tensor(mf, name, L->qzeros->name, &v));
    }
    if (perm) {
        v = (tensor_view){ .type = IFN_DTYPE_I32, .n_dims = 1, .ne = { in, 1, 1, 1 }, .data = perm,
                           .nbytes = (size_t)in * sizeof *perm };
        snprintf(name, sizeof name, "%s.perm", base);
        CHECK(model_file_add_tensor(mf, name, L->g_idx->name, &v));
    }
    return IFN_OK;
}

ifn_status model_file_gptq_import(model_file *mf, const gptq_config *q)
{
    static const char suffix[] = ".qweight";
    const size_t n_suffix = strlen(suffix);
    for (size_t i = 0; i < mf->n_shards; i++)
        for (size_t j = 0; j < safetensors_n_tensors(mf->shards[i]); j++) {
            const safetensors_tensor *t = safetensors_tensor_at(mf->shards[i], j);
            size_t n = strlen(t->name);
            char prefix[256], weight[300], canonical[256];
            if (n <= n_suffix || strcmp(t->name + n - n_suffix, suffix) != 0 || n - n_suffix >= sizeof prefix) continue;
            snprintf(prefix, sizeof prefix, "%.*s", (int)(n - n_suffix), t->name);
            snprintf(weight, sizeof weight, "%s.weight", prefix);
            if (!model_file_hf_canonical(weight, canonical, sizeof canonical)) continue; /* not a tensor infernode uses */
            const char *file = safetensors_path(mf->shards[i]);
            if (!q->on)
                return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is a GPTQ weight, but %s/config.json has no "
                                     "quantization_config and there is no quantize_config.json", file, t->name,
                                     mf->path);
            gptq_linear L = { .prefix = prefix, .canonical = canonical, .qweight = t, .qweight_file = file };
            if (!linear_shape(&mf->cfg, canonical, &L.in, &L.out))
                return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s': only linear layers can be GPTQ-quantized, "
                                     "not '%s'", file, t->name, weight);
            CHECK(check_layer(mf, q, &L));
            CHECK(import_layer(mf, q, &L));
        }
    /* The conversion read every packed weight; the converted copies are what the model uses. */
    for (size_t i = 0; i < mf->n_shards && q->on; i++) safetensors_release_pages(mf->shards[i]);
    return IFN_OK;
}
