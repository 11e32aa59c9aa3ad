/* llama2.c checkpoints, legacy layout: seven int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored
 * separately), then fp32 arrays in a fixed order with all layers of one kind together.
 * llama2.c's exporter permutes Q/K rows for interleaved RoPE, like GGUF. */
#include "model_file_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name; /* canonical name, with %d for the layer */
    int per_layer;
    int64_t in, out;  /* ne = { in, out }; out == 0 for vectors */
} l2c_array;

ifn_status model_file_open_llama2c(model_file *mf)
{
    CHECK(mapped_file_open(mf->path, &mf->map));
    const mapped_file *m = &mf->map;
    if (m->size >= 4 && memcmp(m->data, "ak42", 4) == 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED,
                             "%s: llama2.c checkpoint of a versioned export (magic \"ak42\"); infernode reads the "
                             "legacy export (export.py --version 0) and GGUF", mf->path);
    int32_t h[7];
    if (m->size < sizeof h)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: not a model file: %zu bytes, too short for a GGUF or llama2.c header",
                             mf->path, m->size);
    memcpy(h, m->data, sizeof h);
    model_config *c = &mf->cfg;
    snprintf(c->arch, sizeof c->arch, "llama");
    c->dim = h[0];
    c->ffn_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    bool shared = h[5] > 0;
    c->vocab_size = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
    c->ctx_len = h[6];
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->rope_layout = IFN_ROPE_INTERLEAVED;
    c->tied_output = shared;
    bool plausible = true;
    for (int i = 0; i < 7; i++) plausible = plausible && (i == 5 || h[i] > 0) && h[i] < (1 << 24) && h[i] > -(1 << 24);
    plausible = plausible && c->vocab_size > 0 && c->n_heads > 0 && c->dim % c->n_heads == 0;
    if (!plausible)
        return ifn_error_set(IFN_ERR_FORMAT,
                             "%s: not a GGUF file (no \"GGUF\" magic), not a Hugging Face directory, and its first "
                             "bytes are not a llama2.c header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, "
                             "vocab %d, seq %d)", mf->path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    c->head_dim = c->dim / c->n_heads;

    int64_t dim = c->dim, hid = c->ffn_dim, q_dim = (int64_t)c->n_heads * c->head_dim;
    int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_dim, vocab = c->vocab_size;
    const l2c_array arrays[] = {
        { "token_embd.weight", 0, dim, vocab },
        { "blk.%d.attn_norm.weight", 1, dim, 0 },
        { "blk.%d.attn_q.weight", 1, dim, q_dim },
        { "blk.%d.attn_k.weight", 1, dim, kv_dim },
        { "blk.%d.attn_v.weight", 1, dim, kv_dim },
        { "blk.%d.attn_output.weight", 1, q_dim, dim },
        { "blk.%d.ffn_norm.weight", 1, dim, 0 },
        { "blk.%d.ffn_gate.weight", 1, dim, hid },
        { "blk.%d.ffn_down.weight", 1, hid, dim },
        { "blk.%d.ffn_up.weight", 1, dim, hid },
        { "output_norm.weight", 0, dim, 0 },
        { "(freq_cis)", 0, c->head_dim, c->ctx_len }, /* two [seq][head_dim/2] tables, unused */
        { "output.weight", 0, dim, shared ? 0 : vocab },
    };
    const size_t n_arrays = sizeof arrays / sizeof arrays[0];
    /* Size check first, so a file of the wrong size is refused before any view is made. */
    uint64_t floats = 0;
    for (size_t i = 0; i < n_arrays; i++) {
        if (arrays[i].out == 0 && strcmp(arrays[i].name, "output.weight") == 0) continue;
        uint64_t n = (uint64_t)arrays[i].in * (uint64_t)(arrays[i].out ? arrays[i].out : 1);
        floats += arrays[i].per_layer ? n * (uint64_t)c->n_layers : n;
    }
    uint64_t want = sizeof h + 4 * floats;
    if (want != m->size)
        return ifn_error_set(IFN_ERR_FORMAT,
                             "%s: llama2.c checkpoint header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, "
                             "vocab %d%s, seq %d) needs %llu bytes, file has %zu", mf->path, c->dim, c->ffn_dim,
                             c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, shared ? "" : " unshared",
                             c->ctx_len, (unsigned long long)want, m->size);

    const unsigned char *p = m->data + sizeof h;
    for (size_t i = 0; i < n_arrays; i++) {
        const l2c_array *a = &arrays[i];
        if (a->out == 0 && strcmp(a->name, "output.weight") == 0) continue;
        int64_t rows = a->out ? a->out : 1;
        size_t bytes = (size_t)(a->in * rows) * 4;
        for (int l = 0; l < (a->per_layer ? c->n_layers : 1); l++) {
            if (a->name[0] != '(') {
                char name[64];
                snprintf(name, sizeof name, a->name, l);
                tensor_view v = { .type = IFN_DTYPE_F32, .n_dims = a->out ? 2 : 1, .ne = { a->in, rows, 1, 1 },
                                  .data = p, .nbytes = bytes };
                CHECK(model_file_add_tensor(mf, name, name, &v));
            }
            p += bytes;
        }
    }
    return IFN_OK;
}
