/* The tensor-parallel plan: which attention heads, KV heads, FFN columns and vocabulary rows
 * each rank owns. A plain value: tests build and inspect it without MPI.
 *
 * Q, K, V and the FFN gate/up projections are split by output rows (column shards of the
 * math's W x), the attention output and FFN down projections by input columns (row shards),
 * the output head by vocabulary rows. Splits are uneven when they must be (48 heads on 5
 * ranks), always in whole units so that a shard's input width stays a multiple of the
 * quantization group and its output rows a multiple of the kernels' 16-row blocks. With
 * fewer KV heads than ranks (GQA, MQA) a rank keeps every KV head its query heads read,
 * replicating them across ranks; K/V projections of replicated heads are computed on each
 * rank that holds them. */
#ifndef IFN_TP_PLAN_H
#define IFN_TP_PLAN_H

#include <stdbool.h>

#include "status.h"

#define TP_MAX_RANKS 256

typedef struct {
    int n_heads, n_kv_heads, head_dim;
    int ffn_dim, vocab_size;
} tp_model_dims;

typedef struct {
    int head0, n_heads;       /* query heads [head0, head0 + n_heads) */
    int kv_head0, n_kv_heads; /* KV heads stored and computed here */
    int ffn0, n_ffn;          /* FFN columns [ffn0, ffn0 + n_ffn) */
    int vocab0, n_vocab;      /* output rows [vocab0, vocab0 + n_vocab) */
} tp_shard;

/* The input widths at which the row-sharded matrices may be cut: the attention output
 * projection's (heads x head_dim) and the FFN down projection's (FFN columns). Each is the
 * quantization group that matrix is packed in, or its stored block or scale group, 1 for
 * plain floats. */
typedef struct {
    int attn, ffn;
} tp_align;

typedef struct {
    int world;
    tp_align align;          /* this plan's cuts are multiples of these */
    bool kv_replicated;      /* fewer KV heads than ranks: some KV heads live on several ranks */
    tp_shard shards[TP_MAX_RANKS];
} tp_plan;

/* Builds the plan for `world` ranks, its cuts aligned as `align` says. Refused plans (more ranks
 * than head units, FFN units or vocabulary blocks; a head size that no split can align)
 * return IFN_ERR_INVALID_ARG with a message naming the numbers. */
ifn_status tp_plan_build(const tp_model_dims *dims, int world, tp_align align, tp_plan *out);

#endif
