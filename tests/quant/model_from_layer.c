/* The calibration hooks that make GPTQ linear (node/model.h): a step started at layer l from the
 * residual rows that MODEL_TAP_LAYER_OUT of layer l - 1 handed out computes, bit for bit, what
 * the step from the embedding computes from layer l on (every later tap, and the logits); a
 * step stops right after the tap it is told to; bad starting points are refused. Layers on
 * demand (the quantizer's memory): each layer loaded, run alone and dropped in turn gives the
 * whole model's taps bit for bit; a step over a layer not loaded, logits without the output
 * head, replacing a weight of a layer not loaded, loading a layer twice or out of range, and
 * layers on demand under a shard or for random weights are refused, with a message naming
 * the layer.
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

/* log_clear, and the log's arrays freed. */
static void log_free(tap_log *t)
{
    log_clear(t);
    free(t->x);
    free(t->len);
}

static int same(const float *a, const float *b, size_t n) { return a && b && memcmp(a, b, n * sizeof *a) == 0; }

static int log_empty(const tap_log *t)
{
    for (int i = 0; i < t->n_layers * N_TAPS; i++)
        if (t->x[i]) return 0;
    return 1;
}

/* A call refused with status want and a message holding `says`; the message is cleared. */
static int refused(ifn_status got, ifn_status want, const char *says)
{
    const int ok = got == want && strstr(ifn_error_detail(), says) != NULL;
    if (!ok) printf("  got status %d: '%s'; want %d and '%s'\n", (int)got, ifn_error_detail(), (int)want, says);
    ifn_error_clear();
    return ok;
}

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

    log_free(&full);
    log_free(&part);
    free(ref);
    free(got);
    model_ctx_destroy(ctx);
    model_destroy(m);
    return 0;
}

static int run_on_demand(const model_file *mf, const char *quant, int n)
{
    const char *qname = quant ? quant : "stored";
    model *whole, *m;
    model_ctx *wctx, *ctx;
    char quant_arg[32]; /* overwritten after the load: the model must have kept a copy */
    snprintf(quant_arg, sizeof quant_arg, "%s", quant ? quant : "");
    model_options wo = { .quant = quant }, mo = { .quant = quant ? quant_arg : NULL, .layers_on_demand = true };
    if (model_load(mf, &wo, &whole) != IFN_OK || model_ctx_create(whole, 1, 64, 64, IFN_KV_F32, &wctx) != IFN_OK ||
        model_load(mf, &mo, &m) != IFN_OK || model_ctx_create(m, 1, 64, 64, IFN_KV_F32, &ctx) != IFN_OK) {
        printf("FAIL loading the model as %s, whole and with layers on demand: %s\n", qname, ifn_error_detail());
        return 1;
    }
    snprintf(quant_arg, sizeof quant_arg, "f32");
    const model_config *c = model_get_config(m);
    const int L = c->n_layers;
    int32_t tokens[64];
    for (int i = 0; i < n; i++) tokens[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    model_batch_seq s = { .slot = 0, .pos0 = 0, .n_tokens = n, .tokens = tokens, .n_out = n };
    int v0, nv;
    model_vocab_slice(m, &v0, &nv);
    float *logits = malloc((size_t)n * nv * sizeof *logits);
    tap_log full = { L, calloc((size_t)L * N_TAPS, sizeof(float *)), calloc((size_t)L * N_TAPS, sizeof(size_t)) };
    tap_log part = { L, calloc((size_t)L * N_TAPS, sizeof(float *)), calloc((size_t)L * N_TAPS, sizeof(size_t)) };
    model_ctx_set_tap(wctx, on_tap, &full, L, MODEL_TAP_LAYER_OUT);
    check(model_batch_eval(wctx, &s, 1, logits) == IFN_OK, "the whole model's step runs", qname, n, 0);

    check(model_weight_bytes(m) == 0, "no layer is packed at load", qname, n, 0);
    model_ctx_set_tap(ctx, on_tap, &part, L, MODEL_TAP_LAYER_OUT);
    check(refused(model_batch_eval(ctx, &s, 1, logits), IFN_ERR_INVALID_ARG,
                  "layer 0 is not loaded (model loaded with layers on demand)") && log_empty(&part),
          "a step over a layer not loaded is refused before it runs", qname, n, 0);
    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim;
    float *zeros = calloc((size_t)q_dim * c->dim, sizeof *zeros);
    const ifn_weight wq = { .type = IFN_DTYPE_F32, .n_out = q_dim, .n_in = c->dim, .data = zeros };
    check(refused(model_replace_linear(m, 0, MODEL_LINEAR_Q, &wq, NULL), IFN_ERR_INVALID_ARG, "layer 0 is not loaded"),
          "replacing a weight of a layer not loaded is refused", qname, n, 0);

    /* layer by layer, as GPTQ's calibration runs */
    float *x = malloc((size_t)n * c->dim * sizeof *x); /* [n][dim] the previous layer's output */
    for (int l = 0; l < L; l++) {
        check(model_load_layer(m, l) == IFN_OK, "a layer loads", qname, n, l);
        check(model_weight_bytes(m) > 0, "a loaded layer's weights are counted", qname, n, l);
        check(refused(model_load_layer(m, l), IFN_ERR_INVALID_ARG, "is loaded already"),
              "a layer loaded already is refused", qname, n, l);
        if (l + 1 < L) {
            log_clear(&part);
            model_ctx_set_tap(ctx, on_tap, &part, l + 1, MODEL_TAP_ATTN_IN);
            char says[96];
            snprintf(says, sizeof says, "layer %d is not loaded", l + 1);
            check(refused(model_batch_eval_from(ctx, &s, 1, l, l ? x : NULL, NULL), IFN_ERR_INVALID_ARG, says) &&
                      log_empty(&part),
                  "a step into the next layer, not loaded, is refused before it runs", qname, n, l);
        }
        log_clear(&part);
        model_ctx_set_tap(ctx, on_tap, &part, l, MODEL_TAP_LAYER_OUT);
        check(model_batch_eval_from(ctx, &s, 1, l, l ? x : NULL, NULL) == IFN_OK, "a loaded layer runs alone", qname, n, l);
        for (int t = 0; t < N_TAPS; t++) {
            const size_t k = (size_t)l * N_TAPS + t;
            check(part.len[k] == full.len[k] && same(part.x[k], full.x[k], full.len[k]),
                  "a layer loaded on demand taps what the whole model's step taps", qname, n, l);
        }
        if (part.x[(size_t)l * N_TAPS + MODEL_TAP_LAYER_OUT])
            memcpy(x, part.x[(size_t)l * N_TAPS + MODEL_TAP_LAYER_OUT], (size_t)n * c->dim * sizeof *x);
        model_drop_layer(m, l);
        check(model_weight_bytes(m) == 0, "a dropped layer's weights are freed", qname, n, l);
    }

    /* every layer loaded, the output head not */
    for (int l = 0; l < L; l++) check(model_load_layer(m, l) == IFN_OK, "a dropped layer loads again", qname, n, l);
    model_ctx_set_tap(ctx, NULL, NULL, 0, MODEL_TAP_ATTN_IN);
    check(refused(model_batch_eval(ctx, &s, 1, logits), IFN_ERR_INVALID_ARG, "the output head is not loaded"),
          "logits without the output head are refused", qname, n, L);
    s.n_out = 0;
    check(model_batch_eval(ctx, &s, 1, NULL) == IFN_OK, "a step without logits runs without the output head", qname, n, L);
    check(model_replace_linear(m, 0, MODEL_LINEAR_Q, &wq, NULL) == IFN_OK, "a loaded layer's weight is replaced", qname,
          n, 0);
    check(refused(model_load_layer(m, L), IFN_ERR_RANGE, "outside the model's layers") &&
              refused(model_load_layer(m, -1), IFN_ERR_RANGE, "outside the model's layers"),
          "a layer out of range is refused", qname, n, L);
    check(refused(model_load_layer(whole, 0), IFN_ERR_INVALID_ARG, "not with layers on demand"),
          "a model loaded whole loads no layer", qname, n, 0);
    model_drop_layer(whole, 0);
    s.n_out = n;
    model_ctx_set_tap(wctx, NULL, NULL, 0, MODEL_TAP_ATTN_IN);
    check(model_batch_eval(wctx, &s, 1, logits) == IFN_OK, "a model loaded whole keeps its layers", qname, n, 0);

    free(x);
    free(zeros);
    log_free(&full);
    log_free(&part);
    free(logits);
    model_ctx_destroy(ctx);
    model_destroy(m);
    model_ctx_destroy(wctx);
    model_destroy(whole);
    return 0;
}

/* Layers on demand only for the whole model in one process, only from a file. */
static void check_on_demand_refusals(const model_file *mf)
{
    model *m = NULL;
    const model_config *c = model_file_config(mf);
    const tp_shard whole = { 0, c->n_heads, 0, c->n_kv_heads, 0, c->ffn_dim, 0, c->vocab_size };
    model_options mo = { .shard = &whole, .layers_on_demand = true };
    check(refused(model_load(mf, &mo, &m), IFN_ERR_INVALID_ARG, "layers on demand need the whole model in one process") &&
              !m,
          "layers on demand under a shard are refused", "stored", 0, 0);
    mo.shard = NULL;
    check(refused(model_create_random(c, &mo, 1, &m), IFN_ERR_INVALID_ARG, "layers on demand are read from a model file") &&
              !m,
          "layers on demand of random weights are refused", "stored", 0, 0);
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
        for (int i = 0; i < 2; i++) failures += run_quant(mf, quants[q], lens[i]) + run_on_demand(mf, quants[q], lens[i]);
    check_on_demand_refusals(mf);
    model_file_close(mf);
    printf("%s: %d failures\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
