/* The tensor-parallel plan on real models' shapes at 1..16 ranks: every plan covers each
 * head, KV head, FFN column and vocabulary row exactly as the design says, respects the
 * alignment, is balanced, and impossible plans are refused with the numbers in the message. */
#include <stdio.h>
#include <string.h>

#include "tp_plan.h"

static int failures;

#define EXPECT(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

typedef struct {
    const char *name;
    tp_model_dims d;
} real_model;

static const real_model models[] = {
    { "Llama-2-7B", { 32, 32, 128, 11008, 32000 } },
    { "CodeLlama-34B", { 64, 8, 128, 22016, 32000 } },
    { "StarCoder-15B", { 48, 1, 128, 24576, 49152 } },
    { "TinyLlama-1.1B", { 32, 4, 64, 5632, 32000 } },
    { "stories260K", { 8, 4, 8, 172, 512 } },
};

/* Checks the invariants of a plan that was accepted. */
static void check_plan(const char *name, const tp_model_dims *d, int world, tp_align align, const tp_plan *p)
{
    int group = d->n_heads / d->n_kv_heads;
    int next_head = 0, next_ffn = 0, next_vocab = 0, min_heads = 1 << 30, max_heads = 0;
    int kv_owners[4096] = { 0 };
    for (int r = 0; r < world; r++) {
        const tp_shard *s = &p->shards[r];
        EXPECT(s->head0 == next_head, "%s world %d rank %d: heads start at %d, expected %d", name, world, r, s->head0, next_head);
        EXPECT(s->n_heads > 0, "%s world %d rank %d: no heads", name, world, r);
        next_head = s->head0 + s->n_heads;
        min_heads = s->n_heads < min_heads ? s->n_heads : min_heads;
        max_heads = s->n_heads > max_heads ? s->n_heads : max_heads;
        EXPECT((s->n_heads * d->head_dim) % align.attn == 0, "%s world %d rank %d: %d heads x %d not aligned to %d", name,
               world, r, s->n_heads, d->head_dim, align.attn);
        /* every query head's KV head is held by this rank */
        for (int h = s->head0; h < s->head0 + s->n_heads; h++) {
            int kv = h / group;
            EXPECT(kv >= s->kv_head0 && kv < s->kv_head0 + s->n_kv_heads, "%s world %d rank %d: head %d needs KV %d", name,
                   world, r, h, kv);
        }
        for (int kv = s->kv_head0; kv < s->kv_head0 + s->n_kv_heads; kv++) kv_owners[kv]++;
        EXPECT(s->ffn0 == next_ffn && s->n_ffn > 0, "%s world %d rank %d: FFN [%d,+%d) after %d", name, world, r, s->ffn0,
               s->n_ffn, next_ffn);
        EXPECT(s->ffn0 % align.ffn == 0 && s->ffn0 % 16 == 0, "%s world %d rank %d: FFN start %d unaligned", name, world, r,
               s->ffn0);
        next_ffn = s->ffn0 + s->n_ffn;
        EXPECT(s->vocab0 == next_vocab && s->n_vocab > 0 && s->vocab0 % 16 == 0, "%s world %d rank %d: vocab [%d,+%d)", name,
               world, r, s->vocab0, s->n_vocab);
        next_vocab = s->vocab0 + s->n_vocab;
    }
    EXPECT(next_head == d->n_heads, "%s world %d: heads cover %d of %d", name, world, next_head, d->n_heads);
    EXPECT(next_ffn == d->ffn_dim, "%s world %d: FFN covers %d of %d", name, world, next_ffn, d->ffn_dim);
    EXPECT(next_vocab == d->vocab_size, "%s world %d: vocab covers %d of %d", name, world, next_vocab, d->vocab_size);
    for (int kv = 0; kv < d->n_kv_heads; kv++) {
        EXPECT(kv_owners[kv] >= 1, "%s world %d: KV head %d has no owner", name, world, kv);
        if (!p->kv_replicated) EXPECT(kv_owners[kv] == 1, "%s world %d: KV head %d owned %d times", name, world, kv, kv_owners[kv]);
    }
    EXPECT(p->kv_replicated == (world > d->n_kv_heads), "%s world %d: kv_replicated %d", name, world, p->kv_replicated);
    /* balanced to within one unit of heads */
    int unit = 1;
    while ((unit * d->head_dim) % align.attn) unit++;
    if (!p->kv_replicated) unit = unit > group ? unit : group;
    EXPECT(max_heads - min_heads <= unit * 2, "%s world %d: heads range %d..%d", name, world, min_heads, max_heads);
}

#define G128 ((tp_align){ 128, 128 })

int main(void)
{
    int accepted = 0, refused = 0;
    static const int aligns[] = { 1, 32, 128 };
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++)
        for (size_t ai = 0; ai < 3; ai++)
            for (int world = 1; world <= 16; world++) {
                const real_model *m = &models[mi];
                if (m->d.ffn_dim % aligns[ai]) continue; /* that quantization cannot apply at all */
                tp_plan p;
                ifn_error_clear();
                const tp_align al = { aligns[ai], aligns[ai] };
                if (tp_plan_build(&m->d, world, al, &p) == IFN_OK) {
                    accepted++;
                    check_plan(m->name, &m->d, world, al, &p);
                } else {
                    refused++;
                    EXPECT(strstr(ifn_error_detail(), "ranks") != NULL, "%s world %d align %d refused without naming ranks: %s",
                           m->name, world, aligns[ai], ifn_error_detail());
                }
            }

    /* The big models split at every world size of 1..16 with group 128. */
    for (int world = 1; world <= 16; world++)
        for (size_t mi = 0; mi < 3; mi++) {
            tp_plan p;
            EXPECT(tp_plan_build(&models[mi].d, world, G128, &p) == IFN_OK, "%s at %d ranks refused: %s", models[mi].name,
                   world, ifn_error_detail());
        }

    /* Specific splits. */
    tp_plan p;
    EXPECT(tp_plan_build(&models[2].d, 5, G128, &p) == IFN_OK, "StarCoder at 5");
    int want[5] = { 10, 10, 10, 9, 9 };
    for (int r = 0; r < 5; r++) EXPECT(p.shards[r].n_heads == want[r], "StarCoder 48 heads on 5: rank %d has %d", r, p.shards[r].n_heads);
    EXPECT(p.kv_replicated && p.shards[4].kv_head0 == 0 && p.shards[4].n_kv_heads == 1, "StarCoder MQA KV replicated");
    EXPECT(tp_plan_build(&models[1].d, 3, G128, &p) == IFN_OK, "CodeLlama at 3");
    EXPECT(p.shards[0].n_kv_heads == 3 && p.shards[1].n_kv_heads == 3 && p.shards[2].n_kv_heads == 2 &&
               p.shards[0].n_heads == 24 && p.shards[2].n_heads == 16,
           "CodeLlama 8 KV heads on 3 ranks: %d/%d/%d", p.shards[0].n_kv_heads, p.shards[1].n_kv_heads, p.shards[2].n_kv_heads);
    EXPECT(tp_plan_build(&models[1].d, 16, G128, &p) == IFN_OK && p.kv_replicated && p.shards[15].n_heads == 4 &&
               p.shards[15].kv_head0 == 7, "CodeLlama at 16 ranks: replicated KV");

    /* The two cuts aligned apart: a Q4_K attention output (256) beside a Q5_0 down projection
     * of 640 columns (32; llama-quantize's fallback when 256 does not divide them), or groups
     * fitted to each width (qw_fit_group: 128 for 256 inputs, 128 for 640). */
    const tp_model_dims fim = { 8, 8, 32, 640, 512 };
    EXPECT(tp_plan_build(&fim, 1, (tp_align){ 256, 32 }, &p) == IFN_OK, "FFN 640 at 1 rank, attention cut at 256: %s",
           ifn_error_detail());
    check_plan("FFN 640, 256/32", &fim, 1, (tp_align){ 256, 32 }, &p);
    EXPECT(tp_plan_build(&fim, 2, (tp_align){ 128, 128 }, &p) == IFN_OK, "FFN 640 at 2 ranks, cut at 128: %s",
           ifn_error_detail());
    check_plan("FFN 640, 128/128", &fim, 2, (tp_align){ 128, 128 }, &p);
    EXPECT(p.shards[1].ffn0 == 384, "FFN 640 in units of 128 on 2 ranks: rank 1 starts at %d", p.shards[1].ffn0);
    ifn_error_clear();
    EXPECT(tp_plan_build(&fim, 1, (tp_align){ 256, 256 }, &p) != IFN_OK && strstr(ifn_error_detail(), "FFN size 640"),
           "an FFN cut at 256 does not divide 640: %s", ifn_error_detail());

    /* Refused: more ranks than heads; stories260K (8 heads) at 16 ranks; head units too coarse. */
    ifn_error_clear();
    EXPECT(tp_plan_build(&models[4].d, 16, (tp_align){ 1, 1 }, &p) != IFN_OK && strstr(ifn_error_detail(), "16 ranks"),
           "stories260K at 16 ranks must be refused naming 16: %s", ifn_error_detail());
    ifn_error_clear();
    EXPECT(tp_plan_build(&models[4].d, 3, (tp_align){ 32, 32 }, &p) != IFN_OK, "stories260K at 3 ranks with group 32 (8 heads x 8 = 2 units)");
    ifn_error_clear();
    tp_model_dims odd = { 6, 6, 100, 64, 100 };
    EXPECT(tp_plan_build(&odd, 2, G128, &p) != IFN_OK, "head dim 100 with group 128");
    ifn_error_clear();
    EXPECT(tp_plan_build(&models[0].d, 0, (tp_align){ 1, 1 }, &p) != IFN_OK, "0 ranks");

    printf("%d plans accepted and checked, %d refused; %d failures\n", accepted, refused, failures);
    return failures ? 1 : 0;
}
