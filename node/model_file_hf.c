/* Hugging Face model directories: config.json + model.safetensors, or shards listed in
 * model.safetensors.index.json. Tensor names are mapped onto the canonical GGUF names. A GPTQ
 * checkpoint (config.json's quantization_config or quantize_config.json) has its quantized
 * layers converted at open (model_file_gptq.c). */
#include "model_file_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

static const struct { const char *hf, *gguf; } layer_names[] = {
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

static const struct { const char *hf, *gguf; } global_names[] = {
    { "model.embed_tokens.weight", "token_embd.weight" },
    { "model.norm.weight", "output_norm.weight" },
    { "lm_head.weight", "output.weight" },
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

bool model_file_hf_canonical(const char *hf, char *buf, size_t cap)
{
    for (size_t i = 0; i < N_OF(global_names); i++)
        if (strcmp(hf, global_names[i].hf) == 0) {
            snprintf(buf, cap, "%s", global_names[i].gguf);
            return true;
        }
    int layer, off = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &off) != 1 || off == 0 || layer < 0) return false;
    for (size_t i = 0; i < N_OF(layer_names); i++)
        if (strcmp(hf + off, layer_names[i].hf) == 0) {
            snprintf(buf, cap, "blk.%d.%s", layer, layer_names[i].gguf);
            return true;
        }
    return false;
}

void model_file_hf_name(const char *canonical, char *buf, size_t cap)
{
    for (size_t i = 0; i < N_OF(global_names); i++)
        if (strcmp(canonical, global_names[i].gguf) == 0) {
            snprintf(buf, cap, "%s", global_names[i].hf);
            return;
        }
    int layer, off = 0;
    if (sscanf(canonical, "blk.%d.%n", &layer, &off) == 1 && off > 0)
        for (size_t i = 0; i < N_OF(layer_names); i++)
            if (strcmp(canonical + off, layer_names[i].gguf) == 0) {
                snprintf(buf, cap, "model.layers.%d.%s", layer, layer_names[i].hf);
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
    if (v->kind != JSON_NUMBER || v->u.number != (double)(long)v->u.number || v->u.number < 0 || v->u.number > 1e9)
        return ifn_error_set(IFN_ERR_FORMAT, "%s/config.json: field \"%s\" must be a non-negative integer",
                             mf->path, key);
    *out = (int)v->u.number;
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
    *out = (float)v->u.number;
    return IFN_OK;
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
    if (strcmp(type, "llama") != 0 && strcmp(type, "mistral") != 0) {
        s = ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (supported: llama, mistral)",
                          path, type);
        goto done;
    }
    snprintf(c->arch, sizeof c->arch, "llama");
    const json_value *scaling = json_get(cfg, "rope_scaling");
    if (scaling && scaling->kind != JSON_NULL) {
        s = ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: \"rope_scaling\" is set; infernode supports plain RoPE only", path);
        goto done;
    }
    CHECK_GOTO(get_int(mf, cfg, "hidden_size", -1, &c->dim), s, done);
    CHECK_GOTO(get_int(mf, cfg, "intermediate_size", -1, &c->ffn_dim), s, done);
    CHECK_GOTO(get_int(mf, cfg, "num_hidden_layers", -1, &c->n_layers), s, done);
    CHECK_GOTO(get_int(mf, cfg, "num_attention_heads", -1, &c->n_heads), s, done);
    CHECK_GOTO(get_int(mf, cfg, "num_key_value_heads", c->n_heads, &c->n_kv_heads), s, done);
    CHECK_GOTO(get_int(mf, cfg, "head_dim", c->n_heads ? c->dim / c->n_heads : 0, &c->head_dim), s, done);
    CHECK_GOTO(get_int(mf, cfg, "vocab_size", -1, &c->vocab_size), s, done);
    CHECK_GOTO(get_int(mf, cfg, "max_position_embeddings", 2048, &c->ctx_len), s, done);
    CHECK_GOTO(get_float(mf, cfg, "rope_theta", 10000.0, &c->rope_theta), s, done);
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
    CHECK(model_file_gptq_import(mf, &q));
    if (!mf->cfg.tied_output && !model_file_has_tensor(mf, "output.weight"))
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: tensor 'lm_head.weight' is missing and tie_word_embeddings is false",
                             mf->path);
    return IFN_OK;
}
