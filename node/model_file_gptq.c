/* GPTQ checkpoints (AutoGPTQ, Transformers/Optimum, GPTQModel) in a Hugging Face directory:
 * their 4-bit weights become the canonical quantized weights that model_file_weight gives
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
 * Open checks every layer (shapes and types against config.json and the quantization config,
 * every g_idx entry, every zero point), so a bad checkpoint is refused there, and records it
 * (gptq_layer) under its canonical name; nothing is converted, and the pages of qzeros, g_idx
 * and bias read for the checks are released. Reading a layer (model_file_gptq_weight, through
 * model_file_weight) converts all of it into one buffer the caller owns and frees once it has
 * packed its slice, then releases the layer's checkpoint pages; so a rank holds at most one
 * converted layer besides its packed shard. What a read gives (the transposes are unavoidable):
 *   values  u4 [out][in/2]       row o: output o; stored column j: input perm[j] (or j)
 *   scales  as stored [out][n_groups]
 *   zeros   [out][n_groups] 0..15; NULL when every zero point is 8 (symmetric)
 *   perm    i32 [in]             act-order only
 * Act-order checkpoints number their groups in the order GPTQ visited the inputs, so a group's
 * inputs are scattered. Sorting the inputs stably by g_idx makes each group contiguous (perm);
 * that needs exactly group_size inputs in every group, which open checks. */
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
    int64_t i;
    if (!json_integer(v, -1000000000, 1000000000, &i))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: field \"%s\" must be an integer in -1000000000..1000000000", path, key);
    *out = (int)i;
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

/* A tensor of a GPTQ layer and the shard that holds it (for messages and for its pages). */
typedef struct {
    const safetensors_tensor *t; /* NULL: absent (an optional g_idx) */
    const safetensors_file *file;
} gptq_part;

/* One GPTQ linear layer as the file has it, and what open found out about its contents. */
struct gptq_layer {
    char prefix[256];                 /* "model.layers.0.self_attn.q_proj" */
    char canonical[256];              /* "blk.0.attn_q.weight" */
    int64_t in, out, group, n_groups; /* group: inputs per group (in when one per row) */
    int zero_offset;                  /* zero point = stored nibble + zero_offset (gptq_config) */
    bool symmetric;                   /* every zero point is 8: the weight has no zeros */
    bool act_order;                   /* g_idx is not k / group for every input k: the weight has a perm */
    gptq_part qweight, qzeros, scales, g_idx;
};

static const char *file_of(const gptq_part *p) { return safetensors_path(p->file); }

/* A tensor of the opened shards by its Hugging Face name; .t NULL when there is none. */
static gptq_part find_hf(const model_file *mf, const char *name)
{
    for (size_t i = 0; i < mf->n_shards; i++)
        for (size_t j = 0; j < safetensors_n_tensors(mf->shards[i]); j++) {
            const safetensors_tensor *t = safetensors_tensor_at(mf->shards[i], j);
            if (strcmp(t->name, name) == 0) return (gptq_part){ t, mf->shards[i] };
        }
    return (gptq_part){ NULL, NULL };
}

/* Looks up <prefix>.<suffix>; a missing one is an error when required. */
static ifn_status companion(const model_file *mf, const gptq_layer *L, const char *suffix, bool required,
                            gptq_part *p)
{
    char name[512];
    snprintf(name, sizeof name, "%s.%s", L->prefix, suffix);
    *p = find_hf(mf, name);
    if (!p->t && required)
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: GPTQ tensor '%s' is missing ('%s.qweight' is in %s)", mf->path,
                             name, L->prefix, file_of(&L->qweight));
    return IFN_OK;
}

/* Every companion present with the shape and type the layer's size and the config ask for. */
static ifn_status check_layer(const model_file *mf, const gptq_config *q, gptq_layer *L)
{
    char have[96];
    const char *qweight_file = file_of(&L->qweight);
    if (model_file_has_tensor(mf, L->canonical))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: layer '%s' has both a plain weight and a GPTQ '%s.qweight'", mf->path,
                             L->prefix, L->prefix);
    if (L->in % 8 != 0 || L->out % 8 != 0 || L->in < 8)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: '%s.qweight': a layer of %lld inputs and %lld outputs cannot be "
                             "4-bit GPTQ (both must be multiples of 8)", qweight_file, L->prefix, (long long)L->in,
                             (long long)L->out);
    if (!has_shape(L->qweight.t, IFN_DTYPE_I32, L->in / 8, L->out)) {
        format_shape(have, sizeof have, L->qweight.t);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s.qweight' is %s; with %lld inputs and %lld outputs "
                             "(config.json) 4-bit GPTQ needs i32 [%lld, %lld]", qweight_file, L->prefix, have,
                             (long long)L->in, (long long)L->out, (long long)(L->in / 8), (long long)L->out);
    }
    L->group = q->group_size < 0 || q->group_size >= L->in ? L->in : q->group_size;
    L->n_groups = L->in / L->group;
    if (L->in % L->group != 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: '%s' has %lld inputs, not a whole number of groups of %lld "
                             "(group_size in %s)", qweight_file, L->prefix, (long long)L->in, (long long)L->group,
                             q->source);
    CHECK(companion(mf, L, "scales", true, &L->scales));
    CHECK(companion(mf, L, "qzeros", true, &L->qzeros));
    CHECK(companion(mf, L, "g_idx", q->desc_act, &L->g_idx));
    const safetensors_tensor *s = L->scales.t, *z = L->qzeros.t, *g = L->g_idx.t;
    if (!(s->type == IFN_DTYPE_F16 || s->type == IFN_DTYPE_BF16 || s->type == IFN_DTYPE_F32) ||
        !has_shape(s, s->type, L->n_groups, L->out)) {
        format_shape(have, sizeof have, s);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; %lld inputs in groups of %lld (group_size in %s) "
                             "need f16, bf16 or f32 [%lld, %lld]", file_of(&L->scales), s->name, have, (long long)L->in,
                             (long long)L->group, q->source, (long long)L->n_groups, (long long)L->out);
    }
    if (z->type != IFN_DTYPE_I32)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; GPTQ zero points are packed in i32",
                             file_of(&L->qzeros), z->name, ifn_dtype_name(z->type));
    if (!has_shape(z, IFN_DTYPE_I32, L->n_groups, L->out / 8)) {
        format_shape(have, sizeof have, z);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; %lld inputs in groups of %lld (group_size in %s) "
                             "and %lld outputs need i32 [%lld, %lld]", file_of(&L->qzeros), z->name, have,
                             (long long)L->in, (long long)L->group, q->source, (long long)L->out,
                             (long long)L->n_groups, (long long)(L->out / 8));
    }
    if (g && (g->type != IFN_DTYPE_I32 || g->n_dims != 1 || g->shape[0] != L->in)) {
        format_shape(have, sizeof have, g);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is %s; a layer of %lld inputs needs i32 [%lld]",
                             file_of(&L->g_idx), g->name, have, (long long)L->in, (long long)L->in);
    }
    gptq_part bias;
    CHECK(companion(mf, L, "bias", false, &bias));
    if (bias.t) {
        const safetensors_tensor *b = bias.t;
        bool zero = b->type == IFN_DTYPE_F16 || b->type == IFN_DTYPE_BF16 || b->type == IFN_DTYPE_F32;
        size_t esz = ifn_dtype_block_bytes(b->type);
        for (size_t i = 0; zero && i < b->nbytes / esz; i++) {
            float v;
            ifn_dtype_to_f32(b->type, (const unsigned char *)b->data + i * esz, &v, 1);
            zero = v == 0.0f;
        }
        safetensors_release_tensor(bias.file, b);
        if (!zero)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s' is a bias that is not all zero; infernode's "
                                 "Llama has no biases", file_of(&bias), b->name);
    }
    return IFN_OK;
}

/* Checks g_idx (every entry a group; with act-order, group_size inputs in each group) and sets
 * L->act_order when it is not k / group for every input k, the usual order. */
static ifn_status check_g_idx(gptq_layer *L)
{
    L->act_order = false;
    const safetensors_tensor *g_idx = L->g_idx.t;
    if (!g_idx) return IFN_OK;
    int64_t *count = calloc((size_t)L->n_groups, sizeof *count);
    if (!count) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory to check '%s'", file_of(&L->g_idx), g_idx->name);
    bool plain = true;
    for (int64_t k = 0; k < L->in; k++) {
        int32_t g = (int32_t)word_at(g_idx->data, (size_t)k);
        if (g < 0 || g >= L->n_groups) {
            free(count);
            return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s': entry %lld is %d, not a group 0..%lld",
                                 file_of(&L->g_idx), g_idx->name, (long long)k, g, (long long)(L->n_groups - 1));
        }
        count[g]++;
        plain = plain && g == k / L->group;
    }
    ifn_status s = IFN_OK;
    for (int64_t g = 0; g < L->n_groups && s == IFN_OK && !plain; g++)
        if (count[g] != L->group)
            s = ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s': group %lld has %lld inputs; act-order needs group_size "
                              "(%lld) inputs in every group", file_of(&L->g_idx), g_idx->name, (long long)g,
                              (long long)count[g], (long long)L->group);
    free(count);
    L->act_order = !plain;
    return s;
}

/* perm [in] from a checked act-order g_idx: the inputs sorted stably by group. */
static ifn_status fill_perm(const gptq_layer *L, int32_t *perm)
{
    const void *g_idx = L->g_idx.t->data;
    int64_t *next = malloc((size_t)L->n_groups * sizeof *next);
    if (!next)
        return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for the act-order permutation of '%s'", file_of(&L->g_idx),
                             L->prefix);
    for (int64_t g = 0; g < L->n_groups; g++) next[g] = g * L->group;
    for (int64_t k = 0; k < L->in; k++) perm[next[(int32_t)word_at(g_idx, (size_t)k)]++] = (int32_t)k;
    free(next);
    return IFN_OK;
}

/* The zero point of output o in group g. */
static unsigned zero_at(const gptq_layer *L, int64_t o, int64_t g)
{
    uint32_t word = word_at(L->qzeros.t->data, (size_t)(g * (L->out / 8) + o / 8));
    return ((word >> (4 * (o % 8))) & 15u) + (unsigned)L->zero_offset;
}

/* Checks that every zero point is 0..15 and sets L->symmetric when every one is 8. */
static ifn_status check_zeros(gptq_layer *L)
{
    bool all_8 = true;
    for (int64_t g = 0; g < L->n_groups; g++)
        for (int64_t o = 0; o < L->out; o++) {
            unsigned zero = zero_at(L, o, g);
            if (zero > 15)
                return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s': the zero point of output %lld, group %lld is "
                                     "%u (stored %u + 1, checkpoint_format gptq); 4-bit zero points must be 0..15",
                                     file_of(&L->qzeros), L->qzeros.t->name, (long long)o, (long long)g, zero,
                                     zero - 1);
            all_8 = all_8 && zero == 8;
        }
    L->symmetric = all_8;
    return IFN_OK;
}

static void release_layer(const gptq_layer *L)
{
    const gptq_part *parts[] = { &L->qweight, &L->qzeros, &L->scales, &L->g_idx };
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if (parts[i]->t) safetensors_release_tensor(parts[i]->file, parts[i]->t);
}

ifn_status model_file_gptq_register(model_file *mf, const gptq_config *q)
{
    static const char suffix[] = ".qweight";
    const size_t n_suffix = strlen(suffix);
    for (size_t i = 0; i < mf->n_shards; i++)
        for (size_t j = 0; j < safetensors_n_tensors(mf->shards[i]); j++) {
            const safetensors_tensor *t = safetensors_tensor_at(mf->shards[i], j);
            size_t n = strlen(t->name);
            gptq_layer L = { .qweight = { t, mf->shards[i] }, .zero_offset = q->zero_offset };
            char weight[300];
            if (n <= n_suffix || strcmp(t->name + n - n_suffix, suffix) != 0 || n - n_suffix >= sizeof L.prefix) continue;
            snprintf(L.prefix, sizeof L.prefix, "%.*s", (int)(n - n_suffix), t->name);
            snprintf(weight, sizeof weight, "%s.weight", L.prefix);
            if (!model_file_hf_canonical(weight, L.canonical, sizeof L.canonical)) continue; /* not used by infernode */
            const char *file = file_of(&L.qweight);
            if (!q->on)
                return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' is a GPTQ weight, but %s/config.json has no "
                                     "quantization_config and there is no quantize_config.json", file, t->name,
                                     mf->path);
            if (!linear_shape(&mf->cfg, L.canonical, &L.in, &L.out))
                return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: tensor '%s': only linear layers can be GPTQ-quantized, "
                                     "not '%s'", file, t->name, weight);
            CHECK(check_layer(mf, q, &L));
            ifn_status s = check_g_idx(&L);
            if (s == IFN_OK) s = check_zeros(&L);
            release_layer(&L); /* the checks read qzeros and g_idx */
            CHECK(s);
            gptq_layer *grown = realloc(mf->gptq, (mf->n_gptq + 1) * sizeof *grown);
            if (!grown) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for the GPTQ layer table", mf->path);
            mf->gptq = grown;
            mf->gptq[mf->n_gptq++] = L;
        }
    return IFN_OK;
}

const gptq_layer *model_file_gptq_find(const model_file *mf, const char *canonical)
{
    for (size_t i = 0; i < mf->n_gptq; i++)
        if (strcmp(mf->gptq[i].canonical, canonical) == 0) return &mf->gptq[i];
    return NULL;
}

static ifn_status check_size(const gptq_layer *L, int64_t in, int64_t out)
{
    if (in != L->in || out != L->out)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: GPTQ layer '%s.qweight' has %lld inputs and %lld outputs, expected "
                             "%lld and %lld", file_of(&L->qweight), L->prefix, (long long)L->in, (long long)L->out,
                             (long long)in, (long long)out);
    return IFN_OK;
}

ifn_status model_file_gptq_kind(const gptq_layer *L, int64_t in, int64_t out, ifn_dtype *type, int *group)
{
    CHECK(check_size(L, in, out));
    *type = IFN_DTYPE_U4;
    *group = L->n_groups == 1 ? 0 : (int)L->group;
    return IFN_OK;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

ifn_status model_file_gptq_weight(const gptq_layer *L, int64_t in, int64_t out, ifn_weight *w, void **owned)
{
    *owned = NULL;
    CHECK(check_size(L, in, out));
    const int64_t n_groups = L->n_groups;
    const size_t esz = ifn_dtype_block_bytes(L->scales.t->type);
    /* One buffer: perm [in] (act-order), scales [out][n_groups], values [out][in/2], zeros [out][n_groups] */
    const size_t scales_at = align64(L->act_order ? (size_t)in * sizeof(int32_t) : 0);
    const size_t values_at = align64(scales_at + (size_t)(out * n_groups) * esz);
    const size_t zeros_at = align64(values_at + (size_t)(out * in / 2));
    const size_t bytes = zeros_at + (L->symmetric ? 0 : (size_t)(out * n_groups));
    unsigned char *buf = malloc(bytes);
    if (!buf)
        return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory to convert GPTQ layer '%s' (%zu bytes)", file_of(&L->qweight),
                             L->prefix, bytes);
    int32_t *perm = L->act_order ? (int32_t *)buf : NULL;
    unsigned char *scales = buf + scales_at;
    uint8_t *values = buf + values_at, *zeros = L->symmetric ? NULL : buf + zeros_at;
    if (perm) {
        ifn_status s = fill_perm(L, perm);
        if (s != IFN_OK) {
            free(buf);
            return s;
        }
    }
    const void *qw = L->qweight.t->data;
    #pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < in; j += 2) {
            int64_t k0 = perm ? perm[j] : j, k1 = perm ? perm[j + 1] : j + 1;
            unsigned lo = (word_at(qw, (size_t)((k0 / 8) * out + o)) >> (4 * (k0 % 8))) & 15u;
            unsigned hi = (word_at(qw, (size_t)((k1 / 8) * out + o)) >> (4 * (k1 % 8))) & 15u;
            values[o * (in / 2) + j / 2] = (uint8_t)(lo | hi << 4);
        }
    for (int64_t g = 0; g < n_groups; g++)
        for (int64_t o = 0; o < out; o++) {
            memcpy(scales + (size_t)(o * n_groups + g) * esz,
                   (const unsigned char *)L->scales.t->data + (size_t)(g * out + o) * esz, esz);
            if (zeros) zeros[o * n_groups + g] = (uint8_t)zero_at(L, o, g);
        }
    release_layer(L);
    *w = (ifn_weight){ .type = IFN_DTYPE_U4, .n_out = out, .n_in = in, .data = values, .scales = scales,
                       .scale_type = L->scales.t->type, .zeros = zeros, .group = n_groups == 1 ? 0 : (int)L->group,
                       .scale_stride = n_groups, .perm = perm };
    *owned = buf;
    return IFN_OK;
}
