#include "model.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "weight.h"
#include "ops.h"

/* One layer, this rank's shard of it (row counts below are the whole model's). What an
 * architecture lacks stays zero: w_gate without a gated FFN (MODEL_FFN_GELU), the norms' and
 * linear layers' biases without cfg.biases. */
typedef struct {
    float *attn_norm;   /* [dim] */
    float *attn_norm_b; /* [dim] LayerNorm bias */
    ifn_qweight wq;     /* [n_heads * head_dim][dim] */
    ifn_qweight wk;     /* [n_kv_heads * head_dim][dim] */
    ifn_qweight wv;     /* [n_kv_heads * head_dim][dim] */
    ifn_qweight wo;     /* [dim][n_heads * head_dim] */
    float *bq, *bk, *bv;/* this rank's rows of the Q, K, V biases */
    float *bo;          /* [dim], added once, after the all-reduce */
    float *ffn_norm;    /* [dim] */
    float *ffn_norm_b;  /* [dim] */
    ifn_qweight w_gate; /* [ffn_dim][dim] */
    ifn_qweight w_up;   /* [ffn_dim][dim] */
    ifn_qweight w_down; /* [dim][ffn_dim] */
    float *b_up;        /* this rank's rows of the up bias */
    float *b_down;      /* [dim], added once, after the all-reduce */
    bool loaded;        /* false: not packed yet, or dropped (layers on demand) */
} layer_weights;

struct model {
    model_config cfg;
    ifn_rope_spec rope;  /* every rotation: prefill, decode, the ring's shift (freq = rope_freq) */
    double *rope_freq;   /* [head_dim / 2] per-pair frequencies, scaling applied */
    float q_scale;       /* RoPE scaling's attn_factor^2, applied to the queries after RoPE */
    tp_shard shard;      /* what this rank holds: heads, KV heads, FFN columns, vocab rows */
    comm *comm;          /* NULL: no partial sums to reduce */
    ifn_weight embd;     /* [vocab][dim], in the file's mapping (or embd_owned) */
    void *embd_owned;
    ifn_weight pos_embd; /* [ctx_len][dim] learned positions (MODEL_POS_LEARNED), likewise */
    void *pos_embd_owned;
    layer_weights *layers;
    float *output_norm;  /* [dim] */
    float *output_norm_b;/* [dim] */
    ifn_qweight output;  /* [vocab][dim], packed from the embedding when tied; absent under layers on demand */
    char quant_desc[256];
    /* Layers on demand: the file model_load_layer reads and the options' quant, copied (NULL:
     * as stored). mf NULL: every layer was loaded by model_load. */
    const model_file *mf;
    char *quant;
};

struct model_ctx {
    const model *m;
    int n_slots, ctx_size, n_batch;
    /* Dimensions local to this rank (its shard): heads, KV heads, FFN columns. */
    ifn_kv_type kv_type;
    void *k_cache;    /* [n_slots][n_layers][kv_heads_local][ctx_size][head_dim] of kv_type */
    void *v_cache;    /* likewise */
    size_t kv_bytes;  /* of both caches */
    uint8_t *mask;    /* [n_batch][ctx_size] the step's attention masks, sequence after sequence */
    size_t *mask_at;  /* [n_slots] where sequence i's mask starts in mask, NO_MASK without one */
    /* scratch for one step of up to n_batch tokens over all its sequences (M = its tokens) */
    float *x;         /* [n_batch][dim]          residual stream (replicated on every rank) */
    float *xb;        /* [n_batch][dim]          normed input of a sub-layer, then partial sums */
    float *q;         /* [n_batch][heads_local * head_dim] */
    float *k;         /* [n_batch][kv_heads_local * head_dim] the step's keys, before they go to their slots */
    float *v;         /* [n_batch][kv_heads_local * head_dim] the step's values, likewise */
    float *att;       /* [n_batch][heads_local * head_dim] attention output */
    float *hb;        /* [n_batch][ffn_local]    gate, then silu(gate) * up */
    float *hb2;       /* [n_batch][ffn_local]    up */
    gemm_scratch *gemm;
    model_tap_fn tap; /* calibration: sees every linear layer's input and every layer's output */
    void *tap_user;
    int tap_last;     /* while a tap is set, the step stops after tap tap_stop of this layer */
    model_tap tap_stop;
};

/* Where model_build gets its tensors: a model file, or random values (benchmarks). */
typedef struct {
    /* A 2-D weight [out][in]; *owned is set when the data must be freed by the caller. */
    ifn_status (*weight)(void *ctx, const char *name, int64_t in, int64_t out, ifn_weight *w, void **owned);
    /* A vector [n] as fp32 (malloc'd, the model owns it). */
    ifn_status (*vector)(void *ctx, const char *name, int64_t n, float **out);
    void *ctx;
    const char *what; /* for messages: the file path or "random weights" */
} weight_source;

static ifn_status file_weight(void *ctx, const char *name, int64_t in, int64_t out, ifn_weight *w, void **owned)
{
    return model_file_weight(ctx, name, in, out, w, owned);
}

static ifn_status file_vector(void *ctx, const char *name, int64_t n, float **out)
{
    const model_file *mf = ctx;
    tensor_view v;
    CHECK(model_file_tensor(mf, name, 1, &n, &v));
    if (n % ifn_dtype_block_size(v.type) != 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor '%s' of %lld values cannot be of type %s",
                             model_file_path(mf), name, (long long)n, ifn_dtype_name(v.type));
    *out = malloc((size_t)n * sizeof **out);
    if (!*out) return ifn_error_set(IFN_ERR_NOMEM, "no memory for '%s'", name);
    ifn_dtype_to_f32(v.type, v.data, *out, n);
    return IFN_OK;
}

/* Uniform values in [-1/sqrt(in), 1/sqrt(in)), a stream per tensor name and seed. */
static ifn_status random_weight(void *ctx, const char *name, int64_t in, int64_t out, ifn_weight *w, void **owned)
{
    uint64_t seed = *(const uint64_t *)ctx;
    for (const char *p = name; *p; p++) seed = (seed ^ (uint8_t)*p) * 0x100000001b3ull;
    float *data = malloc((size_t)in * (size_t)out * sizeof *data);
    if (!data) return ifn_error_set(IFN_ERR_NOMEM, "no memory for random tensor '%s' (%lld x %lld)", name,
                                    (long long)out, (long long)in);
    const float scale = 1.0f / sqrtf((float)in) / (float)(1u << 31);
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < out; r++) {
        uint64_t x = seed ^ ((uint64_t)r * 0x9e3779b97f4a7c15ull) ^ 0xd1b54a32d192ed03ull;
        for (int64_t k = 0; k < in; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data[(size_t)r * in + k] = (float)(int32_t)(uint32_t)(x >> 32) * scale;
        }
    }
    *w = (ifn_weight){ .type = IFN_DTYPE_F32, .n_out = out, .n_in = in, .data = data };
    *owned = data;
    return IFN_OK;
}

/* Norm weights 1, biases 0. */
static ifn_status random_vector(void *ctx, const char *name, int64_t n, float **out)
{
    (void)ctx;
    *out = malloc((size_t)n * sizeof **out);
    if (!*out) return ifn_error_set(IFN_ERR_NOMEM, "no memory for '%s'", name);
    const size_t len = strlen(name);
    const float v = len >= 5 && strcmp(name + len - 5, ".bias") == 0 ? 0.0f : 1.0f;
    for (int64_t i = 0; i < n; i++) (*out)[i] = v;
    return IFN_OK;
}

/* Records "stored -> packed" once per distinct pair for model_quant_desc, with the width when
 * the group asked for did not divide it (qw_fit_group: "f16 -> w4a8-g64 (192 inputs)"). */
static void note_packing(model *m, ifn_dtype stored, const qw_spec *spec, int64_t fitted_in)
{
    char packed[32], item[80];
    qw_spec_name(spec, packed, sizeof packed);
    if (fitted_in) snprintf(item, sizeof item, "%s -> %s (%lld inputs)", ifn_dtype_name(stored), packed, (long long)fitted_in);
    else snprintf(item, sizeof item, "%s -> %s", ifn_dtype_name(stored), packed);
    if (strstr(m->quant_desc, item)) return;
    size_t len = strlen(m->quant_desc);
    snprintf(m->quant_desc + len, sizeof m->quant_desc - len, "%s%s", len ? ", " : "", item);
}

/* Which part of a weight this rank packs: all of it, rows [first, first + n) (or the rows
 * listed in `rows`, n of them), or the inputs [first, first + n). */
typedef enum { SLICE_ALL, SLICE_ROWS, SLICE_COLS } slice_kind;

typedef struct {
    slice_kind kind;
    int64_t first, n;
    const int32_t *rows; /* SLICE_ROWS: the rows in order, or NULL for the range */
} slice;

/* Cuts this rank's part out of raw: a view, or a copy in *owned (rows by a list; the inputs of
 * an act-order matrix, regrouped: ifn_weight_cols_act_order). */
static ifn_status cut_part(const ifn_weight *raw, slice sl, ifn_weight *part, void **owned)
{
    *owned = NULL;
    *part = *raw;
    switch (sl.kind) {
    case SLICE_ALL: return IFN_OK;
    case SLICE_ROWS:
        if (sl.rows) return ifn_weight_gather_rows(raw, sl.rows, sl.n, part, owned);
        *part = ifn_weight_rows(raw, sl.first, sl.n);
        return IFN_OK;
    case SLICE_COLS:
        if (raw->perm && (sl.first != 0 || sl.n != raw->n_in)) return ifn_weight_cols_act_order(raw, sl.first, sl.n, part, owned);
        return ifn_weight_cols(raw, sl.first, sl.n, part);
    }
    return IFN_OK;
}

/* Packs (this rank's slice of) raw, a 2-D weight called name, for the kernels: as opts asks,
 * or as its part is stored (qw_spec_for_weight: losslessly, except Q6_K, Q5_1, Q5_K and Q2_K). */
static ifn_status pack_part(model *m, const weight_source *src, const model_options *opts, const char *name,
                            const ifn_weight *raw, slice sl, ifn_qweight *w)
{
    ifn_weight part;
    void *owned;
    ifn_status s = cut_part(raw, sl, &part, &owned);
    if (s != IFN_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", ifn_error_detail());
        ifn_error_clear();
        return ifn_error_set(s, "%s: tensor '%s' cannot be split for tensor parallelism: %s", src->what, name, why);
    }
    qw_spec spec = qw_spec_for_weight(&part);
    int64_t fitted_in = 0; /* the matrix's width when the group asked for does not divide it */
    if (opts && opts->quant) s = qw_spec_parse(opts->quant, &spec);
    if (s == IFN_OK && opts && opts->quant && qw_fit_group(raw->n_in, spec.group) != spec.group) {
        spec.group = qw_fit_group(raw->n_in, spec.group);
        fitted_in = raw->n_in;
    }
    if (s == IFN_OK && spec.group && part.n_in % spec.group != 0)
        s = ifn_error_set(IFN_ERR_INVALID_ARG, "%s: tensor '%s' has %lld inputs%s, not a multiple of the quantization group %d",
                          src->what, name, (long long)part.n_in, sl.kind == SLICE_COLS ? " in this rank's shard" : "",
                          spec.group);
    if (s == IFN_OK) s = qweight_pack(&part, &spec, w);
    if (s == IFN_OK) note_packing(m, raw->type, &spec, fitted_in);
    free(owned);
    return s;
}

static ifn_status pack_weight(model *m, const weight_source *src, const model_options *opts, const char *name,
                              int64_t in, int64_t out, slice sl, ifn_qweight *w)
{
    ifn_weight raw;
    void *owned;
    CHECK(src->weight(src->ctx, name, in, out, &raw, &owned));
    ifn_status s = pack_part(m, src, opts, name, &raw, sl, w);
    free(owned);
    return s;
}

/* This rank's elements of the vector name [total], as rows picks rows (a bias's rows). */
static ifn_status vector_part(const weight_source *src, const char *name, int64_t total, slice rows, float **out)
{
    float *all;
    CHECK(src->vector(src->ctx, name, total, &all));
    if (!rows.rows && rows.first == 0 && rows.n == total) {
        *out = all;
        return IFN_OK;
    }
    *out = malloc((size_t)rows.n * sizeof **out);
    for (int64_t i = 0; *out && i < rows.n; i++) (*out)[i] = all[rows.rows ? rows.rows[i] : rows.first + i];
    free(all);
    return *out ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for '%s'", name);
}

/* The attention projections: attn_q/k/v (Llama: no biases), or the fused attn_qkv
 * [q_dim + 2 kv_dim][dim] cut into its Q, K and V rows, with this rank's rows of its bias. */
static ifn_status load_qkv(model *m, const weight_source *src, const model_options *opts, int l, layer_weights *L)
{
    const model_config *c = &m->cfg;
    const tp_shard *sh = &m->shard;
    const int64_t dim = c->dim, hd = c->head_dim, q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    const slice q_rows = { SLICE_ROWS, sh->head0 * hd, sh->n_heads * hd, NULL };
    const slice kv_rows = { SLICE_ROWS, sh->kv_head0 * hd, sh->n_kv_heads * hd, NULL };
    char name[64];
    if (c->qkv_fused) {
        ifn_weight raw, part;
        void *owned;
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        CHECK(src->weight(src->ctx, name, dim, q_dim + 2 * kv_dim, &raw, &owned));
        part = ifn_weight_rows(&raw, 0, q_dim);
        ifn_status s = pack_part(m, src, opts, name, &part, q_rows, &L->wq);
        part = ifn_weight_rows(&raw, q_dim, kv_dim);
        if (s == IFN_OK) s = pack_part(m, src, opts, name, &part, kv_rows, &L->wk);
        part = ifn_weight_rows(&raw, q_dim + kv_dim, kv_dim);
        if (s == IFN_OK) s = pack_part(m, src, opts, name, &part, kv_rows, &L->wv);
        free(owned);
        CHECK(s);
        if (!c->biases) return IFN_OK;
        float *b;
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
        CHECK(src->vector(src->ctx, name, q_dim + 2 * kv_dim, &b));
        L->bq = malloc((size_t)q_rows.n * sizeof *L->bq);
        L->bk = malloc((size_t)kv_rows.n * sizeof *L->bk);
        L->bv = malloc((size_t)kv_rows.n * sizeof *L->bv);
        if (L->bq && L->bk && L->bv) {
            memcpy(L->bq, b + q_rows.first, (size_t)q_rows.n * sizeof *b);
            memcpy(L->bk, b + q_dim + kv_rows.first, (size_t)kv_rows.n * sizeof *b);
            memcpy(L->bv, b + q_dim + kv_dim + kv_rows.first, (size_t)kv_rows.n * sizeof *b);
        }
        free(b);
        return L->bq && L->bk && L->bv ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for '%s'", name);
    }
#define LAYER(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
    CHECK(pack_weight(m, src, opts, LAYER("attn_q.weight"), dim, q_dim, q_rows, &L->wq));
    CHECK(pack_weight(m, src, opts, LAYER("attn_k.weight"), dim, kv_dim, kv_rows, &L->wk));
    CHECK(pack_weight(m, src, opts, LAYER("attn_v.weight"), dim, kv_dim, kv_rows, &L->wv));
#undef LAYER
    return IFN_OK;
}

/* The FFN: gate/up (rows: this rank's FFN columns) and down (those columns as inputs). The
 * rank's FFN columns are [ffn0, ffn0 + n_ffn), except when ffn_down is act-order: its stored
 * columns [ffn0, ffn0 + n_ffn) are then whole groups (the plan aligns FFN splits to the
 * group) holding FFN columns perm[ffn0 ..], and the rank takes exactly those: those rows of
 * gate/up, in that order, and down's stored columns as they are, so nothing is gathered at
 * run time and the groups stay whole under any split. */
static ifn_status load_ffn(model *m, const weight_source *src, const model_options *opts, int l, layer_weights *L)
{
    const model_config *c = &m->cfg;
    const tp_shard *sh = &m->shard;
    const int64_t dim = c->dim, ffn0 = sh->ffn0, n_ffn = sh->n_ffn;
    char name[64], down_name[64];
    snprintf(down_name, sizeof down_name, "blk.%d.ffn_down.weight", l);
    ifn_weight down;
    void *down_owned;
    CHECK(src->weight(src->ctx, down_name, c->ffn_dim, dim, &down, &down_owned));
    const int32_t *cols = down.perm ? down.perm + ffn0 : NULL; /* [n_ffn] FFN columns, act-order */
    const slice rows = { SLICE_ROWS, ffn0, n_ffn, cols };
    ifn_status s = IFN_OK;
    if (cols && down.group && (ffn0 % down.group || n_ffn % down.group))
        s = ifn_error_set(IFN_ERR_INVALID_ARG, "%s: tensor '%s': FFN columns [%lld, %lld) are not whole groups of %d",
                          src->what, down_name, (long long)ffn0, (long long)(ffn0 + n_ffn), down.group);
#define LAYER(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
    if (s == IFN_OK && c->ffn == MODEL_FFN_SILU_GATED)
        s = pack_weight(m, src, opts, LAYER("ffn_gate.weight"), dim, c->ffn_dim, rows, &L->w_gate);
    if (s == IFN_OK) s = pack_weight(m, src, opts, LAYER("ffn_up.weight"), dim, c->ffn_dim, rows, &L->w_up);
    if (s == IFN_OK) {
        ifn_weight stored = down; /* its stored columns, taken as they are */
        stored.perm = NULL;
        s = pack_part(m, src, opts, down_name, &stored, (slice){ SLICE_COLS, ffn0, n_ffn, NULL }, &L->w_down);
    }
    free(down_owned);
    CHECK(s);
    if (c->biases) {
        CHECK(vector_part(src, LAYER("ffn_up.bias"), c->ffn_dim, rows, &L->b_up));
        CHECK(src->vector(src->ctx, LAYER("ffn_down.bias"), dim, &L->b_down));
    }
#undef LAYER
    return IFN_OK;
}

static ifn_status load_layer(model *m, const weight_source *src, const model_options *opts, int l, layer_weights *L)
{
    const model_config *c = &m->cfg;
    const tp_shard *sh = &m->shard;
    const int64_t dim = c->dim, q_dim = (int64_t)c->n_heads * c->head_dim;
    const slice o_cols = { SLICE_COLS, sh->head0 * c->head_dim, sh->n_heads * c->head_dim, NULL };
    const bool layer_norm = c->norm == MODEL_NORM_LAYER;
    char name[64];
#define LAYER(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
    CHECK(src->vector(src->ctx, LAYER("attn_norm.weight"), dim, &L->attn_norm));
    if (layer_norm) CHECK(src->vector(src->ctx, LAYER("attn_norm.bias"), dim, &L->attn_norm_b));
    CHECK(load_qkv(m, src, opts, l, L));
    CHECK(pack_weight(m, src, opts, LAYER("attn_output.weight"), q_dim, dim, o_cols, &L->wo));
    if (c->biases) CHECK(src->vector(src->ctx, LAYER("attn_output.bias"), dim, &L->bo));
    CHECK(src->vector(src->ctx, LAYER("ffn_norm.weight"), dim, &L->ffn_norm));
    if (layer_norm) CHECK(src->vector(src->ctx, LAYER("ffn_norm.bias"), dim, &L->ffn_norm_b));
    CHECK(load_ffn(m, src, opts, l, L));
#undef LAYER
    return IFN_OK;
}

static void layer_free(layer_weights *L)
{
    float *vectors[] = { L->attn_norm, L->attn_norm_b, L->bq, L->bk, L->bv, L->bo,
                         L->ffn_norm, L->ffn_norm_b, L->b_up, L->b_down };
    for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) free(vectors[i]);
    ifn_qweight *weights[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
    for (size_t i = 0; i < sizeof weights / sizeof *weights; i++) qweight_free(weights[i]);
    memset(L, 0, sizeof *L);
}

/* The model's RoPE frequencies, scaling and GGUF's per-pair divisors applied, computed once. */
static ifn_status rope_setup(model *m, const weight_source *src)
{
    const model_config *c = &m->cfg;
    const float attn = c->rope_scaling.attn_factor > 0.0f ? c->rope_scaling.attn_factor : 1.0f; /* 0: unset */
    m->q_scale = attn * attn;
    if (c->pos != MODEL_POS_ROPE) return IFN_OK;
    const int half = c->head_dim / 2;
    float *div = NULL;
    if (c->rope_freqs_tensor) CHECK(src->vector(src->ctx, "rope_freqs.weight", half, &div));
    for (int i = 0; div && i < half; i++)
        if (!(div[i] > 0.0f) || !isfinite(div[i])) {
            free(div);
            return ifn_error_set(IFN_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' value %d is %g (expected a positive "
                                 "frequency divisor)", src->what, i, div[i]);
        }
    m->rope_freq = malloc((size_t)half * sizeof *m->rope_freq);
    if (!m->rope_freq) {
        free(div);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the RoPE frequencies");
    }
    ifn_rope_freqs(m->rope_freq, c->head_dim, c->rope_theta, &c->rope_scaling, div);
    free(div);
    m->rope = (ifn_rope_spec){ .layout = c->rope_layout, .theta = c->rope_theta, .freq = m->rope_freq };
    return IFN_OK;
}

/* The layers and the output head are packed unless opts asks for layers on demand; the output
 * head is then only checked. */
static ifn_status model_build(const model_config *cfg, const weight_source *src, const model_options *opts, model **out)
{
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the model");
    m->cfg = *cfg;
    const model_config *c = &m->cfg;
    if (opts && opts->shard) m->shard = *opts->shard;
    else m->shard = (tp_shard){ 0, c->n_heads, 0, c->n_kv_heads, 0, c->ffn_dim, 0, c->vocab_size };
    m->comm = opts ? opts->comm : NULL;
    const tp_shard *sh = &m->shard;
    const int64_t dim = c->dim;
    const slice vocab_rows = { SLICE_ROWS, sh->vocab0, sh->n_vocab, NULL };
    ifn_status s = IFN_OK;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        s = ifn_error_set(IFN_ERR_NOMEM, "no memory for the model");
        goto fail;
    }
    CHECK_GOTO(src->weight(src->ctx, "token_embd.weight", dim, c->vocab_size, &m->embd, &m->embd_owned), s, fail);
    if (m->embd.perm) {
        s = ifn_error_set(IFN_ERR_FORMAT, "%s: the token embedding cannot be act-order (its rows are looked up by token)",
                          src->what);
        goto fail;
    }
    if (c->pos == MODEL_POS_LEARNED) {
        CHECK_GOTO(src->weight(src->ctx, "position_embd.weight", dim, c->ctx_len, &m->pos_embd, &m->pos_embd_owned), s,
                   fail);
        if (m->pos_embd.perm) {
            s = ifn_error_set(IFN_ERR_FORMAT, "%s: the position embedding cannot be act-order", src->what);
            goto fail;
        }
    }
    CHECK_GOTO(rope_setup(m, src), s, fail);
    const bool on_demand = opts && opts->layers_on_demand;
    for (int l = 0; !on_demand && l < c->n_layers; l++) {
        CHECK_GOTO(load_layer(m, src, opts, l, &m->layers[l]), s, fail);
        m->layers[l].loaded = true;
    }
    CHECK_GOTO(src->vector(src->ctx, "output_norm.weight", dim, &m->output_norm), s, fail);
    if (c->norm == MODEL_NORM_LAYER) CHECK_GOTO(src->vector(src->ctx, "output_norm.bias", dim, &m->output_norm_b), s, fail);
    const char *head = c->tied_output ? "token_embd.weight" : "output.weight";
    if (on_demand) {
        ifn_weight raw;
        void *owned;
        CHECK_GOTO(src->weight(src->ctx, head, dim, c->vocab_size, &raw, &owned), s, fail);
        free(owned);
    } else {
        CHECK_GOTO(pack_weight(m, src, opts, head, dim, c->vocab_size, vocab_rows, &m->output), s, fail);
    }
    *out = m;
    return IFN_OK;
fail:
    model_destroy(m);
    return s;
}

static weight_source file_source(const model_file *mf)
{
    return (weight_source){ file_weight, file_vector, (void *)mf, model_file_path(mf) };
}

ifn_status model_load(const model_file *mf, const model_options *opts, model **out)
{
    *out = NULL;
    const bool on_demand = opts && opts->layers_on_demand;
    if (on_demand && (opts->shard || opts->comm))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%s: layers on demand need the whole model in one process, not a "
                             "tensor-parallel shard", model_file_path(mf));
    const weight_source src = file_source(mf);
    CHECK(model_build(model_file_config(mf), &src, opts, out));
    if (!on_demand) return IFN_OK;
    model *m = *out;
    m->mf = mf;
    if (opts->quant && !(m->quant = strdup(opts->quant))) {
        model_destroy(m);
        *out = NULL;
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the model's options");
    }
    return IFN_OK;
}

ifn_status model_create_random(const model_config *cfg, const model_options *opts, uint64_t seed, model **out)
{
    *out = NULL;
    if (opts && opts->layers_on_demand)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "layers on demand are read from a model file: random weights are "
                             "made whole");
    weight_source src = { random_weight, random_vector, &seed, "random weights" };
    return model_build(cfg, &src, opts, out);
}

ifn_status model_load_layer(model *m, int layer)
{
    if (!m->mf)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "layer %d: the model was loaded whole, not with layers on demand",
                             layer);
    if (layer < 0 || layer >= m->cfg.n_layers)
        return ifn_error_set(IFN_ERR_RANGE, "layer %d is outside the model's layers 0..%d", layer, m->cfg.n_layers - 1);
    if (m->layers[layer].loaded) return ifn_error_set(IFN_ERR_INVALID_ARG, "layer %d is loaded already", layer);
    const weight_source src = file_source(m->mf);
    const model_options opts = { .quant = m->quant };
    layer_weights L = { 0 };
    ifn_status s = load_layer(m, &src, &opts, layer, &L);
    if (s != IFN_OK) {
        layer_free(&L);
        return s;
    }
    L.loaded = true;
    m->layers[layer] = L;
    return IFN_OK;
}

void model_drop_layer(model *m, int layer)
{
    if (m->mf && layer >= 0 && layer < m->cfg.n_layers) layer_free(&m->layers[layer]);
}

void model_destroy(model *m)
{
    if (!m) return;
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) layer_free(&m->layers[l]);
    free(m->layers);
    free(m->output_norm);
    free(m->output_norm_b);
    free(m->rope_freq);
    qweight_free(&m->output);
    free(m->embd_owned);
    free(m->pos_embd_owned);
    free(m->quant);
    free(m);
}

const model_config *model_get_config(const model *m) { return &m->cfg; }

void model_touch_mapped(const model *m)
{
    const ifn_weight *e = &m->embd;
    const volatile uint8_t *p = e->data;
    size_t bytes = ifn_weight_stride(e) * (size_t)e->n_out;
    uint8_t sink = 0;
    for (size_t i = 0; i < bytes; i += 4096) sink ^= p[i];
    if (bytes) sink ^= p[bytes - 1];
    (void)sink;
}

size_t model_weight_bytes(const model *m)
{
    size_t total = qweight_bytes(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        total += qweight_bytes(&L->wq) + qweight_bytes(&L->wk) + qweight_bytes(&L->wv) + qweight_bytes(&L->wo) +
                 qweight_bytes(&L->w_gate) + qweight_bytes(&L->w_up) + qweight_bytes(&L->w_down);
    }
    return total;
}

const char *model_quant_desc(const model *m) { return m->quant_desc; }

static ifn_qweight *linear_of(model *m, int layer, model_linear which)
{
    layer_weights *L = &m->layers[layer];
    ifn_qweight *const all[MODEL_LINEAR_COUNT] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
    return all[which];
}

ifn_status model_replace_linear(model *m, int layer, model_linear which, const ifn_weight *w, const char *quant)
{
    if (layer < 0 || layer >= m->cfg.n_layers || (unsigned)which >= MODEL_LINEAR_COUNT)
        return ifn_error_set(IFN_ERR_RANGE, "no linear layer %d of layer %d", (int)which, layer);
    if (m->comm || m->shard.n_heads != m->cfg.n_heads)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "replacing a weight needs the whole model in one process");
    if (!m->layers[layer].loaded)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "layer %d is not loaded (model loaded with layers on demand): its "
                             "linear %d cannot be replaced", layer, (int)which);
    ifn_qweight *dst = linear_of(m, layer, which);
    if (dst->n_out == 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a %s model has no linear layer %d", m->cfg.arch, (int)which);
    if (w->n_out != dst->n_out || w->n_in != dst->n_in)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "layer %d linear %d is %lld x %lld, not %lld x %lld", layer, (int)which,
                             (long long)dst->n_out, (long long)dst->n_in, (long long)w->n_out, (long long)w->n_in);
    qw_spec spec = qw_spec_for_weight(w);
    if (quant) {
        CHECK(qw_spec_parse(quant, &spec));
        spec.group = qw_fit_group(w->n_in, spec.group);
    }
    ifn_qweight packed;
    CHECK(qweight_pack(w, &spec, &packed));
    qweight_free(dst);
    *dst = packed;
    return IFN_OK;
}

void model_vocab_slice(const model *m, int *first, int *n)
{
    *first = m->shard.vocab0;
    *n = m->shard.n_vocab;
}


/* n zeroed bytes with every page resident now: a context needs all of its memory sooner or
 * later, and a server whose resident memory grows while it serves looks like one that leaks.
 * NULL when out of memory. */
static void *alloc_resident(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p) memset(p, 0, n);
    return p;
}

#define NO_MASK SIZE_MAX

/* Elements of one of the K and V caches; false if that overflows size_t. */
static bool cache_elems(const model *m, int n_slots, int ctx_size, ifn_kv_type kv_type, size_t *out)
{
    const size_t kv_dim = (size_t)m->shard.n_kv_heads * m->cfg.head_dim;
    return !__builtin_mul_overflow((size_t)n_slots * (size_t)m->cfg.n_layers, (size_t)ctx_size * kv_dim, out) &&
           *out <= SIZE_MAX / (2 * ifn_kv_type_size(kv_type));
}

/* Floats of one step's scratch per token. */
static size_t scratch_floats_per_token(const model *m)
{
    const size_t q_dim = (size_t)m->shard.n_heads * m->cfg.head_dim, kv_dim = (size_t)m->shard.n_kv_heads * m->cfg.head_dim;
    return 2 * (size_t)m->cfg.dim + 2 * q_dim + 2 * kv_dim + 2 * (size_t)m->shard.n_ffn;
}

size_t model_ctx_bytes(const model *m, int n_slots, int ctx_size, int n_batch, ifn_kv_type kv_type)
{
    size_t cache;
    if (n_slots < 1 || ctx_size < 1 || n_batch < 1 || kv_type < 0 || kv_type >= IFN_KV_COUNT ||
        !cache_elems(m, n_slots, ctx_size, kv_type, &cache))
        return SIZE_MAX;
    if ((int64_t)n_batch > (int64_t)n_slots * ctx_size) n_batch = n_slots * ctx_size;
    return 2 * cache * ifn_kv_type_size(kv_type) + (size_t)n_batch * ctx_size +
           (size_t)n_batch * scratch_floats_per_token(m) * sizeof(float);
}

ifn_status model_ctx_create(const model *m, int n_slots, int ctx_size, int n_batch, ifn_kv_type kv_type,
                            model_ctx **out)
{
    *out = NULL;
    const model_config *c = &m->cfg;
    const tp_shard *sh = &m->shard;
    if (n_slots < 1) return ifn_error_set(IFN_ERR_INVALID_ARG, "%d sequence slots: at least 1 is needed", n_slots);
    if (ctx_size < 1 || ctx_size > c->ctx_len)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "context size %d is outside 1..%d (the model's context length)",
                             ctx_size, c->ctx_len);
    if (n_batch < 1) return ifn_error_set(IFN_ERR_INVALID_ARG, "batch size %d must be at least 1", n_batch);
    if (kv_type < 0 || kv_type >= IFN_KV_COUNT)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "KV cache type %d is not an ifn_kv_type", (int)kv_type);
    if ((int64_t)n_batch > (int64_t)n_slots * ctx_size) n_batch = n_slots * ctx_size;
    const size_t kv_dim = (size_t)sh->n_kv_heads * c->head_dim, q_dim = (size_t)sh->n_heads * c->head_dim;
    size_t cache; /* elements of one of K and V */
    if (!cache_elems(m, n_slots, ctx_size, kv_type, &cache))
        return ifn_error_set(IFN_ERR_RANGE, "a KV cache of %d slots x %d positions x %d layers is too large", n_slots,
                             ctx_size, c->n_layers);
    model_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a model context");
    ctx->m = m;
    ctx->n_slots = n_slots;
    ctx->ctx_size = ctx_size;
    ctx->n_batch = n_batch;
    ctx->kv_type = kv_type;
    ctx->kv_bytes = 2 * cache * ifn_kv_type_size(kv_type);
    ctx->k_cache = alloc_resident(cache * ifn_kv_type_size(kv_type));
    ctx->v_cache = alloc_resident(cache * ifn_kv_type_size(kv_type));
    if (!ctx->k_cache || !ctx->v_cache) {
        model_ctx_destroy(ctx);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the KV cache of %d slots x %d positions x %d layers "
                             "x %zu values in %s (K and V: %.1f MiB)", n_slots, ctx_size, c->n_layers, kv_dim,
                             ifn_kv_type_name(kv_type), (double)(2 * cache * ifn_kv_type_size(kv_type)) / (1 << 20));
    }
    ctx->mask = alloc_resident((size_t)n_batch * ctx_size);
    ctx->mask_at = alloc_resident((size_t)n_slots * sizeof *ctx->mask_at);
    ctx->x = alloc_resident((size_t)n_batch * c->dim * sizeof(float));
    ctx->xb = alloc_resident((size_t)n_batch * c->dim * sizeof(float));
    ctx->q = alloc_resident((size_t)n_batch * q_dim * sizeof(float));
    ctx->k = alloc_resident((size_t)n_batch * kv_dim * sizeof(float));
    ctx->v = alloc_resident((size_t)n_batch * kv_dim * sizeof(float));
    ctx->att = alloc_resident((size_t)n_batch * q_dim * sizeof(float));
    ctx->hb = alloc_resident((size_t)n_batch * sh->n_ffn * sizeof(float));
    ctx->hb2 = alloc_resident((size_t)n_batch * sh->n_ffn * sizeof(float));
    if (!ctx->mask || !ctx->mask_at || !ctx->x || !ctx->xb || !ctx->q || !ctx->k || !ctx->v || !ctx->att || !ctx->hb ||
        !ctx->hb2) {
        model_ctx_destroy(ctx);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the scratch of a %d-token step (%.1f MiB)", n_batch,
                             (double)((size_t)n_batch * (scratch_floats_per_token(m) * sizeof(float) + ctx_size)) /
                                 (1 << 20));
    }
    ifn_status s = gemm_scratch_create(&ctx->gemm);
    const layer_weights *L = &m->layers[0]; /* every layer has these shapes */
    const ifn_qweight *used[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, &m->output };
    /* w_gate may be absent, and under layers on demand every weight: the scratch then grows at
     * the first step */
    for (size_t i = 0; s == IFN_OK && i < sizeof used / sizeof *used; i++)
        if (used[i]->n_out > 0) s = gemm_scratch_reserve(ctx->gemm, n_batch, used[i]);
    if (s != IFN_OK) {
        model_ctx_destroy(ctx);
        return s;
    }
    *out = ctx;
    return IFN_OK;
}

void model_ctx_destroy(model_ctx *ctx)
{
    if (!ctx) return;
    free(ctx->k_cache);
    free(ctx->v_cache);
    free(ctx->mask);
    free(ctx->mask_at);
    free(ctx->x);
    free(ctx->xb);
    free(ctx->q);
    free(ctx->k);
    free(ctx->v);
    free(ctx->att);
    free(ctx->hb);
    free(ctx->hb2);
    gemm_scratch_destroy(ctx->gemm);
    free(ctx);
}

void model_ctx_set_tap(model_ctx *ctx, model_tap_fn fn, void *user, int last_layer, model_tap last_tap)
{
    ctx->tap = fn;
    ctx->tap_user = user;
    ctx->tap_last = last_layer;
    ctx->tap_stop = last_tap;
}

int model_ctx_n_batch(const model_ctx *ctx) { return ctx->n_batch; }
size_t model_ctx_kv_bytes(const model_ctx *ctx) { return ctx->kv_bytes; }

/* A slot's rows of one layer in one of the caches: [kv_heads_local][ctx_size][head_dim]. */
static void *slot_rows(const model_ctx *ctx, void *cache, int slot, int layer)
{
    const size_t kv_dim = (size_t)ctx->m->shard.n_kv_heads * ctx->m->cfg.head_dim;
    const size_t elems = ((size_t)slot * ctx->m->cfg.n_layers + layer) * ctx->ctx_size * kv_dim;
    return (char *)cache + elems * ifn_kv_type_size(ctx->kv_type);
}

static int seq_window(const model_ctx *ctx, const model_batch_seq *s) { return s->window ? s->window : ctx->ctx_size; }

/* The cache row of position p in a sequence's ring (model.h). */
static int ring_row(const model_batch_seq *s, int window, int p)
{
    return p < s->n_keep ? p : s->n_keep + (p - s->n_keep + s->shift) % (window - s->n_keep);
}

ifn_status model_batch_check(const model_ctx *ctx, const model_batch_seq *seqs, int n_seqs)
{
    const int vocab = ctx->m->cfg.vocab_size;
    if (n_seqs < 1 || n_seqs > ctx->n_slots)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a step of %d sequences: it takes 1..%d (the slots)", n_seqs,
                             ctx->n_slots);
    if (!seqs) return ifn_error_set(IFN_ERR_INVALID_ARG, "a step of %d sequences without the sequences", n_seqs);
    int total = 0;
    for (int i = 0; i < n_seqs; i++) {
        const model_batch_seq *s = &seqs[i];
        if (s->slot < 0 || s->slot >= ctx->n_slots)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].slot %d is outside 0..%d", i, s->slot, ctx->n_slots - 1);
        for (int j = 0; j < i; j++)
            if (seqs[j].slot == s->slot)
                return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].slot %d is seqs[%d]'s slot too: a step uses a slot "
                                     "once", i, s->slot, j);
        if (s->n_tokens < 1)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].n_tokens is %d: at least 1 is needed", i, s->n_tokens);
        if (!s->tokens) return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].tokens is NULL", i);
        if (s->window < 0 || s->window > ctx->ctx_size)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].window %d is outside 1..%d (0: all of it)", i, s->window,
                                 ctx->ctx_size);
        const int window = seq_window(ctx, s);
        if (s->n_keep < 0 || s->n_keep >= window)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].n_keep %d is outside 0..%d (below the window)", i, s->n_keep,
                                 window - 1);
        if (s->shift < 0 || s->shift >= window - s->n_keep)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].shift %d is outside 0..%d", i, s->shift, window - s->n_keep - 1);
        if (s->discard < 0 || s->discard > window - s->n_keep)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].discard %d is outside 0..%d", i, s->discard,
                                 window - s->n_keep);
        if (s->discard > 0 && ctx->m->cfg.pos != MODEL_POS_ROPE)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].discard %d: a %s model has learned positions, not RoPE, so "
                                 "its kept keys cannot be shifted; evict by evaluating the kept window again", i,
                                 s->discard, ctx->m->cfg.arch);
        if (s->pos0 < 0) return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].pos0 %d is negative", i, s->pos0);
        if (s->n_tokens > window - s->pos0)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].n_tokens: %d tokens at pos0 %d do not fit in the window of %d "
                                 "positions", i, s->n_tokens, s->pos0, window);
        if (s->n_tokens > ctx->n_batch - total)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].n_tokens: %d more tokens make the step %lld tokens, more than "
                                 "n_batch %d", i, s->n_tokens, (long long)total + s->n_tokens, ctx->n_batch);
        total += s->n_tokens;
        for (int t = 0; t < s->n_tokens; t++)
            if (s->tokens[t] < 0 || s->tokens[t] >= vocab)
                return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].tokens[%d] = %d is outside the vocabulary (0..%d)", i, t,
                                     s->tokens[t], vocab - 1);
        if (s->n_out < 0 || s->n_out > s->n_tokens)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].n_out %d is outside 0..%d (its n_tokens)", i, s->n_out,
                                 s->n_tokens);
    }
    return IFN_OK;
}

/* Shift-RoPE after a discard: the keys of positions n_keep..pos0-1, renumbered down by
 * discard, turn back by that many positions in every layer. Their rows are one or two runs
 * of the ring (it may wrap). */
static void rerotate_kept(model_ctx *ctx, const model_batch_seq *s)
{
    const model *m = ctx->m;
    const int window = seq_window(ctx, s), kept = s->pos0 - s->n_keep, hd = m->cfg.head_dim;
    if (s->discard == 0 || kept <= 0) return;
    const int r0 = ring_row(s, window, s->n_keep);
    const int run0 = kept < window - r0 ? kept : window - r0;
    const int runs[2][2] = { { r0, run0 }, { s->n_keep, kept - run0 } }; /* first row, rows */
    const size_t es = ifn_kv_type_size(ctx->kv_type);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        char *k = slot_rows(ctx, ctx->k_cache, s->slot, l);
        for (int g = 0; g < m->shard.n_kv_heads; g++)
            for (int r = 0; r < 2; r++)
                if (runs[r][1] > 0)
                    ifn_rope_kv(k + (((size_t)g * ctx->ctx_size + runs[r][0]) * hd) * es, ctx->kv_type, runs[r][1],
                                (size_t)hd, 1, hd, -(double)s->discard, &m->rope);
    }
}

/* Where each sequence's attention needs a mask: when its positions do not sit in rows
 * 0..pos0+n_tokens-1 in order (a rotated ring), except a single token over a full ring, which
 * sees every row. Mask row t marks the rows of positions 0..pos0+t. */
static void build_masks(model_ctx *ctx, const model_batch_seq *seqs, int n_seqs)
{
    size_t at = 0;
    for (int i = 0; i < n_seqs; i++) {
        const model_batch_seq *s = &seqs[i];
        const int window = seq_window(ctx, s), end = s->pos0 + s->n_tokens;
        ctx->mask_at[i] = NO_MASK;
        if (s->shift == 0 || (s->n_tokens == 1 && end == window)) continue;
        ctx->mask_at[i] = at;
        uint8_t *mk = ctx->mask + at;
        memset(mk, 0, (size_t)s->n_tokens * window);
        for (int p = 0; p < end; p++) {
            const int r = ring_row(s, window, p);
            for (int t = p > s->pos0 ? p - s->pos0 : 0; t < s->n_tokens; t++) mk[(size_t)t * window + r] = 1;
        }
        at += (size_t)s->n_tokens * window;
    }
}

/* The architecture's norm of n rows: RMSNorm, or LayerNorm with its bias. */
static void norm_rows(const model *m, float *out, const float *x, const float *w, const float *b, int n)
{
    if (m->cfg.norm == MODEL_NORM_LAYER) ifn_layernorm_rows(out, x, w, b, n, m->cfg.dim, m->cfg.norm_eps);
    else ifn_rmsnorm_rows(out, x, w, n, m->cfg.dim, m->cfg.norm_eps);
}

/* x[n][dim] += y[n][dim] (+ bias[dim]): a sub-layer's all-reduced output joins the residual
 * stream; a row-sharded layer's bias is added here, once, on every rank alike. */
static void add_residual(float *x, const float *y, const float *bias, int n, int dim)
{
    for (int t = 0; t < n; t++) {
        float *xt = x + (size_t)t * dim;
        const float *yt = y + (size_t)t * dim;
        if (bias)
            for (int i = 0; i < dim; i++) xt[i] += yt[i] + bias[i];
        else
            for (int i = 0; i < dim; i++) xt[i] += yt[i];
    }
}

/* Hands x [n][n_cols] to the calibration tap, if any; true when the step ends there. */
static bool tap_ends_step(model_ctx *ctx, int layer, model_tap t, const float *x, int n, int n_cols)
{
    if (!ctx->tap) return false;
    ctx->tap(ctx->tap_user, layer, t, x, n, n_cols);
    return layer == ctx->tap_last && t == ctx->tap_stop;
}

/* One step over the n tokens of all sequences, in order: sequence i's tokens are the rows
 * t0..t0+n_tokens-1 of the scratch (t0 = the tokens of the sequences before it). The layers
 * first_layer.. run on the embedding (x0 NULL, first_layer 0) or on the residual rows x0
 * [n][dim]. Leaves the last layer's hidden states in ctx->x. */
static ifn_status forward_step(model_ctx *ctx, const model_batch_seq *seqs, int n_seqs, int n, int first_layer,
                               const float *x0)
{
    const model *m = ctx->m;
    const model_config *c = &m->cfg;
    const tp_shard *sh = &m->shard;
    const int dim = c->dim, hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    const size_t q_dim = (size_t)sh->n_heads * hd, kv_dim = (size_t)sh->n_kv_heads * hd;
    const size_t es = ifn_kv_type_size(ctx->kv_type), head_elems = (size_t)ctx->ctx_size * hd;
    const ifn_attn_heads heads = { .n_heads = sh->n_heads, .head_dim = hd, .group = group, .head0 = sh->head0,
                                   .kv_head0 = sh->kv_head0 };

    const bool rope = c->pos == MODEL_POS_ROPE;
    if (x0) memcpy(ctx->x, x0, (size_t)n * dim * sizeof *ctx->x);
    for (int i = 0, t = 0; !x0 && i < n_seqs; i++)
        for (int j = 0; j < seqs[i].n_tokens; j++, t++) {
            float *xt = ctx->x + (size_t)t * dim;
            ifn_weight_row(&m->embd, seqs[i].tokens[j], xt);
            if (rope) continue;
            float *pe = ctx->xb; /* free until the first norm */
            ifn_weight_row(&m->pos_embd, seqs[i].pos0 + j, pe);
            for (int d = 0; d < dim; d++) xt[d] += pe[d];
        }
    if (rope)
        for (int i = 0; i < n_seqs; i++) rerotate_kept(ctx, &seqs[i]);
    build_masks(ctx, seqs, n_seqs);

    for (int l = first_layer; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];

        /* attention over this rank's heads: the projections see all n tokens, attention each
         * sequence over its own slot */
        norm_rows(m, ctx->xb, ctx->x, L->attn_norm, L->attn_norm_b, n);
        if (tap_ends_step(ctx, l, MODEL_TAP_ATTN_IN, ctx->xb, n, dim)) return IFN_OK;
        /* Q, K and V share their input: quantized once, one parallel region */
        CHECK(gemm_run_many((float *const[]){ ctx->q, ctx->k, ctx->v }, ctx->xb, n,
                            (const ifn_qweight *const[]){ &L->wq, &L->wk, &L->wv }, 3, ctx->gemm));
        if (L->bq) {
            ifn_add_bias_rows(ctx->q, L->bq, n, (int)q_dim);
            ifn_add_bias_rows(ctx->k, L->bk, n, (int)kv_dim);
            ifn_add_bias_rows(ctx->v, L->bv, n, (int)kv_dim);
        }
        for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n_tokens, i++) {
            const model_batch_seq *s = &seqs[i];
            const int window = seq_window(ctx, s);
            float *q = ctx->q + t0 * q_dim;                          /* [n_tokens][q_dim] */
            float *k = ctx->k + t0 * kv_dim;                         /* [n_tokens][kv_dim] */
            float *v = ctx->v + t0 * kv_dim;                         /* [n_tokens][kv_dim] */
            char *k_cache = slot_rows(ctx, ctx->k_cache, s->slot, l); /* [kv_heads][ctx_size][hd] */
            char *v_cache = slot_rows(ctx, ctx->v_cache, s->slot, l);
            if (rope) {
                ifn_rope_rows(q, s->n_tokens, q_dim, sh->n_heads, hd, s->pos0, &m->rope);
                ifn_rope_rows(k, s->n_tokens, kv_dim, sh->n_kv_heads, hd, s->pos0, &m->rope);
                /* YaRN's magnitude on q and k is attn_factor^2 on the scores: put it on q alone,
                 * so that the cached keys stay pure rotations for the ring's shift */
                if (m->q_scale != 1.0f)
                    for (size_t e = 0; e < (size_t)s->n_tokens * q_dim; e++) q[e] *= m->q_scale;
            }
            for (int t = 0; t < s->n_tokens; t++) {
                const size_t row = (size_t)ring_row(s, window, s->pos0 + t) * hd;
                for (int g = 0; g < sh->n_kv_heads; g++) {
                    const size_t at = ((size_t)g * head_elems + row) * es;
                    ifn_kv_store(k_cache + at, k + t * kv_dim + (size_t)g * hd, hd, ctx->kv_type);
                    ifn_kv_store(v_cache + at, v + t * kv_dim + (size_t)g * hd, hd, ctx->kv_type);
                }
            }
            /* Local query head h is global head head0 + h and reads global KV head (head0 + h) / group,
             * which this rank stores at local index (head0 + h) / group - kv_head0. */
            const bool masked = ctx->mask_at[i] != NO_MASK;
            ifn_attention_kv(ctx->att + t0 * q_dim, q, s->n_tokens, &heads,
                             &(ifn_kv_rows){ .k = k_cache, .v = v_cache, .type = ctx->kv_type, .row_stride = (size_t)hd,
                                             .head_stride = head_elems,
                                             .n_rows = masked || s->shift ? window : s->pos0 + s->n_tokens },
                             masked ? ctx->mask + ctx->mask_at[i] : NULL);
        }
        if (tap_ends_step(ctx, l, MODEL_TAP_ATTN_OUT, ctx->att, n, (int)q_dim)) return IFN_OK;
        CHECK(gemm_run(ctx->xb, ctx->att, n, &L->wo, ctx->gemm));
        if (m->comm) CHECK(comm_allreduce_sum(m->comm, ctx->xb, (size_t)n * dim));
        add_residual(ctx->x, ctx->xb, L->bo, n, dim);

        /* feed-forward over this rank's columns */
        norm_rows(m, ctx->xb, ctx->x, L->ffn_norm, L->ffn_norm_b, n);
        if (tap_ends_step(ctx, l, MODEL_TAP_FFN_IN, ctx->xb, n, dim)) return IFN_OK;
        if (c->ffn == MODEL_FFN_SILU_GATED) {
            CHECK(gemm_run_many((float *const[]){ ctx->hb, ctx->hb2 }, ctx->xb, n,
                                (const ifn_qweight *const[]){ &L->w_gate, &L->w_up }, 2, ctx->gemm));
            ifn_silu_mul(ctx->hb, ctx->hb2, n * sh->n_ffn);
        } else {
            CHECK(gemm_run(ctx->hb, ctx->xb, n, &L->w_up, ctx->gemm));
            if (L->b_up) ifn_add_bias_rows(ctx->hb, L->b_up, n, sh->n_ffn);
            ifn_gelu(ctx->hb, n * sh->n_ffn, c->gelu);
        }
        if (tap_ends_step(ctx, l, MODEL_TAP_FFN_MID, ctx->hb, n, sh->n_ffn)) return IFN_OK;
        CHECK(gemm_run(ctx->xb, ctx->hb, n, &L->w_down, ctx->gemm));
        if (m->comm) CHECK(comm_allreduce_sum(m->comm, ctx->xb, (size_t)n * dim));
        add_residual(ctx->x, ctx->xb, L->b_down, n, dim);
        if (tap_ends_step(ctx, l, MODEL_TAP_LAYER_OUT, ctx->x, n, dim)) return IFN_OK;
    }
    return IFN_OK;
}

/* Layers on demand: a step from first_layer needs its layers up to the tap's stop loaded, and
 * the output head when it runs to the end and puts out logits rows. */
static ifn_status check_loaded(const model_ctx *ctx, const model_batch_seq *seqs, int n_seqs, int first_layer)
{
    const model *m = ctx->m;
    const bool to_end = !ctx->tap || ctx->tap_last >= m->cfg.n_layers;
    const int last = to_end ? m->cfg.n_layers - 1 : ctx->tap_last;
    for (int l = first_layer; l <= last; l++)
        if (!m->layers[l].loaded)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "layer %d is not loaded (model loaded with layers on demand)", l);
    if (!to_end || m->output.n_out > 0) return IFN_OK;
    for (int i = 0; i < n_seqs; i++)
        if (seqs[i].n_out > 0)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].n_out %d: the output head is not loaded (model loaded "
                                 "with layers on demand)", i, seqs[i].n_out);
    return IFN_OK;
}

ifn_status model_batch_eval(model_ctx *ctx, const model_batch_seq *seqs, int n_seqs, float *logits)
{
    return model_batch_eval_from(ctx, seqs, n_seqs, 0, NULL, logits);
}

ifn_status model_batch_eval_from(model_ctx *ctx, const model_batch_seq *seqs, int n_seqs, int first_layer,
                                 const float *x, float *logits)
{
    const model *m = ctx->m;
    if (first_layer < 0 || (first_layer > 0 && first_layer >= m->cfg.n_layers))
        return ifn_error_set(IFN_ERR_RANGE, "a step from layer %d: the model has layers 0..%d", first_layer,
                             m->cfg.n_layers - 1);
    if (first_layer > 0 && !x)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a step from layer %d needs the residual rows it starts from",
                             first_layer);
    if (ctx->tap && ctx->tap_last < first_layer)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a step from layer %d would pass the tap's last layer %d",
                             first_layer, ctx->tap_last);
    CHECK(model_batch_check(ctx, seqs, n_seqs));
    CHECK(check_loaded(ctx, seqs, n_seqs, first_layer));
    const int dim = m->cfg.dim;
    int n = 0;
    for (int i = 0; i < n_seqs; i++) n += seqs[i].n_tokens;
    CHECK(forward_step(ctx, seqs, n_seqs, n, first_layer, x));
    if (ctx->tap && ctx->tap_last < m->cfg.n_layers) return IFN_OK;

    /* The output head sees only the output rows: their final norm, gathered into xb [n_out][dim]. */
    int n_out = 0;
    for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n_tokens, i++) {
        const model_batch_seq *s = &seqs[i];
        if (s->n_out == 0) continue;
        norm_rows(m, ctx->xb + (size_t)n_out * dim, ctx->x + (size_t)(t0 + s->n_tokens - s->n_out) * dim,
                  m->output_norm, m->output_norm_b, s->n_out);
        n_out += s->n_out;
    }
    return n_out > 0 ? gemm_run(logits, ctx->xb, n_out, &m->output, ctx->gemm) : IFN_OK;
}
