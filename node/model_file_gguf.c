/* GGUF model files (llama.cpp's format): hyper-parameters from "<arch>.*" metadata, tensors by
 * their own names, which are the canonical ones. Architectures "llama" and "starcoder". */
#include "model_file_internal.h"

#include <stdio.h>
#include <string.h>

/* Reads "<arch>.<key>" as an int; absent → dflt, or an error if dflt < 0. */
static ifn_status get_int(const model_file *mf, const char *key, long dflt, int *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", mf->cfg.arch, key);
    if (!gguf_has_key(mf->gguf, full)) {
        if (dflt < 0) return ifn_error_set(IFN_ERR_FORMAT, "%s: metadata key '%s' is missing", mf->path, full);
        *out = (int)dflt;
        return IFN_OK;
    }
    uint32_t v;
    CHECK(gguf_get_u32(mf->gguf, full, &v));
    if (v > (1u << 30)) return ifn_error_set(IFN_ERR_FORMAT, "%s: metadata key '%s' is %u: implausible", mf->path, full, v);
    *out = (int)v;
    return IFN_OK;
}

static ifn_status get_float(const model_file *mf, const char *key, float dflt, float *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", mf->cfg.arch, key);
    if (!gguf_has_key(mf->gguf, full)) {
        *out = dflt;
        return IFN_OK;
    }
    return gguf_get_f32(mf->gguf, full, out);
}

/* llama.cpp's "starcoder": GPT-BigCode, with learned positions, LayerNorm, GELU (llama.cpp
 * uses the tanh form), biases, and the fused attn_qkv. */
static ifn_status starcoder_config(model_file *mf)
{
    model_config *c = &mf->cfg;
    c->norm = MODEL_NORM_LAYER;
    c->ffn = MODEL_FFN_GELU;
    c->gelu = IFN_GELU_TANH;
    c->pos = MODEL_POS_LEARNED;
    c->biases = true;
    c->qkv_fused = true;
    c->head_dim = c->dim / c->n_heads;
    if (c->head_dim * c->n_heads != c->dim)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: starcoder.embedding_length %d is not a multiple of %d heads", mf->path,
                             c->dim, c->n_heads);
    c->rope_theta = 10000.0f; /* unused */
    return get_float(mf, "attention.layer_norm_epsilon", 1e-5f, &c->norm_eps);
}

/* A GGUF value as a RoPE scaling key: strings copied into str (cap bytes), numbers and booleans
 * widened; other types are refused naming the key. */
static ifn_status scaling_value(const model_file *mf, size_t i, char *str, size_t cap, rope_scaling_key *k)
{
    gguf_str key;
    gguf_type type;
    const void *value;
    size_t len;
    gguf_kv_at(mf->gguf, i, &key, &type, &value, &len);
    char full[160];
    snprintf(full, sizeof full, "%.*s", (int)key.len, key.ptr);
    k->str = NULL;
    if (type == GGUF_TYPE_STRING) {
        gguf_str v;
        CHECK(gguf_get_str(mf->gguf, full, &v));
        snprintf(str, cap, "%.*s", (int)(v.len < cap ? v.len : cap - 1), v.ptr);
        k->str = str;
    } else if (type == GGUF_TYPE_BOOL) {
        bool b;
        CHECK(gguf_get_bool(mf->gguf, full, &b));
        k->num = b;
    } else if (type == GGUF_TYPE_FLOAT32) {
        float f;
        CHECK(gguf_get_f32(mf->gguf, full, &f));
        k->num = f;
    } else {
        uint32_t u;
        CHECK(gguf_get_u32(mf->gguf, full, &u));
        k->num = u;
    }
    return IFN_OK;
}

/* "<arch>.rope.scaling.*" (and the older "<arch>.rope.scale_linear", a linear factor) through
 * the loaders' shared rule; then the "rope_freqs.weight" tensor of Llama 3.1-style files. */
#define MAX_SCALING_KEYS 32
static ifn_status rope_scaling_config(model_file *mf)
{
    char names[MAX_SCALING_KEYS][64], file_keys[MAX_SCALING_KEYS][160], strs[MAX_SCALING_KEYS][64];
    rope_scaling_key keys[MAX_SCALING_KEYS];
    char prefix[64], legacy[64];
    snprintf(prefix, sizeof prefix, "%s.rope.scaling.", mf->cfg.arch);
    snprintf(legacy, sizeof legacy, "%s.rope.scale_linear", mf->cfg.arch);
    const size_t plen = strlen(prefix);
    size_t n = 0;
    for (size_t i = 0; i < gguf_n_kv(mf->gguf); i++) {
        gguf_str key;
        gguf_type type;
        const void *value;
        size_t len;
        gguf_kv_at(mf->gguf, i, &key, &type, &value, &len);
        const bool scaling = key.len > plen && memcmp(key.ptr, prefix, plen) == 0;
        const bool old = key.len == strlen(legacy) && memcmp(key.ptr, legacy, key.len) == 0;
        if (!scaling && !old) continue;
        if (n == MAX_SCALING_KEYS || key.len >= sizeof file_keys[0])
            return ifn_error_set(IFN_ERR_FORMAT, "%s: too many or too long RoPE scaling keys", mf->path);
        snprintf(file_keys[n], sizeof file_keys[n], "%.*s", (int)key.len, key.ptr);
        snprintf(names[n], sizeof names[n], "%s", old ? "factor" : file_keys[n] + plen);
        keys[n] = (rope_scaling_key){ .name = names[n], .file_key = file_keys[n] };
        CHECK(scaling_value(mf, i, strs[n], sizeof strs[n], &keys[n]));
        n++;
    }
    CHECK(model_file_rope_scaling(mf, keys, n, true));
    mf->cfg.rope_freqs_tensor = gguf_find_tensor(mf->gguf, "rope_freqs.weight") != NULL;
    return IFN_OK;
}

static ifn_status llama_config(model_file *mf)
{
    model_config *c = &mf->cfg;
    CHECK(get_int(mf, "attention.key_length", c->dim / c->n_heads, &c->head_dim));
    int v_len, rope_dims;
    CHECK(get_int(mf, "attention.value_length", c->head_dim, &v_len));
    CHECK(get_int(mf, "rope.dimension_count", c->head_dim, &rope_dims));
    if (v_len != c->head_dim || rope_dims != c->head_dim)
        return ifn_error_set(IFN_ERR_UNSUPPORTED,
                             "%s: key length %d, value length %d and RoPE dimensions %d differ; infernode needs them equal",
                             mf->path, c->head_dim, v_len, rope_dims);
    CHECK(get_float(mf, "rope.freq_base", 10000.0f, &c->rope_theta));
    CHECK(rope_scaling_config(mf));
    CHECK(get_float(mf, "attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps));
    c->rope_layout = IFN_ROPE_INTERLEAVED; /* llama.cpp's converter permutes Q/K for it */
    return IFN_OK;
}

ifn_status model_file_open_gguf(model_file *mf)
{
    CHECK(gguf_file_open(mf->path, &mf->gguf));
    gguf_str arch;
    CHECK(gguf_get_str(mf->gguf, "general.architecture", &arch));
    const bool starcoder = arch.len == 9 && memcmp(arch.ptr, "starcoder", 9) == 0;
    if (!starcoder && !(arch.len == 5 && memcmp(arch.ptr, "llama", 5) == 0))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: llama, starcoder)",
                             mf->path, (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    model_config *c = &mf->cfg;
    snprintf(c->arch, sizeof c->arch, "%s", starcoder ? "starcoder" : "llama");
    CHECK(get_int(mf, "embedding_length", -1, &c->dim));
    CHECK(get_int(mf, "block_count", -1, &c->n_layers));
    CHECK(get_int(mf, "feed_forward_length", -1, &c->ffn_dim));
    CHECK(get_int(mf, "attention.head_count", -1, &c->n_heads));
    if (c->n_heads < 1)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s.attention.head_count is %d (expected at least 1)", mf->path, c->arch,
                             c->n_heads);
    CHECK(get_int(mf, "attention.head_count_kv", c->n_heads, &c->n_kv_heads));
    /* learned positions: the table has exactly context_length rows, so it must be given */
    CHECK(get_int(mf, "context_length", starcoder ? -1 : 2048, &c->ctx_len));
    CHECK(starcoder ? starcoder_config(mf) : llama_config(mf));

    const gguf_tensor *embd = gguf_find_tensor(mf->gguf, "token_embd.weight");
    if (!embd) return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: tensor 'token_embd.weight' is missing", mf->path);
    if (embd->n_dims != 2 || embd->ne[1] > (1 << 24))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor 'token_embd.weight' must be 2-D [vocab, %d]", mf->path, c->dim);
    c->vocab_size = (int)embd->ne[1];
    int declared;
    CHECK(get_int(mf, "vocab_size", c->vocab_size, &declared));
    if (declared != c->vocab_size)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s.vocab_size is %d but token_embd.weight has %d rows",
                             mf->path, c->arch, declared, c->vocab_size);
    c->tied_output = gguf_find_tensor(mf->gguf, "output.weight") == NULL;

    for (size_t i = 0; i < gguf_n_tensors(mf->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(mf->gguf, i);
        tensor_view v = { .type = t->type, .n_dims = t->n_dims, .data = t->data, .nbytes = t->nbytes };
        memcpy(v.ne, t->ne, sizeof v.ne);
        CHECK(model_file_add_tensor(mf, t->name, t->name, &v));
    }
    return IFN_OK;
}
