/* Hugging Face model directories: config.json + model.safetensors, or shards listed in
 * model.safetensors.index.json. Tensor names are mapped onto the canonical GGUF names. A GPTQ
 * checkpoint (config.json's quantization_config or quantize_config.json) has its quantized
 * layers checked at open and converted one at a time when read (model_file_gptq.c). */
#include "model_file_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

typedef struct {
    const char *hf, *gguf;
} name_pair;

/* Per architecture: the layers' prefix ("<prefix>N.<name>") and names, and the global names. */
typedef struct {
    const char *layer_prefix;
    const name_pair *layer;
    size_t n_layer;
    const name_pair *global;
    size_t n_global;
} name_table;

static const name_pair llama_layer[] = {
    { "self_attn.q_proj.weight", "attn_q.weight" },
    { "self_attn.k_proj.weight", "attn_k.weight" },
    { "self_attn.v_proj.weight", "attn_v.weight" },
    { "self_attn.o_proj.weight", "attn_output.weight" },
    { "mlp.gate_proj.weight", "ffn_gate.weight" },
    { "mlp.up_proj.weight", "ffn_up.weight" },
    { "mlp.down_proj.weight", "ffn_down.weight" },
    { "input_layernorm.weight", "attn_norm.weight" },
    { "post_attention_layernorm.weight", "ffn_norm.weight" },
};

static const name_pair llama_global[] = {
    { "model.embed_tokens.weight", "token_embd.weight" },
    { "model.norm.weight", "output_norm.weight" },
    { "lm_head.weight", "output.weight" },
};

/* GPT-BigCode: the same canonical names as llama.cpp's "starcoder" GGUF files. */
static const name_pair bigcode_layer[] = {
    { "ln_1.weight", "attn_norm.weight" },          { "ln_1.bias", "attn_norm.bias" },
    { "attn.c_attn.weight", "attn_qkv.weight" },    { "attn.c_attn.bias", "attn_qkv.bias" },
    { "attn.c_proj.weight", "attn_output.weight" }, { "attn.c_proj.bias", "attn_output.bias" },
    { "ln_2.weight", "ffn_norm.weight" },           { "ln_2.bias", "ffn_norm.bias" },
    { "mlp.c_fc.weight", "ffn_up.weight" },         { "mlp.c_fc.bias", "ffn_up.bias" },
    { "mlp.c_proj.weight", "ffn_down.weight" },     { "mlp.c_proj.bias", "ffn_down.bias" },
};

static const name_pair bigcode_global[] = {
    { "transformer.wte.weight", "token_embd.weight" },
    { "transformer.wpe.weight", "position_embd.weight" },
    { "transformer.ln_f.weight", "output_norm.weight" },
    { "transformer.ln_f.bias", "output_norm.bias" },
    { "lm_head.weight", "output.weight" },
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const name_table tables[] = {
    { "model.layers.", llama_layer, N_OF(llama_layer), llama_global, N_OF(llama_global) },
    { "transformer.h.", bigcode_layer, N_OF(bigcode_layer), bigcode_global, N_OF(bigcode_global) },
};

static const name_table *table_of(const model_file *mf)
{
    return &tables[strcmp(mf->cfg.arch, "starcoder") == 0 ? 1 : 0];
}

/* The layer index and where the layer's own name starts, if hf is "<prefix>N.<name>". */
static bool split_layer(const char *hf, const char *prefix, int *layer, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncmp(hf, prefix, n) != 0) return false;
    int off = 0;
    if (sscanf(hf + n, "%d.%n", layer, &off) != 1 || off == 0 || *layer < 0) return false;
    *rest = hf + n + off;
    return true;
}

bool model_file_hf_canonical(const char *hf, char *buf, size_t cap)
{
    for (size_t t = 0; t < N_OF(tables); t++) {
        const name_table *T = &tables[t];
        for (size_t i = 0; i < T->n_global; i++)
            if (strcmp(hf, T->global[i].hf) == 0) {
                snprintf(buf, cap, "%s", T->global[i].gguf);
                return true;
            }
        int layer;
        const char *rest;
        if (!split_layer(hf, T->layer_prefix, &layer, &rest)) continue;
        for (size_t i = 0; i < T->n_layer; i++)
            if (strcmp(rest, T->layer[i].hf) == 0) {
                snprintf(buf, cap, "blk.%d.%s", layer, T->layer[i].gguf);
                return true;
            }
    }
    return false;
}

void model_file_hf_name(const model_file *mf, const char *canonical, char *buf, size_t cap)
{
    const name_table *T = table_of(mf);
    for (size_t i = 0; i < T->n_global; i++)
        if (strcmp(canonical, T->global[i].gguf) == 0) {
            snprintf(buf, cap, "%s", T->global[i].hf);
            return;
        }
    int layer, off = 0;
    if (sscanf(canonical, "blk.%d.%n", &layer, &off) == 1 && off > 0)
        for (size_t i = 0; i < T->n_layer; i++)
            if (strcmp(canonical + off, T->layer[i].gguf) == 0) {
                snprintf(buf, cap, "%s%d.%s", T->layer_prefix, layer, T->layer[i].hf);
                return;
            }
    snprintf(buf, cap, "%s", canonical);
}

/* Reads an integer field of config.json; absent → dflt (or an error when dflt < 0). */
static ifn_status get_int(const model_file *mf, const json_value *cfg, const char *key, long dflt, int *out)
{
    const json_value *v = json_get(cfg, key);
    if (!v || v->kind == JSON_NULL) {
        if (dflt < 0)
            return ifn_error_set(IFN_ERR_FORMAT, "%s/config.json: required field \"%s\" is missing", mf->path, key);
        *out = (int)dflt;
        return IFN_OK;
    }
    int64_t i;
    if (!json_integer(v, 0, 1000000000, &i)) {
        if (v->kind == JSON_NUMBER)
            return ifn_error_set(IFN_ERR_FORMAT, "%s/config.json: field \"%s\" must be an integer in 0..1000000000 "
                                 "(got %g)", mf->path, key, v->u.number);
        return ifn_error_set(IFN_ERR_FORMAT, "%s/config.json: field \"%s\" must be a non-negative integer (got a %s)",
                             mf->path, key, json_kind_name(v->kind));
    }
    *out = (int)i;
    return IFN_OK;
}

static ifn_status get_float(const model_file *mf, const json_value *cfg, const char *key, double dflt, float *out)
{
    const json_value *v = json_get(cfg, key);
    if (!v || v->kind == JSON_NULL) {
        *out = (float)dflt;
        return IFN_OK;
    }
    if (v->kind != JSON_NUMBER)
        return ifn_error_set(IFN_ERR_FORMAT, "%s/config.json: field \"%s\" must be a number", mf->path, key);
    if (!(fabs(v->u.number) <= FLT_MAX)) /* 1e999 parses to inf; 1e300 would become inf as a float */
        return ifn_error_set(IFN_ERR_FORMAT, "%s/config.json: field \"%s\" must be a finite number within a "
                             "float's range (got %g)", mf->path, key, v->u.number);
    *out = (float)v->u.number;
    return IFN_OK;
}

/* GPT-BigCode (StarCoder, SantaCoder's successors): multi-query attention only (multi_query
 * false lays c_attn out per head, [q_h, k_h, v_h] interleaved, which infernode does not read). */
static ifn_status bigcode_config(model_file *mf, const json_value *cfg, const char *path)
{
    model_config *c = &mf->cfg;
    snprintf(c->arch, sizeof c->arch, "starcoder");
    c->norm = MODEL_NORM_LAYER;
    c->ffn = MODEL_FFN_GELU;
    c->pos = MODEL_POS_LEARNED;
    c->biases = true;
    c->qkv_fused = true;
    const json_value *mq = json_get(cfg, "multi_query");
    if (mq && !(mq->kind == JSON_BOOL && mq->u.boolean))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: \"multi_query\" is not true; infernode reads GPT-BigCode models "
                             "with multi-query attention (one KV head) only", path);
    const char *act = json_get_string(cfg, "activation_function");
    if (!act || strcmp(act, "gelu_pytorch_tanh") == 0 || strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_fast") == 0)
        c->gelu = IFN_GELU_TANH;
    else if (strcmp(act, "gelu") == 0)
        c->gelu = IFN_GELU_ERF;
    else
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: \"activation_function\" \"%s\" is not supported (gelu, "
                             "gelu_pytorch_tanh, gelu_new, gelu_fast)", path, act);
    CHECK(get_int(mf, cfg, "n_embd", -1, &c->dim));
    CHECK(get_int(mf, cfg, "n_layer", -1, &c->n_layers));
    CHECK(get_int(mf, cfg, "n_head", -1, &c->n_heads));
    CHECK(get_int(mf, cfg, "n_inner", 4L * c->dim, &c->ffn_dim));
    CHECK(get_int(mf, cfg, "vocab_size", -1, &c->vocab_size));
    CHECK(get_int(mf, cfg, "n_positions", -1, &c->ctx_len));
    CHECK(get_float(mf, cfg, "layer_norm_epsilon", 1e-5, &c->norm_eps));
    if (c->n_heads < 1 || c->dim % c->n_heads != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", path, c->dim, c->n_heads);
    c->n_kv_heads = 1;
    c->head_dim = c->dim / c->n_heads;
    c->rope_theta = 10000.0f; /* unused */
    const json_value *tie = json_get(cfg, "tie_word_embeddings");
    c->tied_output = !tie || tie->kind != JSON_BOOL || tie->u.boolean; /* GPT-BigCode ties by default */
    return IFN_OK;
}

/* config.json's "rope_scaling" object (and "partial_rotary_factor") through the loaders'
 * shared rule; call with c->ctx_len = max_position_embeddings. */
#define MAX_SCALING_KEYS 32
static ifn_status rope_scaling_config(model_file *mf, const json_value *cfg, const char *path)
{
    const json_value *partial = json_get(cfg, "partial_rotary_factor");
    if (partial && partial->kind != JSON_NULL && !(partial->kind == JSON_NUMBER && partial->u.number == 1.0))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: \"partial_rotary_factor\" other than 1 is not implemented", path);
    const json_value *scaling = json_get(cfg, "rope_scaling");
    rope_scaling_key keys[MAX_SCALING_KEYS];
    char file_keys[MAX_SCALING_KEYS][96];
    size_t n = 0;
    if (scaling && scaling->kind != JSON_NULL) {
        if (scaling->kind != JSON_OBJECT)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: \"rope_scaling\" must be an object or null", path);
        if (scaling->u.object.n > MAX_SCALING_KEYS)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: \"rope_scaling\" has too many keys", path);
        for (size_t i = 0; i < scaling->u.object.n; i++) {
            const json_member *m = &scaling->u.object.members[i];
            snprintf(file_keys[n], sizeof file_keys[n], "rope_scaling.%.80s", m->key);
            keys[n] = (rope_scaling_key){ .name = m->key, .file_key = file_keys[n] };
            if (m->value.kind == JSON_STRING) keys[n].str = m->value.u.string.ptr;
            else if (m->value.kind == JSON_NUMBER) keys[n].num = m->value.u.number;
            else if (m->value.kind == JSON_BOOL) keys[n].num = m->value.u.boolean;
            else if (m->value.kind == JSON_NULL) continue; /* HF: null is absent */
            else keys[n].num = NAN; /* an array or object: refused by the rule as not a number */
            n++;
        }
    }
    return model_file_rope_scaling(mf, keys, n, false);
}

static ifn_status read_config(model_file *mf, gptq_config *q)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", mf->path);
    json_value *cfg;
    CHECK(json_parse_file(path, &cfg));
    model_config *c = &mf->cfg;
    ifn_status s = IFN_OK;
    const char *type = json_get_string(cfg, "model_type");
    if (!type) {
        s = ifn_error_set(IFN_ERR_FORMAT, "%s: field \"model_type\" is missing or not a string", path);
        goto done;
    }
    if (strcmp(type, "gpt_bigcode") == 0) {
        s = bigcode_config(mf, cfg, path);
        if (s == IFN_OK) s = model_file_gptq_config(mf, cfg, path, q);
        goto done;
    }
    if (strcmp(type, "llama") != 0 && strcmp(type, "mistral") != 0) {
        s = ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (supported: llama, mistral, "
                          "gpt_bigcode)", path, type);
        goto done;
    }
    snprintf(c->arch, sizeof c->arch, "llama");
    CHECK_GOTO(get_int(mf, cfg, "hidden_size", -1, &c->dim), s, done);
    CHECK_GOTO(get_int(mf, cfg, "intermediate_size", -1, &c->ffn_dim), s, done);
    CHECK_GOTO(get_int(mf, cfg, "num_hidden_layers", -1, &c->n_layers), s, done);
    CHECK_GOTO(get_int(mf, cfg, "num_attention_heads", -1, &c->n_heads), s, done);
    CHECK_GOTO(get_int(mf, cfg, "num_key_value_heads", c->n_heads, &c->n_kv_heads), s, done);
    CHECK_GOTO(get_int(mf, cfg, "head_dim", c->n_heads ? c->dim / c->n_heads : 0, &c->head_dim), s, done);
    CHECK_GOTO(get_int(mf, cfg, "vocab_size", -1, &c->vocab_size), s, done);
    CHECK_GOTO(get_int(mf, cfg, "max_position_embeddings", 2048, &c->ctx_len), s, done);
    CHECK_GOTO(get_float(mf, cfg, "rope_theta", 10000.0, &c->rope_theta), s, done);
    CHECK_GOTO(rope_scaling_config(mf, cfg, path), s, done);
    CHECK_GOTO(get_float(mf, cfg, "rms_norm_eps", 1e-6, &c->norm_eps), s, done);
    int window = 0;
    CHECK_GOTO(get_int(mf, cfg, "sliding_window", 0, &window), s, done);
    if (window > 0 && window < c->ctx_len) c->ctx_len = window; /* attention beyond it is not plain */
    const json_value *tie = json_get(cfg, "tie_word_embeddings");
    c->tied_output = tie && tie->kind == JSON_BOOL && tie->u.boolean;
    c->rope_layout = IFN_ROPE_HALVES;
    s = model_file_gptq_config(mf, cfg, path, q);
done:
    json_free(cfg);
    return s;
}

static ifn_status add_shard(model_file *mf, const char *file)
{
    char path[4096];
    if (strchr(file, '/') || strcmp(file, "..") == 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: shard name '%s' must be a file in the model directory", mf->path, file);
    snprintf(path, sizeof path, "%s/%s", mf->path, file);
    safetensors_file **ns = realloc(mf->shards, (mf->n_shards + 1) * sizeof *ns);
    if (!ns) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", mf->path);
    mf->shards = ns;
    CHECK(safetensors_open(path, &mf->shards[mf->n_shards]));
    safetensors_file *sf = mf->shards[mf->n_shards++];
    for (size_t i = 0; i < safetensors_n_tensors(sf); i++) {
        const safetensors_tensor *t = safetensors_tensor_at(sf, i);
        char name[256];
        if (!model_file_hf_canonical(t->name, name, sizeof name)) continue;
        if (model_file_has_tensor(mf, name))
            return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' appears in more than one shard", path, t->name);
        tensor_view v = { .type = t->type, .n_dims = t->n_dims, .data = t->data, .nbytes = t->nbytes };
        for (int d = 0; d < 4; d++) v.ne[d] = d < t->n_dims ? t->shape[t->n_dims - 1 - d] : 1;
        CHECK(model_file_add_tensor(mf, name, t->name, &v));
    }
    return IFN_OK;
}

/* The distinct shard files of model.safetensors.index.json, in first-mention order. */
static ifn_status open_sharded(model_file *mf, const char *index_path)
{
    json_value *idx;
    CHECK(json_parse_file(index_path, &idx));
    ifn_status s = IFN_OK;
    const json_value *map = json_get(idx, "weight_map");
    if (!map || map->kind != JSON_OBJECT) {
        s = ifn_error_set(IFN_ERR_FORMAT, "%s: \"weight_map\" is missing or not an object", index_path);
        goto done;
    }
    for (size_t i = 0; i < map->u.object.n && s == IFN_OK; i++) {
        const json_value *file = &map->u.object.members[i].value;
        if (file->kind != JSON_STRING) {
            s = ifn_error_set(IFN_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name", index_path,
                              map->u.object.members[i].key);
            break;
        }
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(map->u.object.members[j].value.u.string.ptr, file->u.string.ptr) == 0;
        if (!seen) s = add_shard(mf, file->u.string.ptr);
    }
done:
    json_free(idx);
    return s;
}

ifn_status model_file_open_hf(model_file *mf)
{
    gptq_config q;
    CHECK(read_config(mf, &q));
    char index[4096], single[4096], autogptq_file[300], autogptq[4400];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", mf->path);
    snprintf(single, sizeof single, "%s/model.safetensors", mf->path);
    /* AutoGPTQ names its file after quantize_config.json's model_file_base_name */
    snprintf(autogptq_file, sizeof autogptq_file, "%s.safetensors", q.file_base);
    snprintf(autogptq, sizeof autogptq, "%s/%s", mf->path, autogptq_file);
    if (access(index, F_OK) == 0) {
        CHECK(open_sharded(mf, index));
    } else if (access(single, F_OK) == 0) {
        CHECK(add_shard(mf, "model.safetensors"));
    } else if (q.file_base[0] && access(autogptq, F_OK) == 0) {
        CHECK(add_shard(mf, autogptq_file));
    } else {
        return ifn_error_set(IFN_ERR_NOT_FOUND,
                             "%s: no model.safetensors or model.safetensors.index.json%s%s (PyTorch .bin weights "
                             "are not read; convert them to safetensors)", mf->path, q.file_base[0] ? " or " : "",
                             q.file_base[0] ? autogptq_file : "");
    }
    CHECK(model_file_gptq_register(mf, &q));
    if (!mf->cfg.tied_output && !model_file_has_tensor(mf, "output.weight"))
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: tensor 'lm_head.weight' is missing and tie_word_embeddings is false",
                             mf->path);
    return IFN_OK;
}
