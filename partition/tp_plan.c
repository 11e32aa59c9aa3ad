#include "tp_plan.h"

#include <string.h>

/* The 16-row blocks of the packed weights: every output-row split is a multiple of this. */
#define ROW_BLOCK 16

static int gcd(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int lcm(int a, int b) { return a / gcd(a, b) * b; }

/* Splits `units` as evenly as possible: the first units % world ranks get one more. */
static void split(int units, int world, int rank, int *first, int *count)
{
    int base = units / world, extra = units % world;
    *count = base + (rank < extra);
    *first = rank * base + (rank < extra ? rank : extra);
}

ifn_status tp_plan_build(const tp_model_dims *d, int world, tp_align align, tp_plan *out)
{
    memset(out, 0, sizeof *out);
    if (world < 1 || world > TP_MAX_RANKS)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d ranks: tensor parallelism supports 1 to %d", world, TP_MAX_RANKS);
    const int attn_align = align.attn > 1 ? align.attn : 1, ffn_align = align.ffn > 1 ? align.ffn : 1;
    if (d->n_heads < 1 || d->n_kv_heads < 1 || d->n_heads % d->n_kv_heads || d->head_dim < 1 || d->ffn_dim < 1 ||
        d->vocab_size < 1)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "invalid model dimensions for a plan");
    out->world = world;
    out->align = (tp_align){ attn_align, ffn_align };
    const int group = d->n_heads / d->n_kv_heads; /* query heads per KV head */

    /* Heads move in units whose width (heads x head_dim) is a multiple of attn_align, because
     * the attention output projection's input is split along them. */
    int head_unit = lcm(d->head_dim, attn_align) / d->head_dim;
    if (world <= d->n_kv_heads) {
        /* Each rank owns whole KV heads and the query heads that read them. */
        int kv_unit = lcm(head_unit, group) / group; /* KV heads per unit */
        if (d->n_kv_heads % kv_unit)
            return ifn_error_set(IFN_ERR_INVALID_ARG,
                                 "%d KV heads of dim %d cannot be split into units aligned to %d inputs", d->n_kv_heads,
                                 d->head_dim, attn_align);
        int units = d->n_kv_heads / kv_unit;
        if (world > units)
            return ifn_error_set(IFN_ERR_INVALID_ARG,
                                 "%d ranks but only %d KV-head units (%d KV heads, %d per unit to keep the attention "
                                 "output aligned to %d inputs)", world, units, d->n_kv_heads, kv_unit, attn_align);
        for (int r = 0; r < world; r++) {
            tp_shard *s = &out->shards[r];
            int u0, nu;
            split(units, world, r, &u0, &nu);
            s->kv_head0 = u0 * kv_unit;
            s->n_kv_heads = nu * kv_unit;
            s->head0 = s->kv_head0 * group;
            s->n_heads = s->n_kv_heads * group;
        }
    } else {
        /* Fewer KV heads than ranks: split query heads, replicate the KV heads they read. */
        if (d->n_heads % head_unit)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "%d heads of dim %d cannot be split into units aligned to %d inputs",
                                 d->n_heads, d->head_dim, attn_align);
        int units = d->n_heads / head_unit;
        if (world > units)
            return ifn_error_set(IFN_ERR_INVALID_ARG,
                                 "%d ranks but only %d attention-head units (%d heads, %d per unit to keep the "
                                 "attention output aligned to %d inputs)", world, units, d->n_heads, head_unit, attn_align);
        out->kv_replicated = true;
        for (int r = 0; r < world; r++) {
            tp_shard *s = &out->shards[r];
            int u0, nu;
            split(units, world, r, &u0, &nu);
            s->head0 = u0 * head_unit;
            s->n_heads = nu * head_unit;
            s->kv_head0 = s->head0 / group;
            s->n_kv_heads = (s->head0 + s->n_heads - 1) / group - s->kv_head0 + 1;
        }
    }

    /* FFN columns: output rows of gate/up (16-row blocks) and inputs of down (ffn_align); the
     * last rank's share ends at ffn_dim. Vocabulary rows likewise in 16-row blocks. */
    if (d->ffn_dim % ffn_align)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "FFN size %d is not a multiple of the quantization group %d",
                             d->ffn_dim, ffn_align);
    int ffn_unit = lcm(ROW_BLOCK, ffn_align);
    int ffn_units = (d->ffn_dim + ffn_unit - 1) / ffn_unit;
    if (world > ffn_units)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d ranks but the FFN size %d has only %d units of %d", world,
                             d->ffn_dim, ffn_units, ffn_unit);
    int vocab_units = (d->vocab_size + ROW_BLOCK - 1) / ROW_BLOCK;
    if (world > vocab_units)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "%d ranks but the vocabulary of %d has only %d blocks of %d", world,
                             d->vocab_size, vocab_units, ROW_BLOCK);
    for (int r = 0; r < world; r++) {
        tp_shard *s = &out->shards[r];
        int u0, nu;
        split(ffn_units, world, r, &u0, &nu);
        s->ffn0 = u0 * ffn_unit;
        s->n_ffn = ((u0 + nu) * ffn_unit < d->ffn_dim ? (u0 + nu) * ffn_unit : d->ffn_dim) - s->ffn0;
        split(vocab_units, world, r, &u0, &nu);
        s->vocab0 = u0 * ROW_BLOCK;
        s->n_vocab = ((u0 + nu) * ROW_BLOCK < d->vocab_size ? (u0 + nu) * ROW_BLOCK : d->vocab_size) - s->vocab0;
    }
    return IFN_OK;
}
