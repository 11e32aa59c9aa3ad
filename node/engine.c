#include "engine.h"

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

typedef enum { STEP_EVAL = 1, STEP_RESET, STEP_STOP } step_op;

/* What rank 0 broadcasts for each step; the token ids follow in a second broadcast. */
typedef struct {
    int32_t op;
    int32_t n_tokens;
    int32_t mode;  /* engine_logits */
    int32_t top_k;
} step_header;

struct engine {
    comm *comm;
    model_file *mf;
    model *m;
    model_seq *seq;
    tp_plan plan;
    numa_binding numa;
    int ctx_size, n_batch;
    int vocab0, n_vocab;   /* this rank's logits columns */
    float *local_logits;   /* [n_batch][n_vocab] */
    int32_t *tokens;       /* [n_batch]: a worker's copy of the step's tokens */
    char desc[1024];
};

/* The block size a row-sharded input must respect: the quantization group asked for, or the
 * largest block of the types the file stores its matrices in. */
static ifn_status shard_alignment(const model_file *mf, const char *quant, int *k_align)
{
    *k_align = 1;
    if (quant) {
        qw_spec spec;
        CHECK(qw_spec_parse(quant, &spec));
        *k_align = spec.group ? spec.group : 1;
        return IFN_OK;
    }
    const model_config *c = model_file_config(mf);
    const char *names[2] = { "blk.0.attn_output.weight", "blk.0.ffn_down.weight" };
    const int64_t ins[2] = { (int64_t)c->n_heads * c->head_dim, c->ffn_dim };
    for (int i = 0; i < 2; i++) {
        tensor_view v;
        int64_t ne[2] = { ins[i], c->dim };
        if (model_file_tensor(mf, names[i], 2, ne, &v) == IFN_OK && ifn_dtype_block_size(v.type) > *k_align)
            *k_align = ifn_dtype_block_size(v.type);
    }
    ifn_error_clear(); /* a missing tensor is reported by model_load, with its name */
    return IFN_OK;
}

static ifn_status load_local(engine *e, const engine_params *p)
{
    int rank = comm_rank(e->comm), world = comm_world(e->comm);
    CHECK(numa_bind_rank(comm_local_rank(e->comm), comm_local_size(e->comm), &e->numa));
    CHECK(model_file_open(p->model_path, &e->mf));
    const model_config *c = model_file_config(e->mf);
    int k_align;
    CHECK(shard_alignment(e->mf, p->quant, &k_align));
    tp_model_dims dims = { c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab_size };
    CHECK(tp_plan_build(&dims, world, k_align, &e->plan));
    const tp_shard *sh = &e->plan.shards[rank];
    model_options opts = { .quant = p->quant, .shard = world > 1 ? sh : NULL, .comm = world > 1 ? e->comm : NULL };
    CHECK(model_load(e->mf, &opts, &e->m));
    model_file_release_pages(e->mf); /* the packed copy is what runs; the file's pages may go */
    e->ctx_size = p->ctx_size ? p->ctx_size : (c->ctx_len < DEFAULT_CTX_CAP ? c->ctx_len : DEFAULT_CTX_CAP);
    e->n_batch = p->n_batch ? p->n_batch : DEFAULT_BATCH;
    if (e->n_batch > e->ctx_size) e->n_batch = e->ctx_size;
    CHECK(model_seq_create(e->m, e->ctx_size, e->n_batch, &e->seq));
    model_vocab_slice(e->m, &e->vocab0, &e->n_vocab);
    e->local_logits = malloc((size_t)e->n_batch * e->n_vocab * sizeof(float));
    e->tokens = malloc((size_t)e->n_batch * sizeof(int32_t));
    if (!e->local_logits || !e->tokens) return ifn_error_set(IFN_ERR_NOMEM, "no memory for logits");
    snprintf(e->desc, sizeof e->desc,
             "rank %d of %d: heads %d..%d, kv heads %d..%d%s, ffn %d..%d, vocab %d..%d; weights %s, %.1f MiB; numa %s",
             rank, world, sh->head0, sh->head0 + sh->n_heads - 1, sh->kv_head0, sh->kv_head0 + sh->n_kv_heads - 1,
             e->plan.kv_replicated ? " (replicated)" : "", sh->ffn0, sh->ffn0 + sh->n_ffn - 1, sh->vocab0,
             sh->vocab0 + sh->n_vocab - 1, model_quant_desc(e->m), (double)model_weight_bytes(e->m) / (1 << 20),
             e->numa.desc);
    return IFN_OK;
}

/* Appends every rank's resident memory after load to rank 0's description. */
static ifn_status report_memory(engine *e)
{
    int world = comm_world(e->comm);
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
    if (s == IFN_OK) s = report_memory(e);
    if (s == IFN_OK) {
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
    free(e->tokens);
    free(e->local_logits);
    model_seq_destroy(e->seq);
    model_destroy(e->m);
    model_file_close(e->mf);
    free(e);
}

const model_file *engine_model_file(const engine *e) { return e->mf; }
const model_config *engine_config(const engine *e) { return model_file_config(e->mf); }
int engine_ctx_size(const engine *e) { return e->ctx_size; }
int engine_pos(const engine *e) { return model_seq_pos(e->seq); }
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

/* Brings this step's logits to rank 0 in the form asked for. */
static ifn_status reduce_logits(engine *e, int n, const step_header *h, engine_output *out)
{
    const float *last = e->local_logits + (size_t)(h->mode == ENGINE_LOGITS_FULL_ALL ? n - 1 : 0) * e->n_vocab;
    int rank = comm_rank(e->comm), world = comm_world(e->comm);
    int vocab = engine_config(e)->vocab_size;
    switch ((engine_logits)h->mode) {
    case ENGINE_LOGITS_NONE: return IFN_OK;
    case ENGINE_LOGITS_ARGMAX: {
        int32_t best = 0;
        for (int i = 1; i < e->n_vocab; i++)
            if (last[i] > last[best]) best = i;
        float value = last[best];
        int32_t id = e->vocab0 + best;
        float got_value;
        int32_t got_id;
        CHECK(comm_argmax(e->comm, &value, &id, 1, &got_value, &got_id));
        if (rank == 0) {
            out->ids[0] = got_id;
            if (out->values) out->values[0] = got_value;
        }
        return IFN_OK;
    }
    case ENGINE_LOGITS_TOPK: {
        int k = h->top_k;
        float *mine = malloc((size_t)2 * k * sizeof *mine);
        float *all = rank == 0 ? malloc((size_t)2 * k * world * sizeof *all) : NULL;
        ifn_status s = mine && (rank != 0 || all) ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for top-k");
        if (s == IFN_OK) {
            local_topk(last, e->n_vocab, e->vocab0, k, mine, mine + k);
            s = comm_gather(e->comm, mine, 2 * k, all);
        }
        if (s == IFN_OK && rank == 0) { /* merge the ranks' lists */
            float *vals = out->values;
            for (int j = 0; j < k; j++) {
                vals[j] = -INFINITY;
                out->ids[j] = -1;
            }
            for (int r = 0; r < world; r++)
                for (int j = 0; j < k; j++) {
                    float v = all[(size_t)r * 2 * k + j];
                    int32_t id = (int32_t)all[(size_t)r * 2 * k + k + j];
                    if (id < 0) continue;
                    int pos = k;
                    while (pos > 0 && (v > vals[pos - 1] || (v == vals[pos - 1] && id < out->ids[pos - 1]))) pos--;
                    if (pos >= k) continue;
                    memmove(vals + pos + 1, vals + pos, (size_t)(k - pos - 1) * sizeof *vals);
                    memmove(out->ids + pos + 1, out->ids + pos, (size_t)(k - pos - 1) * sizeof *out->ids);
                    vals[pos] = v;
                    out->ids[pos] = id;
                }
        }
        free(mine);
        free(all);
        return s;
    }
    case ENGINE_LOGITS_FULL_LAST: return comm_gather(e->comm, last, e->n_vocab, rank == 0 ? out->logits : NULL);
    case ENGINE_LOGITS_FULL_ALL: {
        if (world == 1) {
            memcpy(out->logits, e->local_logits, (size_t)n * vocab * sizeof(float));
            return IFN_OK;
        }
        float *blocks = rank == 0 ? malloc((size_t)n * vocab * sizeof *blocks) : NULL;
        if (rank == 0 && !blocks) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %d rows of logits", n);
        ifn_status s = comm_gather(e->comm, e->local_logits, n * e->n_vocab, blocks);
        if (s == IFN_OK && rank == 0) /* blocks: [rank][n][n_vocab of that rank] → [n][vocab] */
            for (int r = 0, off = 0; r < world; r++) {
                const tp_shard *sh = &e->plan.shards[r];
                for (int t = 0; t < n; t++)
                    memcpy(out->logits + (size_t)t * vocab + sh->vocab0, blocks + off + (size_t)t * sh->n_vocab,
                           (size_t)sh->n_vocab * sizeof(float));
                off += n * sh->n_vocab;
            }
        free(blocks);
        return s;
    }
    }
    return ifn_error_set(IFN_ERR_INTERNAL, "unknown logits mode %d", h->mode);
}

/* The work of one step on this rank (every rank runs it with the same header and tokens). */
static ifn_status run_step(engine *e, const step_header *h, const int32_t *tokens, engine_output *out)
{
    if (h->op == STEP_RESET) {
        model_seq_destroy(e->seq);
        e->seq = NULL;
        return model_seq_create(e->m, e->ctx_size, e->n_batch, &e->seq);
    }
    bool all = h->mode == ENGINE_LOGITS_FULL_ALL;
    for (int done = 0; done < h->n_tokens;) {
        int step = h->n_tokens - done < e->n_batch ? h->n_tokens - done : e->n_batch;
        CHECK(model_seq_eval(e->seq, tokens + done, step, all, e->local_logits));
        if (all && h->mode != ENGINE_LOGITS_NONE) {
            engine_output part = *out;
            if (comm_rank(e->comm) == 0)
                part.logits = out->logits + (size_t)done * engine_config(e)->vocab_size;
            CHECK(reduce_logits(e, step, h, &part));
        }
        done += step;
    }
    return all ? IFN_OK : reduce_logits(e, 1, h, out);
}

static ifn_status broadcast_step(engine *e, step_header *h, int32_t *tokens)
{
    CHECK(comm_bcast(e->comm, h, sizeof *h, 0));
    if (h->op == STEP_EVAL && h->n_tokens > 0) CHECK(comm_bcast(e->comm, tokens, (size_t)h->n_tokens * sizeof *tokens, 0));
    return IFN_OK;
}

ifn_status engine_eval(engine *e, const int32_t *tokens, int n, engine_output *out)
{
    const model_config *c = engine_config(e);
    if (n < 1) return ifn_error_set(IFN_ERR_INVALID_ARG, "no tokens to evaluate");
    if (n > e->ctx_size - model_seq_pos(e->seq))
        return ifn_error_set(IFN_ERR_RANGE, "%d tokens do not fit in the context: %d of %d positions are used", n,
                             model_seq_pos(e->seq), e->ctx_size);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ifn_error_set(IFN_ERR_RANGE, "token id %d at index %d is outside the vocabulary (0..%d)", tokens[i], i,
                                 c->vocab_size - 1);
    if (out->mode == ENGINE_LOGITS_TOPK && (out->top_k < 1 || out->top_k > c->vocab_size))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "top-k of %d outside 1..%d", out->top_k, c->vocab_size);
    step_header h = { STEP_EVAL, n, (int32_t)out->mode, out->mode == ENGINE_LOGITS_TOPK ? out->top_k : 0 };
    ifn_status s = broadcast_step(e, &h, (int32_t *)tokens);
    if (s == IFN_OK) s = run_step(e, &h, tokens, out);
    return s == IFN_OK ? IFN_OK : fatal(e, s);
}

ifn_status engine_reset(engine *e)
{
    step_header h = { STEP_RESET, 0, 0, 0 };
    ifn_status s = broadcast_step(e, &h, NULL);
    if (s == IFN_OK) s = run_step(e, &h, NULL, NULL);
    return s == IFN_OK ? IFN_OK : fatal(e, s);
}

ifn_status engine_stop(engine *e)
{
    step_header h = { STEP_STOP, 0, 0, 0 };
    return broadcast_step(e, &h, NULL);
}

ifn_status engine_serve(engine *e)
{
    for (;;) {
        step_header h;
        CHECK(comm_bcast(e->comm, &h, sizeof h, 0));
        if (h.op == STEP_STOP) return IFN_OK;
        if (h.op == STEP_EVAL) {
            if (h.n_tokens < 1 || h.n_tokens > e->ctx_size)
                return fatal(e, ifn_error_set(IFN_ERR_INTERNAL, "step of %d tokens from rank 0", h.n_tokens));
            int32_t *tokens = h.n_tokens <= e->n_batch ? e->tokens : malloc((size_t)h.n_tokens * sizeof *tokens);
            if (!tokens) return fatal(e, ifn_error_set(IFN_ERR_NOMEM, "no memory for %d tokens", h.n_tokens));
            ifn_status s = comm_bcast(e->comm, tokens, (size_t)h.n_tokens * sizeof *tokens, 0);
            engine_output none = { .mode = (engine_logits)h.mode, .top_k = h.top_k };
            if (s == IFN_OK) s = run_step(e, &h, tokens, &none);
            if (tokens != e->tokens) free(tokens);
            if (s != IFN_OK) return fatal(e, s);
        } else if (run_step(e, &h, NULL, NULL) != IFN_OK) {
            return fatal(e, IFN_ERR_NOMEM);
        }
    }
}
