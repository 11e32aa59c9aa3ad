#include "engine.h"
#include "fingerprint.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapped_file.h"
#include "numa_bind.h"
#include "qweight.h"
#include "tp_plan.h"

#define DEFAULT_CTX_CAP 4096
#define DEFAULT_BATCH 512
#define RANDOM_SEED 42 /* engine_params.random_shape: the same weights every run */

typedef enum { STEP_RUN = 1, STEP_STOP } step_op;

/* What rank 0 broadcasts first for each step. */
typedef struct {
    int32_t op;
    int32_t n_seqs;
    int32_t n_tokens; /* over all sequences */
} step_header;

/* One sequence of a step as rank 0 broadcasts it. The second broadcast of a step holds
 * n_seqs of these, then the step's n_tokens token ids, sequence after sequence. */
typedef struct {
    int32_t slot, pos0, n_tokens, n_out;
    int32_t mode;  /* engine_logits */
    int32_t top_k; /* TOPK; 0 otherwise */
    int32_t window, n_keep, shift, discard; /* the slot's ring (model_batch_seq) */
} step_seq;

/* Rank 0's bookkeeping of one slot. */
typedef struct {
    int len;            /* positions holding entries */
    int window, n_keep; /* the ring (engine_slot_ring) */
    int shift;          /* its rotation: advanced by every discard, modulo window - n_keep */
} slot_state;

struct engine {
    comm *comm;
    model_file *mf;           /* NULL for random weights */
    model_config cfg;
    model *m;
    model_ctx *ctx;
    tp_plan plan;
    numa_binding numa;
    int n_slots, ctx_size, n_batch;
    int vocab0, n_vocab;      /* this rank's logits columns */
    slot_state *slots;        /* [n_slots] rank 0's bookkeeping */
    size_t weight_bytes;      /* over all ranks */
    void *wire;               /* n_slots step_seq, then [n_batch] token ids: the step being run */
    model_batch_seq *batch;   /* [n_slots] the step as the model sees it */
    float *local_logits;      /* [n_batch][n_vocab] this rank's columns of the step's output rows */
    float *argmax_value;      /* [n_batch] this rank's best logit per ARGMAX row */
    int32_t *argmax_id;       /* [n_batch] its id */
    float *best_value;        /* [n_batch] rank 0: the best over all ranks */
    int32_t *best_id;         /* [n_batch] */
    char desc[1024];
};

/* The width at which one row-sharded matrix (`what`: "attn_output" or "ffn_down", `in`
 * inputs) may be cut: the quantization group it is packed in (the one asked for, as
 * qw_fit_group fits it to `in`), and the largest block or scale group it has in any layer of
 * the file (a shard is cut from the stored matrix before it is converted, so a Q4_K file
 * splits at multiples of 256 even for f32). All are powers of two: the largest is a multiple
 * of the others. */
static int cut_alignment(const model_file *mf, const model_config *c, const qw_spec *quant, const char *what, int64_t in)
{
    int align = quant && quant->group ? qw_fit_group(in, quant->group) : 1;
    if (align < 1) align = 1;
    for (int l = 0; mf && l < c->n_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, what);
        ifn_dtype type;
        int group;
        if (model_file_weight_kind(mf, name, in, c->dim, &type, &group) != IFN_OK) continue;
        if (ifn_dtype_block_size(type) > align) align = ifn_dtype_block_size(type);
        if (group > align) align = group;
    }
    ifn_error_clear(); /* a missing tensor is reported by model_load, with its name */
    return align;
}

static ifn_status shard_alignment(const model_file *mf, const model_config *c, const char *quant, tp_align *align)
{
    qw_spec spec;
    if (quant) CHECK(qw_spec_parse(quant, &spec));
    align->attn = cut_alignment(mf, c, quant ? &spec : NULL, "attn_output", (int64_t)c->n_heads * c->head_dim);
    align->ffn = cut_alignment(mf, c, quant ? &spec : NULL, "ffn_down", c->ffn_dim);
    return IFN_OK;
}

/* Refuses a context that would not fit in this rank's share of the memory left on its host
 * (the ranks on a host load at the same time and need about as much each): asking for it
 * anyway would end in the kernel's OOM killer, not in an error. */
static ifn_status check_memory(const engine *e, size_t need)
{
    if (need == SIZE_MAX)
        return ifn_error_set(IFN_ERR_RANGE, "a KV cache of %d slots x %d positions is too large", e->n_slots, e->ctx_size);
    const int sharers = comm_local_size(e->comm);
    const size_t avail = memory_available_bytes() / (size_t)(sharers > 0 ? sharers : 1);
    if (avail && need > avail)
        return ifn_error_set(IFN_ERR_NOMEM, "the KV cache and step scratch of %d slots x %d positions need %.1f MiB, but "
                             "only %.1f MiB are available to each of the %d ranks on this host: lower --max-seqs or "
                             "--ctx-size, or store KV in f16", e->n_slots, e->ctx_size, (double)need / (1 << 20),
                             (double)avail / (1 << 20), sharers);
    return IFN_OK;
}

static ifn_status load_local(engine *e, const engine_params *p)
{
    int rank = comm_rank(e->comm), world = comm_world(e->comm);
    CHECK(numa_bind_rank(comm_local_rank(e->comm), comm_local_size(e->comm), &e->numa));
    if (!p->random_shape) CHECK(model_file_open(p->model_path, &e->mf));
    e->cfg = p->random_shape ? *p->random_shape : *model_file_config(e->mf);
    const model_config *c = &e->cfg;
    tp_align align;
    CHECK(shard_alignment(e->mf, c, p->quant, &align));
    tp_model_dims dims = { c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab_size };
    CHECK(tp_plan_build(&dims, world, align, &e->plan));
    const tp_shard *sh = &e->plan.shards[rank];
    model_options opts = { .quant = p->quant, .shard = world > 1 ? sh : NULL, .comm = world > 1 ? e->comm : NULL };
    if (p->random_shape) {
        CHECK(model_create_random(c, &opts, RANDOM_SEED, &e->m));
    } else {
        CHECK(model_load(e->mf, &opts, &e->m));
        model_file_release_pages(e->mf); /* the packed copy is what runs; the file's pages may go */
        model_touch_mapped(e->m);        /* but the embedding rows are read from them */
    }
    e->n_slots = p->n_slots ? p->n_slots : 1;
    e->ctx_size = p->ctx_size ? p->ctx_size : (c->ctx_len < DEFAULT_CTX_CAP ? c->ctx_len : DEFAULT_CTX_CAP);
    const int n_batch = p->n_batch ? p->n_batch : DEFAULT_BATCH;
    CHECK(check_memory(e, model_ctx_bytes(e->m, e->n_slots, e->ctx_size, n_batch, p->kv_type)));
    CHECK(model_ctx_create(e->m, e->n_slots, e->ctx_size, n_batch, p->kv_type, &e->ctx));
    e->n_batch = model_ctx_n_batch(e->ctx); /* at most n_slots * ctx_size */
    /* Rank 0 gathers a step's FULL rows, [n_batch][vocab] at most, counted in int. */
    if ((int64_t)e->n_batch * c->vocab_size > INT_MAX)
        return ifn_error_set(IFN_ERR_RANGE, "a batch of %d tokens is too large for a vocabulary of %d: a step's logits "
                             "would exceed 2^31 values", e->n_batch, c->vocab_size);
    model_vocab_slice(e->m, &e->vocab0, &e->n_vocab);
    const size_t nb = (size_t)e->n_batch;
    e->slots = calloc((size_t)e->n_slots, sizeof *e->slots);
    for (int i = 0; e->slots && i < e->n_slots; i++) e->slots[i] = (slot_state){ .window = e->ctx_size };
    e->wire = malloc((size_t)e->n_slots * sizeof(step_seq) + nb * sizeof(int32_t));
    e->batch = malloc((size_t)e->n_slots * sizeof *e->batch);
    e->local_logits = malloc(nb * e->n_vocab * sizeof *e->local_logits);
    e->argmax_value = malloc(nb * sizeof *e->argmax_value);
    e->argmax_id = malloc(nb * sizeof *e->argmax_id);
    e->best_value = malloc(nb * sizeof *e->best_value);
    e->best_id = malloc(nb * sizeof *e->best_id);
    if (!e->slots || !e->wire || !e->batch || !e->local_logits || !e->argmax_value || !e->argmax_id ||
        !e->best_value || !e->best_id)
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the outputs of a %d-token step (%.1f MiB of logits)",
                             e->n_batch, (double)(nb * e->n_vocab * sizeof(float)) / (1 << 20));
    snprintf(e->desc, sizeof e->desc,
             "rank %d of %d: heads %d..%d, kv heads %d..%d%s, ffn %d..%d, vocab %d..%d; weights %s, %.1f MiB; "
             "kv cache %d slots x %d positions in %s, %.1f MiB; numa %s",
             rank, world, sh->head0, sh->head0 + sh->n_heads - 1, sh->kv_head0, sh->kv_head0 + sh->n_kv_heads - 1,
             e->plan.kv_replicated ? " (replicated)" : "", sh->ffn0, sh->ffn0 + sh->n_ffn - 1, sh->vocab0,
             sh->vocab0 + sh->n_vocab - 1, model_quant_desc(e->m), (double)model_weight_bytes(e->m) / (1 << 20),
             e->n_slots, e->ctx_size, ifn_kv_type_name(p->kv_type), (double)model_ctx_kv_bytes(e->ctx) / (1 << 20),
             e->numa.desc);
    return IFN_OK;
}

/* Appends every rank's resident memory after load to rank 0's description, and sums the
 * ranks' weight bytes. */
static ifn_status gather_totals(engine *e)
{
    int world = comm_world(e->comm);
    uint64_t bytes = model_weight_bytes(e->m);
    CHECK(comm_allreduce_sum_u64(e->comm, &bytes));
    e->weight_bytes = (size_t)bytes;
    float mine = (float)process_rss_bytes() / (1 << 20);
    float *all = comm_rank(e->comm) == 0 ? malloc((size_t)world * sizeof *all) : NULL;
    if (comm_rank(e->comm) == 0 && !all) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    ifn_status s = comm_gather(e->comm, &mine, 1, all);
    if (s == IFN_OK && all) {
        size_t len = strlen(e->desc);
        len += (size_t)snprintf(e->desc + len, sizeof e->desc - len, "; resident after load (MiB):");
        for (int r = 0; r < world && len < sizeof e->desc; r++)
            len += (size_t)snprintf(e->desc + len, sizeof e->desc - len, " %.1f", all[r]);
    }
    free(all);
    return s;
}

/* Every rank loaded the same model with the same options (fingerprint.h). */
static ifn_status check_same_model(engine *e, const engine_params *p)
{
    fingerprint fp;
    int ok = fingerprint_take(e->mf ? p->model_path : NULL, &e->cfg, p->quant, e->ctx_size, e->n_slots, e->n_batch,
                              (int)p->kv_type, &fp) == IFN_OK;
    int all = ok;
    CHECK(comm_allreduce_min_int(e->comm, &all));
    if (!all) return ok ? ifn_error_set(IFN_ERR_IO, "another rank could not read its model file") : IFN_ERR_IO;
    return fingerprint_check(e->comm, &fp, p->model_path);
}

ifn_status engine_create(comm *c, const engine_params *p, engine **out)
{
    *out = NULL;
    engine *e = calloc(1, sizeof *e);
    if (!e) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the engine");
    e->comm = c;
    ifn_status s = load_local(e, p);
    /* Agree: the lowest failing rank (if any) reports; the others fail quietly. */
    int world = comm_world(c), rank = comm_rank(c);
    int first_failed = s == IFN_OK ? world : rank;
    ifn_status agreed = comm_allreduce_min_int(c, &first_failed);
    if (agreed != IFN_OK) s = agreed;
    else if (first_failed < world && s == IFN_OK) {
        s = IFN_ERR_INTERNAL; /* another rank failed and says why */
    }
    if (s == IFN_OK && (s = check_same_model(e, p)) != IFN_OK) { /* rank 0 names the difference */
        engine_destroy(e);
        return s;
    }
    if (s == IFN_OK) s = gather_totals(e);
    if (s == IFN_OK) {
        fprintf(stderr, "infernode: rank %d: %s\n", rank, e->numa.desc); /* where each rank's threads run */
        *out = e;
        return IFN_OK;
    }
    if (first_failed != rank && agreed == IFN_OK) ifn_error_clear();
    engine_destroy(e);
    return s;
}

void engine_destroy(engine *e)
{
    if (!e) return;
    free(e->best_id);
    free(e->best_value);
    free(e->argmax_id);
    free(e->argmax_value);
    free(e->local_logits);
    free(e->batch);
    free(e->wire);
    free(e->slots);
    model_ctx_destroy(e->ctx);
    model_destroy(e->m);
    model_file_close(e->mf);
    free(e);
}

const model_file *engine_model_file(const engine *e) { return e->mf; }
const model_config *engine_config(const engine *e) { return &e->cfg; }
int engine_ctx_size(const engine *e) { return e->ctx_size; }
int engine_n_slots(const engine *e) { return e->n_slots; }
int engine_n_batch(const engine *e) { return e->n_batch; }
int engine_ranks(const engine *e) { return comm_world(e->comm); }
int engine_slot_len(const engine *e, int slot) { return slot >= 0 && slot < e->n_slots ? e->slots[slot].len : -1; }
size_t engine_kv_bytes(const engine *e) { return model_ctx_kv_bytes(e->ctx); }

ifn_status engine_slot_ring(engine *e, int slot, int window, int n_keep)
{
    if (slot < 0 || slot >= e->n_slots)
        return ifn_error_set(IFN_ERR_RANGE, "slot %d is outside 0..%d", slot, e->n_slots - 1);
    if (window < 1 || window > e->ctx_size)
        return ifn_error_set(IFN_ERR_RANGE, "window %d is outside 1..%d (the context size)", window, e->ctx_size);
    if (n_keep < 0 || n_keep >= window)
        return ifn_error_set(IFN_ERR_RANGE, "n_keep %d is outside 0..%d (below the window of %d)", n_keep, window - 1,
                             window);
    e->slots[slot] = (slot_state){ .window = window, .n_keep = n_keep };
    return IFN_OK;
}
size_t engine_weight_bytes(const engine *e) { return e->weight_bytes; }
const char *engine_quant_desc(const engine *e) { return model_quant_desc(e->m); }
const char *engine_describe(const engine *e) { return e->desc; }

/* After the ranks have started a step there is no clean way back: report and end the job. */
static ifn_status fatal(engine *e, ifn_status s)
{
    if (comm_world(e->comm) == 1) return s;
    fprintf(stderr, "infernode: error (rank %d of %d): %s\n", comm_rank(e->comm), comm_world(e->comm), ifn_error_detail());
    comm_abort(e->comm, 1);
}

/* The k largest of row (this rank's columns), as global ids, descending, lowest id first on
 * ties; missing entries (k > columns) are -inf with id -1. */
static void local_topk(const float *row, int n, int vocab0, int k, float *values, float *ids)
{
    for (int j = 0; j < k; j++) {
        values[j] = -INFINITY;
        ids[j] = -1.0f;
    }
    for (int i = 0; i < n; i++) {
        float v = row[i];
        if (!(v > values[k - 1])) continue;
        int j = k - 1;
        while (j > 0 && v > values[j - 1]) {
            values[j] = values[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        values[j] = v;
        ids[j] = (float)(vocab0 + i); /* exact: vocabularies are below 2^24 */
    }
}

/* Merges the ranks' top-k lists of one row (rank r's: k values then k ids at
 * all[r * stride]) into values[k], ids[k]: descending, lowest id first on ties. */
static void merge_topk(const float *all, size_t stride, int world, int k, float *values, int32_t *ids)
{
    for (int j = 0; j < k; j++) {
        values[j] = -INFINITY;
        ids[j] = -1;
    }
    for (int r = 0; r < world; r++)
        for (int j = 0; j < k; j++) {
            float v = all[(size_t)r * stride + j];
            int32_t id = (int32_t)all[(size_t)r * stride + k + j];
            if (id < 0) continue;
            int pos = k;
            while (pos > 0 && (v > values[pos - 1] || (v == values[pos - 1] && id < ids[pos - 1]))) pos--;
            if (pos >= k) continue;
            memmove(values + pos + 1, values + pos, (size_t)(k - pos - 1) * sizeof *values);
            memmove(ids + pos + 1, ids + pos, (size_t)(k - pos - 1) * sizeof *ids);
            values[pos] = v;
            ids[pos] = id;
        }
}

/* Brings the step's output rows (local_logits [sum of n_out][n_vocab], sequence after
 * sequence) to rank 0 in the forms asked for, with one collective per kind present in the
 * step: one argmax reduction over every ARGMAX row, one gather of every TOPK row's candidates,
 * one gather of every FULL row. Every rank holds the same descriptors d, so the collectives
 * pair up. seqs: rank 0's output buffers (NULL on the other ranks). */
static ifn_status reduce_outputs(engine *e, const step_seq *d, int n_seqs, engine_seq *seqs)
{
    const int rank = comm_rank(e->comm), world = comm_world(e->comm), nv = e->n_vocab;
    const int vocab = engine_config(e)->vocab_size;
    int n_argmax = 0, n_full = 0; /* rows */
    size_t n_topk = 0;            /* floats: per TOPK row, k values then k ids */
    for (int i = 0; i < n_seqs; i++) {
        if (d[i].mode == ENGINE_LOGITS_ARGMAX) n_argmax += d[i].n_out;
        if (d[i].mode == ENGINE_LOGITS_TOPK) n_topk += (size_t)2 * d[i].top_k * d[i].n_out;
        if (d[i].mode == ENGINE_LOGITS_FULL) n_full += d[i].n_out;
    }
    float *topk = n_topk ? malloc(n_topk * sizeof *topk) : NULL;                                   /* [n_topk] */
    float *topk_all = n_topk && rank == 0 ? malloc(world * n_topk * sizeof *topk_all) : NULL;      /* [world][n_topk] */
    float *full_all = n_full && rank == 0 && world > 1 ? malloc((size_t)n_full * vocab * sizeof *full_all) : NULL;
    if ((n_topk && (!topk || (rank == 0 && !topk_all))) || (n_full && rank == 0 && world > 1 && !full_all)) {
        free(topk);
        free(topk_all);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the outputs of a step (%zu top-k values, %d rows of logits)",
                             n_topk, n_full);
    }

    /* This rank's candidates from its columns. FULL rows move to the front of local_logits:
     * row f goes over row f <= r, which has been read already. */
    for (int i = 0, r = 0, a = 0, f = 0, o = 0; i < n_seqs; i++)
        for (int j = 0; j < d[i].n_out; j++, r++) {
            const float *row = e->local_logits + (size_t)r * nv;
            const int k = d[i].top_k;
            if (d[i].mode == ENGINE_LOGITS_ARGMAX) {
                int best = 0;
                for (int c = 1; c < nv; c++)
                    if (row[c] > row[best]) best = c;
                e->argmax_value[a] = row[best];
                e->argmax_id[a++] = e->vocab0 + best;
            } else if (d[i].mode == ENGINE_LOGITS_TOPK) {
                local_topk(row, nv, e->vocab0, k, topk + o, topk + o + k);
                o += 2 * k;
            } else if (d[i].mode == ENGINE_LOGITS_FULL) {
                if (f != r) memmove(e->local_logits + (size_t)f * nv, row, (size_t)nv * sizeof *row);
                f++;
            }
        }

    ifn_status s = IFN_OK;
    if (n_argmax) s = comm_argmax(e->comm, e->argmax_value, e->argmax_id, n_argmax, e->best_value, e->best_id);
    if (s == IFN_OK && n_topk) s = comm_gather(e->comm, topk, (int)n_topk, topk_all);
    const float *full = e->local_logits; /* rank r's block [n_full][its n_vocab], ranks in order */
    if (s == IFN_OK && n_full && world > 1) {
        s = comm_gather(e->comm, e->local_logits, n_full * nv, full_all);
        full = full_all;
    }

    if (s == IFN_OK && rank == 0) /* into each sequence's buffers */
        for (int i = 0, a = 0, f = 0, o = 0; i < n_seqs; i++) {
            engine_output *out = &seqs[i].out;
            const int k = d[i].top_k;
            for (int j = 0; j < d[i].n_out; j++) {
                if (d[i].mode == ENGINE_LOGITS_ARGMAX) {
                    out->ids[j] = e->best_id[a];
                    if (out->values) out->values[j] = e->best_value[a];
                    a++;
                } else if (d[i].mode == ENGINE_LOGITS_TOPK) {
                    merge_topk(topk_all + o, n_topk, world, k, out->values + (size_t)j * k, out->ids + (size_t)j * k);
                    o += 2 * k;
                } else if (d[i].mode == ENGINE_LOGITS_FULL) {
                    for (int r = 0, off = 0; r < world; off += n_full * e->plan.shards[r].n_vocab, r++) {
                        const tp_shard *sh = &e->plan.shards[r];
                        memcpy(out->logits + (size_t)j * vocab + sh->vocab0, full + off + (size_t)f * sh->n_vocab,
                               (size_t)sh->n_vocab * sizeof(float));
                    }
                    f++;
                }
            }
        }
    free(topk);
    free(topk_all);
    free(full_all);
    return s;
}

/* The work of one step on this rank: every rank runs it with the same step in e->wire.
 * seqs: rank 0's output buffers (NULL on the other ranks). */
static ifn_status run_step(engine *e, int n_seqs, engine_seq *seqs)
{
    const step_seq *d = e->wire;
    const int32_t *tokens = (const int32_t *)(d + n_seqs); /* [the step's tokens] */
    for (int i = 0, t0 = 0; i < n_seqs; t0 += d[i].n_tokens, i++)
        e->batch[i] = (model_batch_seq){ .slot = d[i].slot, .pos0 = d[i].pos0, .n_tokens = d[i].n_tokens,
                                         .tokens = tokens + t0, .n_out = d[i].n_out, .window = d[i].window,
                                         .n_keep = d[i].n_keep, .shift = d[i].shift, .discard = d[i].discard };
    CHECK(model_batch_eval(e->ctx, e->batch, n_seqs, e->local_logits));
    return reduce_outputs(e, d, n_seqs, seqs);
}

static const char *mode_name(engine_logits mode)
{
    switch (mode) {
    case ENGINE_LOGITS_NONE: return "NONE";
    case ENGINE_LOGITS_ARGMAX: return "ARGMAX";
    case ENGINE_LOGITS_TOPK: return "TOPK";
    case ENGINE_LOGITS_FULL: return "FULL";
    }
    return "?";
}

/* Sequence i's output request against its n_out rows. */
static ifn_status check_output(const engine *e, int i, const engine_output *o, int n_out)
{
    const int vocab = engine_config(e)->vocab_size;
    switch (o->mode) {
    case ENGINE_LOGITS_NONE:
        if (n_out != 0)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].n_out is %d with out.mode NONE: it must be 0", i, n_out);
        return IFN_OK;
    case ENGINE_LOGITS_ARGMAX:
        if (!o->ids) return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].out.ids is NULL (mode ARGMAX)", i);
        break;
    case ENGINE_LOGITS_TOPK:
        if (o->top_k < 1 || o->top_k > vocab)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].out.top_k %d is outside 1..%d", i, o->top_k, vocab);
        if (!o->ids || !o->values)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].out.%s is NULL (mode TOPK)", i, o->ids ? "values" : "ids");
        break;
    case ENGINE_LOGITS_FULL:
        if (!o->logits) return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].out.logits is NULL (mode FULL)", i);
        break;
    default: return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].out.mode %d is not an engine_logits", i, (int)o->mode);
    }
    if (n_out == 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "seqs[%d].n_out is 0 with out.mode %s: only NONE has no output rows", i,
                             mode_name(o->mode));
    return IFN_OK;
}

/* Everything engine_step promises to check, before any rank starts. */
static ifn_status check_step(engine *e, const engine_seq *seqs, int n_seqs)
{
    if (n_seqs < 1 || n_seqs > e->n_slots)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a step of %d sequences: it takes 1..%d (the slots)", n_seqs, e->n_slots);
    if (!seqs) return ifn_error_set(IFN_ERR_INVALID_ARG, "a step of %d sequences without the sequences", n_seqs);
    for (int i = 0; i < n_seqs; i++) { /* the ring fields, once the slot is known to be in range */
        const engine_seq *s = &seqs[i];
        e->batch[i] = (model_batch_seq){ .slot = s->slot, .pos0 = s->pos0, .n_tokens = s->n_tokens, .tokens = s->tokens,
                                         .n_out = s->n_out };
        if (s->slot < 0 || s->slot >= e->n_slots) continue;
        const slot_state *st = &e->slots[s->slot];
        const int droppable = st->len > st->n_keep ? st->len - st->n_keep : 0;
        if (s->discard < 0 || s->discard > droppable)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].discard %d is outside 0..%d (slot %d holds %d positions after "
                                 "its %d sinks)", i, s->discard, droppable, s->slot, droppable, st->n_keep);
        e->batch[i].window = st->window;
        e->batch[i].n_keep = st->n_keep;
        e->batch[i].discard = s->discard;
        e->batch[i].shift = (int)(((int64_t)st->shift + s->discard) % (st->window - st->n_keep));
    }
    CHECK(model_batch_check(e->ctx, e->batch, n_seqs));
    int64_t topk_values = 0; /* from every rank, gathered at rank 0 and counted in int */
    for (int i = 0; i < n_seqs; i++) {
        const engine_seq *s = &seqs[i];
        const int held = e->slots[s->slot].len - s->discard;
        if (s->pos0 > held)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].pos0 %d is beyond the %d positions slot %d holds%s", i, s->pos0,
                                 held, s->slot, s->discard ? " after the discard" : "");
        CHECK(check_output(e, i, &s->out, s->n_out));
        if (s->out.mode == ENGINE_LOGITS_TOPK) topk_values += (int64_t)2 * s->out.top_k * s->n_out * comm_world(e->comm);
        if (topk_values > INT_MAX)
            return ifn_error_set(IFN_ERR_RANGE, "seqs[%d].out.top_k: %d candidates for %d rows make the step's top-k "
                                 "lists from %d ranks exceed 2^31 values", i, s->out.top_k, s->n_out, comm_world(e->comm));
    }
    return IFN_OK;
}

static size_t wire_bytes(int n_seqs, int n_tokens)
{
    return (size_t)n_seqs * sizeof(step_seq) + (size_t)n_tokens * sizeof(int32_t);
}

ifn_status engine_step(engine *e, engine_seq *seqs, int n_seqs)
{
    CHECK(check_step(e, seqs, n_seqs));
    step_header h = { STEP_RUN, n_seqs, 0 };
    step_seq *d = e->wire;
    for (int i = 0; i < n_seqs; i++) {
        const engine_seq *s = &seqs[i];
        const model_batch_seq *b = &e->batch[i]; /* check_step filled in the ring */
        d[i] = (step_seq){ .slot = s->slot, .pos0 = s->pos0, .n_tokens = s->n_tokens, .n_out = s->n_out,
                           .mode = (int32_t)s->out.mode, .top_k = s->out.mode == ENGINE_LOGITS_TOPK ? s->out.top_k : 0,
                           .window = b->window, .n_keep = b->n_keep, .shift = b->shift, .discard = b->discard };
        memcpy((int32_t *)(d + n_seqs) + h.n_tokens, s->tokens, (size_t)s->n_tokens * sizeof(int32_t));
        h.n_tokens += s->n_tokens;
    }
    ifn_status st = comm_bcast(e->comm, &h, sizeof h, 0);
    if (st == IFN_OK) st = comm_bcast(e->comm, e->wire, wire_bytes(n_seqs, h.n_tokens), 0);
    if (st == IFN_OK) st = run_step(e, n_seqs, seqs);
    /* A failed step (possible here only in a single process) may have written from pos0 on,
     * and may have re-rotated some of a discarding sequence's keys: that slot is lost. */
    for (int i = 0; i < n_seqs; i++) {
        slot_state *sl = &e->slots[seqs[i].slot];
        if (st == IFN_OK) {
            sl->len = seqs[i].pos0 + seqs[i].n_tokens;
            sl->shift = d[i].shift;
        } else if (seqs[i].discard) {
            sl->len = 0;
            sl->shift = 0;
        } else if (sl->len > seqs[i].pos0) {
            sl->len = seqs[i].pos0;
        }
    }
    return st == IFN_OK ? IFN_OK : fatal(e, st);
}

ifn_status engine_eval(engine *e, const int32_t *tokens, int n, bool all_rows, engine_output *out)
{
    const model_config *c = engine_config(e);
    const int len = e->slots[0].len, window = e->slots[0].window;
    if (n < 1) return ifn_error_set(IFN_ERR_INVALID_ARG, "no tokens to evaluate");
    if (!tokens) return ifn_error_set(IFN_ERR_INVALID_ARG, "%d tokens to evaluate without the tokens", n);
    if (n > window - len)
        return ifn_error_set(IFN_ERR_RANGE, "%d tokens do not fit in the context: %d of %d positions are used", n, len,
                             window);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ifn_error_set(IFN_ERR_RANGE, "token id %d at index %d is outside the vocabulary (0..%d)", tokens[i], i,
                                 c->vocab_size - 1);
    if (all_rows && out->mode != ENGINE_LOGITS_FULL)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "logits of every row are asked for with out.mode %s: only FULL has them",
                             mode_name(out->mode));
    const int n_out_last = out->mode == ENGINE_LOGITS_NONE ? 0 : 1; /* rows of the last step without all_rows */
    CHECK(check_output(e, 0, out, all_rows ? n : n_out_last));
    for (int done = 0; done < n;) {
        const int step = n - done < e->n_batch ? n - done : e->n_batch;
        const bool last = done + step == n;
        engine_seq s = { .slot = 0, .pos0 = len + done, .n_tokens = step, .tokens = tokens + done, .out = *out };
        s.n_out = all_rows ? step : last ? n_out_last : 0;
        if (all_rows) s.out.logits = out->logits + (size_t)done * c->vocab_size;
        if (s.n_out == 0) s.out.mode = ENGINE_LOGITS_NONE;
        CHECK(engine_step(e, &s, 1));
        done += step;
    }
    return IFN_OK;
}

void engine_reset(engine *e)
{
    e->slots[0].len = 0;
    e->slots[0].shift = 0;
}

ifn_status engine_stop(engine *e)
{
    step_header h = { STEP_STOP, 0, 0 };
    return comm_bcast(e->comm, &h, sizeof h, 0);
}

/* A worker's check of the step it received: enough that its buffers are used within bounds
 * (model_batch_eval checks slots, positions and tokens). Rank 0 checked everything before it
 * sent the step, so a failure here is a bug. */
static ifn_status check_wire(const engine *e, const step_header *h)
{
    const step_seq *d = e->wire;
    const int vocab = engine_config(e)->vocab_size;
    int64_t total = 0;
    for (int i = 0; i < h->n_seqs; i++) {
        total += d[i].n_tokens;
        bool none = d[i].mode == ENGINE_LOGITS_NONE;
        if (d[i].mode < ENGINE_LOGITS_NONE || d[i].mode > ENGINE_LOGITS_FULL || none != (d[i].n_out == 0) ||
            (d[i].mode == ENGINE_LOGITS_TOPK && (d[i].top_k < 1 || d[i].top_k > vocab)))
            return ifn_error_set(IFN_ERR_INTERNAL, "step from rank 0: sequence %d has mode %d, top-k %d, %d output rows", i,
                                 d[i].mode, d[i].top_k, d[i].n_out);
    }
    if (total != h->n_tokens)
        return ifn_error_set(IFN_ERR_INTERNAL, "step from rank 0: its sequences have %lld tokens, its header says %d",
                             (long long)total, h->n_tokens);
    return IFN_OK;
}

ifn_status engine_serve(engine *e)
{
    for (;;) {
        step_header h;
        CHECK(comm_bcast(e->comm, &h, sizeof h, 0));
        if (h.op == STEP_STOP) return IFN_OK;
        if (h.op != STEP_RUN || h.n_seqs < 1 || h.n_seqs > e->n_slots || h.n_tokens < 1 || h.n_tokens > e->n_batch)
            return fatal(e, ifn_error_set(IFN_ERR_INTERNAL, "step from rank 0 with op %d, %d sequences, %d tokens", h.op,
                                          h.n_seqs, h.n_tokens));
        ifn_status s = comm_bcast(e->comm, e->wire, wire_bytes(h.n_seqs, h.n_tokens), 0);
        if (s == IFN_OK) s = check_wire(e, &h);
        if (s == IFN_OK) s = run_step(e, h.n_seqs, NULL);
        if (s != IFN_OK) return fatal(e, s);
    }
}
