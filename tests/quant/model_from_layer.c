/* The calibration hooks that make GPTQ linear (node/model.h): a step started at layer l from the
 * residual rows that MODEL_TAP_LAYER_OUT of layer l - 1 handed out computes, bit for bit, what
 * the step from the embedding computes from layer l on (every later tap, and the logits); a
 * step stops right after the tap it is told to; bad starting points are refused.
 *   model_from_layer MODEL.gguf
 * Checks the model as stored and packed as w4a8-g128, on a window of 37 tokens and of 1.
 * Exit 0 when every check holds; each failure is printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "model_file.h"

#define N_TAPS 5 /* MODEL_TAP_ATTN_IN .. MODEL_TAP_LAYER_OUT */

/* What a step's taps saw: per layer and tap, the rows [n][cols] (NULL where none came). */
typedef struct {
    int n_layers;
    float **x;   /* [n_layers * N_TAPS] */
    size_t *len; /* [n_layers * N_TAPS] floats */
} tap_log;

static int failures;

static void check(int ok, const char *what, const char *quant, int n, int layer)
{
    if (!ok) {
        failures++;
        printf("FAIL %s (quant %s, %d tokens, layer %d)\n", what, quant, n, layer);
    }
}

static void on_tap(void *user, int layer, model_tap tap, const float *x, int n_rows, int n_cols)
{
    tap_log *t = user;
    const size_t i = (size_t)layer * N_TAPS + tap, len = (size_t)n_rows * n_cols;
    free(t->x[i]);
    t->x[i] = malloc(len * sizeof *x);
    memcpy(t->x[i], x, len * sizeof *x);
    t->len[i] = len;
}

static void log_clear(tap_log *t)
{
    for (int i = 0; i < t->n_layers * N_TAPS; i++) {
        free(t->x[i]);
        t->x[i] = NULL;
        t->len[i] = 0;
    }
}

static int same(const float *a, const float *b, size_t n) { return a && b && memcmp(a, b, n * sizeof *a) == 0; }

static int run_quant(const model_file *mf, const char *quant, int n)
{
    model *m;
    model_ctx *ctx;
    model_options mo = { .quant = quant };
    if (model_load(mf, &mo, &m) != IFN_OK || model_ctx_create(m, 1, 64, 64, IFN_KV_F32, &ctx) != IFN_OK) {
        printf("FAIL loading the model as %s: %s\n", quant ? quant : "stored", ifn_error_detail());
        return 1;
    }
    const char *qname = quant ? quant : "stored";
    const model_config *c = model_get_config(m);
    const int L = c->n_layers;
    int v0, nv;
    model_vocab_slice(m, &v0, &nv);
    int32_t tokens[64];
    for (int i = 0; i < n; i++) tokens[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    model_batch_seq s = { .slot = 0, .pos0 = 0, .n_tokens = n, .tokens = tokens, .n_out = n };
    float *ref = malloc((size_t)n * nv * sizeof *ref), *got = malloc((size_t)n * nv * sizeof *got);
    tap_log full = { L, calloc((size_t)L * N_TAPS, sizeof(float *)), calloc((size_t)L * N_TAPS, sizeof(size_t)) };
    tap_log part = { L, calloc((size_t)L * N_TAPS, sizeof(float *)), calloc((size_t)L * N_TAPS, sizeof(size_t)) };

    /* the reference: a whole step from the embedding, every tap logged (last_layer = n_layers) */
    model_ctx_set_tap(ctx, on_tap, &full, L, MODEL_TAP_LAYER_OUT);
    check(model_batch_eval(ctx, &s, 1, ref) == IFN_OK, "the step from the embedding runs", qname, n, 0);
    model_ctx_set_tap(ctx, NULL, NULL, 0, MODEL_TAP_ATTN_IN);
    float *plain = malloc((size_t)n * nv * sizeof *plain);
    check(model_batch_eval(ctx, &s, 1, plain) == IFN_OK && same(plain, ref, (size_t)n * nv),
          "a tap that never stops leaves the logits as they are", qname, n, 0);
    free(plain);

    for (int l = 1; l < L; l++) {
        const float *x = full.x[(size_t)(l - 1) * N_TAPS + MODEL_TAP_LAYER_OUT];
        /* from layer l to the logits */
        log_clear(&part);
        model_ctx_set_tap(ctx, on_tap, &part, L, MODEL_TAP_LAYER_OUT);
        check(model_batch_eval_from(ctx, &s, 1, l, x, got) == IFN_OK, "the step from layer l runs", qname, n, l);
        check(same(got, ref, (size_t)n * nv), "logits from layer l equal the whole step's", qname, n, l);
        for (int k = 0; k < L * N_TAPS; k++)
            check(k / N_TAPS < l ? part.x[k] == NULL : part.len[k] == full.len[k] && same(part.x[k], full.x[k], full.len[k]),
                  "taps from layer l equal the whole step's, none before it", qname, n, k / N_TAPS);
        /* layer l alone, ending at its FFN_MID (GPTQ's Hessians) and at its output (the advance) */
        for (model_tap stop = MODEL_TAP_FFN_MID; stop <= MODEL_TAP_LAYER_OUT; stop++) {
            log_clear(&part);
            model_ctx_set_tap(ctx, on_tap, &part, l, stop);
            check(model_batch_eval_from(ctx, &s, 1, l, x, NULL) == IFN_OK, "layer l alone runs", qname, n, l);
            for (int t = 0; t < N_TAPS; t++) {
                const size_t k = (size_t)l * N_TAPS + t;
                check(t <= (int)stop ? same(part.x[k], full.x[k], full.len[k]) : part.x[k] == NULL,
                      "layer l alone taps up to its stop and no further", qname, n, l);
            }
            for (int k = (l + 1) * N_TAPS; k < L * N_TAPS; k++) check(part.x[k] == NULL, "no later layer runs", qname, n, l);
        }
    }

    /* refusals */
    model_ctx_set_tap(ctx, NULL, NULL, 0, MODEL_TAP_ATTN_IN);
    const float *x0 = full.x[MODEL_TAP_LAYER_OUT];
    check(model_batch_eval_from(ctx, &s, 1, L, x0, got) == IFN_ERR_RANGE, "first_layer n_layers is refused", qname, n, L);
    check(model_batch_eval_from(ctx, &s, 1, -1, x0, got) == IFN_ERR_RANGE, "first_layer -1 is refused", qname, n, -1);
    if (L > 1) {
        check(model_batch_eval_from(ctx, &s, 1, 1, NULL, got) == IFN_ERR_INVALID_ARG, "no residual rows are refused",
              qname, n, 1);
        model_ctx_set_tap(ctx, on_tap, &part, 0, MODEL_TAP_FFN_MID);
        check(model_batch_eval_from(ctx, &s, 1, 1, x0, got) == IFN_ERR_INVALID_ARG,
              "a start after the tap's last layer is refused", qname, n, 1);
        model_ctx_set_tap(ctx, NULL, NULL, 0, MODEL_TAP_ATTN_IN);
    }
    ifn_error_clear();

    log_clear(&full);
    log_clear(&part);
    free(full.x);
    free(full.len);
    free(part.x);
    free(part.len);
    free(ref);
    free(got);
    model_ctx_destroy(ctx);
    model_destroy(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: model_from_layer MODEL.gguf\n");
        return 2;
    }
    model_file *mf;
    if (model_file_open(argv[1], &mf) != IFN_OK) {
        fprintf(stderr, "model_from_layer: %s\n", ifn_error_detail());
        return 1;
    }
    const char *quants[] = { NULL, "w4a8-g128" };
    const int lens[] = { 37, 1 };
    for (int q = 0; q < 2; q++)
        for (int i = 0; i < 2; i++) failures += run_quant(mf, quants[q], lens[i]);
    model_file_close(mf);
    printf("%s: %d failures\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
