/* infernode quantize: a model file in, a GGUF in the quantized layout out (round to nearest,
 * GPTQ, SmoothQuant), loadable by serve and generate as it is. */
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "gguf_write.h"
#include "model.h"
#include "model_file.h"
#include "model_tokenizer.h"
#include "quantize.h"
#include "quantize_sample.h"
#include "qweight.h"
#include "tokenizer_gguf_write.h"

#define MIN_CALIB_TOKENS 256
#define MIN_WINDOW 16

typedef enum { METHOD_CONVERT, METHOD_RTN, METHOD_GPTQ, METHOD_SMOOTH } quant_method;

typedef struct {
    const char *in, *out, *scheme_name, *calib, *calib_ids;
    quant_method method;
    ifn_dtype convert_type;   /* METHOD_CONVERT: F16, BF16 or F32 */
    qformat fmt;              /* the linear layers */
    ifn_dtype output_type;    /* token embedding / output head: I8 (W8 per row), F16 or F32 */
    int calib_tokens, calib_ctx;
    gptq_options gptq;
    float alpha;
    bool static_act;
    bool progress;
} quant_args;

static void quant_usage(FILE *out)
{
    fputs("usage: infernode quantize -m IN -o OUT.gguf --scheme SCHEME [options]\n"
          "\n"
          "Writes a GGUF in infernode's quantized layout (docs/quantization.md, \"Quantized\n"
          "GGUF layout\"); serve and generate load it as it is.\n"
          "\n"
          "  -m, --model PATH       GGUF file, Hugging Face directory or llama2.c .bin\n"
          "  -o, --output PATH      the GGUF to write (written as PATH.tmp, then renamed)\n"
          "      --scheme SCHEME    what the linear layers become:\n"
          "        f16, bf16, f32                      converted, not quantized\n"
          "        rtn-w8, rtn-w8-g32                  8-bit round to nearest, per row / groups of 32\n"
          "        rtn-w4-g32|g64|g128|pc[-asym]       4-bit round to nearest (pc: per row;\n"
          "                                            -asym: zero points)\n"
          "        gptq-w4-g32|g64|g128|pc[-asym], gptq-w8, gptq-w8-g32\n"
          "                                            GPTQ against calibration Hessians\n"
          "        sq-w8a8                             SmoothQuant: smoothing folded into the\n"
          "                                            norms (and V, up), then 8-bit per row\n"
          "      --output-type T    token embedding and output head: w8 (default), f16, f32\n"
          "      --scale-type T     scales stored as f16 (default), bf16 or f32\n"
          "      --act-scales M     int8 activations: dynamic (per token; default) or static\n"
          "                         (one calibrated scale per matrix; default for sq-w8a8)\n"
          "calibration (gptq, sq, static activation scales):\n"
          "      --calib FILE       text, tokenized by the model's tokenizer (default: a built-in\n"
          "                         Python sample)\n"
          "      --calib-ids FILE   token ids instead (whitespace-separated)\n"
          "      --calib-tokens N   use at most N tokens (default 16384; at least 256 needed);\n"
          "                         GPTQ keeps their residual streams: N x hidden size x 4 bytes\n"
          "      --calib-ctx N      tokens per calibration window (default: min(512, context))\n"
          "GPTQ:\n"
          "      --damp F           dampening added to the Hessian diagonal, x its mean (0.01)\n"
          "      --block N          columns per lazy update (default 128)\n"
          "      --act-order        columns in decreasing Hessian diagonal order (static groups,\n"
          "                         so the file needs no permutation)\n"
          "SmoothQuant:\n"
          "      --alpha F          migration strength 0..1 (default 0.5)\n"
          "  -t, --threads N        OpenMP threads\n"
          "  -h, --help             this help\n",
          out);
}

static int usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "infernode quantize: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n(infernode quantize --help for the options)\n");
    return CLI_EXIT_USAGE;
}

static bool parse_scheme(const char *s, quant_args *a)
{
    a->fmt = (qformat){ .scale_type = a->fmt.scale_type };
    if (!strcmp(s, "f16") || !strcmp(s, "bf16") || !strcmp(s, "f32")) {
        a->method = METHOD_CONVERT;
        a->convert_type = !strcmp(s, "f16") ? IFN_DTYPE_F16 : !strcmp(s, "bf16") ? IFN_DTYPE_BF16 : IFN_DTYPE_F32;
        return true;
    }
    if (!strcmp(s, "sq-w8a8")) {
        a->method = METHOD_SMOOTH;
        a->fmt.bits = 8;
        return true;
    }
    char method[8] = { 0 }, bits[8] = { 0 }, grp[8] = { 0 }, extra[8] = { 0 };
    int n = sscanf(s, "%7[^-]-%7[^-]-%7[^-]-%7s", method, bits, grp, extra);
    if (n < 2) return false;
    if (!strcmp(method, "rtn")) a->method = METHOD_RTN;
    else if (!strcmp(method, "gptq")) a->method = METHOD_GPTQ;
    else return false;
    if (!strcmp(bits, "w8")) {
        a->fmt.bits = 8;
        if (n == 2) return true;
        return n == 3 && !strcmp(grp, "g32") && (a->fmt.group = 32);
    }
    if (strcmp(bits, "w4") || n < 3) return false;
    a->fmt.bits = 4;
    if (!strcmp(grp, "g32")) a->fmt.group = 32;
    else if (!strcmp(grp, "g64")) a->fmt.group = 64;
    else if (!strcmp(grp, "g128")) a->fmt.group = 128;
    else if (strcmp(grp, "pc")) return false;
    if (n == 4 && strcmp(extra, "asym")) return false;
    a->fmt.asym = n == 4;
    return true;
}

static int parse_args(int argc, char **argv, quant_args *a)
{
    enum { O_SCHEME = 256, O_CALIB, O_CALIB_IDS, O_CALIB_TOKENS, O_CALIB_CTX, O_DAMP, O_BLOCK, O_ACT_ORDER, O_ALPHA,
           O_ACT_SCALES, O_SCALE_TYPE, O_OUTPUT_TYPE };
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },          { "output", required_argument, 0, 'o' },
        { "threads", required_argument, 0, 't' },        { "help", no_argument, 0, 'h' },
        { "scheme", required_argument, 0, O_SCHEME },    { "calib", required_argument, 0, O_CALIB },
        { "calib-ids", required_argument, 0, O_CALIB_IDS }, { "calib-tokens", required_argument, 0, O_CALIB_TOKENS },
        { "calib-ctx", required_argument, 0, O_CALIB_CTX }, { "damp", required_argument, 0, O_DAMP },
        { "block", required_argument, 0, O_BLOCK },      { "act-order", no_argument, 0, O_ACT_ORDER },
        { "alpha", required_argument, 0, O_ALPHA },      { "act-scales", required_argument, 0, O_ACT_SCALES },
        { "scale-type", required_argument, 0, O_SCALE_TYPE }, { "output-type", required_argument, 0, O_OUTPUT_TYPE },
        { 0, 0, 0, 0 },
    };
    *a = (quant_args){ .fmt.scale_type = IFN_DTYPE_F16, .output_type = IFN_DTYPE_I8, .calib_tokens = 16384,
                       .gptq = { .damp = 0.01, .block = 128 }, .alpha = 0.5f, .progress = isatty(2) };
    const char *act_scales = NULL;
    int opt, li;
    optind = 1;
    while ((li = -1, opt = getopt_long(argc, argv, "m:o:t:h", opts, &li)) != -1) {
        switch (opt) {
        case 'm': a->in = optarg; break;
        case 'o': a->out = optarg; break;
        case 't':
            if (!cli_set_threads(optarg)) return cli_bad_value(opts, li, opt, optarg, CLI_THREADS_EXPECT);
            break;
        case 'h': quant_usage(stdout); return -1;
        case O_SCHEME: a->scheme_name = optarg; break;
        case O_CALIB: a->calib = optarg; break;
        case O_CALIB_IDS: a->calib_ids = optarg; break;
        case O_CALIB_TOKENS:
            if (!cli_parse_int(optarg, MIN_CALIB_TOKENS, 1 << 24, &a->calib_tokens))
                return cli_bad_value(opts, li, opt, optarg, "an integer in 256..16777216");
            break;
        case O_CALIB_CTX:
            if (!cli_parse_int(optarg, MIN_WINDOW, 1 << 20, &a->calib_ctx))
                return cli_bad_value(opts, li, opt, optarg, "an integer in 16..1048576");
            break;
        case O_DAMP: {
            float d;
            if (!cli_parse_float(optarg, &d) || !(d >= 0.0f && d <= 10.0f))
                return cli_bad_value(opts, li, opt, optarg, "a number in 0..10");
            a->gptq.damp = d;
            break;
        }
        case O_BLOCK:
            if (!cli_parse_int(optarg, 1, 1 << 16, &a->gptq.block))
                return cli_bad_value(opts, li, opt, optarg, "an integer in 1..65536");
            break;
        case O_ACT_ORDER: a->gptq.act_order = true; break;
        case O_ALPHA:
            if (!cli_parse_float(optarg, &a->alpha) || !(a->alpha >= 0.0f && a->alpha <= 1.0f))
                return cli_bad_value(opts, li, opt, optarg, "a number in 0..1");
            break;
        case O_ACT_SCALES:
            if (strcmp(optarg, "static") && strcmp(optarg, "dynamic"))
                return usage_error("--act-scales '%s' is not static or dynamic", optarg);
            act_scales = optarg;
            break;
        case O_SCALE_TYPE:
            if (!strcmp(optarg, "f16")) a->fmt.scale_type = IFN_DTYPE_F16;
            else if (!strcmp(optarg, "bf16")) a->fmt.scale_type = IFN_DTYPE_BF16;
            else if (!strcmp(optarg, "f32")) a->fmt.scale_type = IFN_DTYPE_F32;
            else return usage_error("--scale-type '%s' is not f16, bf16 or f32", optarg);
            break;
        case O_OUTPUT_TYPE:
            if (!strcmp(optarg, "w8")) a->output_type = IFN_DTYPE_I8;
            else if (!strcmp(optarg, "f16")) a->output_type = IFN_DTYPE_F16;
            else if (!strcmp(optarg, "f32")) a->output_type = IFN_DTYPE_F32;
            else return usage_error("--output-type '%s' is not w8, f16 or f32", optarg);
            break;
        default: return usage_error("%s", "bad option");
        }
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (!a->in) return usage_error("%s", "-m IN is required");
    if (!a->out) return usage_error("%s", "-o OUT.gguf is required");
    if (!a->scheme_name) return usage_error("%s", "--scheme is required");
    if (!parse_scheme(a->scheme_name, a))
        return usage_error("unknown scheme '%s': f16, bf16, f32, rtn-w8[-g32], rtn-w4-{g32,g64,g128,pc}[-asym], "
                           "gptq-w8[-g32], gptq-w4-{g32,g64,g128,pc}[-asym], sq-w8a8", a->scheme_name);
    if (a->calib && a->calib_ids) return usage_error("%s", "--calib and --calib-ids exclude each other");
    if (a->gptq.act_order && a->method != METHOD_GPTQ) return usage_error("%s", "--act-order is a GPTQ option");
    a->static_act = act_scales ? !strcmp(act_scales, "static") : a->method == METHOD_SMOOTH;
    if (a->static_act && (a->method == METHOD_CONVERT || a->fmt.bits != 8))
        return usage_error("%s", "static activation scales go with 8-bit weights (rtn-w8, gptq-w8, sq-w8a8)");
    if (a->static_act && a->fmt.group)
        return usage_error("%s", "static activation scales go with per-row 8-bit weights (rtn-w8, gptq-w8, sq-w8a8)");
    return 0;
}

/* ---- the job ------------------------------------------------------------------------------ */

static const char *const linear_names[MODEL_LINEAR_COUNT] = { "attn_q", "attn_k", "attn_v", "attn_output",
                                                                "ffn_gate", "ffn_up", "ffn_down" };
/* Which tap feeds each linear layer. */
static const model_tap linear_tap[MODEL_LINEAR_COUNT] = { MODEL_TAP_ATTN_IN, MODEL_TAP_ATTN_IN, MODEL_TAP_ATTN_IN,
                                                          MODEL_TAP_ATTN_OUT, MODEL_TAP_FFN_IN, MODEL_TAP_FFN_IN,
                                                          MODEL_TAP_FFN_MID };
#define N_TAPS 4 /* the linear layers' inputs; MODEL_TAP_LAYER_OUT follows them */

typedef struct {
    quant_args *a;
    model_file *mf;
    const model_config *c;
    model *m;           /* for calibration only: loaded with layers on demand, one layer at a time */
    model_ctx *ctx;
    int32_t *calib;     /* calibration tokens */
    int n_calib;
    gguf_writer *w;
    int (*lin)[MODEL_LINEAR_COUNT][4]; /* [layer]: writer indices of weight, scales, zeros, act_scale */
    int (*norm)[2];                    /* [layer]: attn_norm, ffn_norm */
    int embd[4], output[4], output_norm;
    double t0;
    /* calibration statistics of the current pass; every pass that runs a layer to its end
     * (MODEL_TAP_LAYER_OUT) also hands its output rows on in resid */
    enum { TAPS_MAXIMA, TAPS_HESSIANS, TAPS_RESIDUALS } collect; /* what on_tap keeps besides */
    double *hess[N_TAPS];          /* GPTQ: [n][n] of the layer being quantized (its last reader changes it) */
    int tap_dim[N_TAPS];
    /* Every calibration window's residual stream [n_calib][dim] (rows in token order; a short
     * last window has none): the input of the layer being calibrated (the maxima pass: with
     * the layers before it as stored; GPTQ: with them quantized). Layer 0 reads the embedding
     * instead. */
    float *resid;
    float *window_resid;           /* the current window's rows of resid */
    float **amax;                  /* SmoothQuant / static scales: [layer * N_TAPS + tap][dim], max |x| per channel */
    ifn_status tap_status;         /* the first failure inside a tap */
    long n_rows;
} quant_job;

static void progress(quant_job *j, const char *fmt, const char *what, int layer)
{
    char line[256];
    snprintf(line, sizeof line, fmt, what, layer);
    if (j->a->progress) fprintf(stderr, "\r\033[Kquantize: [%6.1f s] %s", ifn_seconds() - j->t0, line);
    else fprintf(stderr, "quantize: [%6.1f s] %s\n", ifn_seconds() - j->t0, line);
}

static int tap_width(const model_config *c, model_tap t)
{
    switch (t) {
    case MODEL_TAP_ATTN_IN: case MODEL_TAP_FFN_IN: case MODEL_TAP_LAYER_OUT: return c->dim;
    case MODEL_TAP_ATTN_OUT: return c->n_heads * c->head_dim;
    case MODEL_TAP_FFN_MID: return c->ffn_dim;
    }
    return 0;
}

static void on_tap(void *user, int layer, model_tap tap, const float *x, int n_rows, int n_cols)
{
    quant_job *j = user;
    if (tap == MODEL_TAP_LAYER_OUT) {
        memcpy(j->window_resid, x, (size_t)n_rows * (size_t)n_cols * sizeof *x);
        return;
    }
    if (j->collect == TAPS_RESIDUALS) return;
    if (j->collect == TAPS_HESSIANS) {
        if (j->tap_status == IFN_OK) j->tap_status = hessian_add(j->hess[tap], x, n_rows, n_cols);
        return;
    }
    float *mx = j->amax[layer * N_TAPS + tap];
    for (int r = 0; r < n_rows; r++)
        for (int k = 0; k < n_cols; k++) mx[k] = fmaxf(mx[k], fabsf(x[(size_t)r * n_cols + k]));
}

/* Runs every calibration window through the model up to tap last_tap of layer last_layer
 * (taps collect what they collect): from the embedding when first_layer is 0, else from the
 * window's rows of j->resid into first_layer. */
static ifn_status run_calibration(quant_job *j, int first_layer, int last_layer, model_tap last_tap)
{
    model_ctx_set_tap(j->ctx, on_tap, j, last_layer, last_tap);
    const int win = j->a->calib_ctx, dim = j->c->dim;
    j->n_rows = 0;
    for (int at = 0; at + MIN_WINDOW <= j->n_calib; at += win) {
        int n = j->n_calib - at < win ? j->n_calib - at : win;
        model_batch_seq s = { .slot = 0, .pos0 = 0, .n_tokens = n, .tokens = j->calib + at, .n_out = 0 };
        j->window_resid = j->resid + (size_t)at * dim;
        CHECK(model_batch_eval_from(j->ctx, &s, 1, first_layer, first_layer > 0 ? j->window_resid : NULL, NULL));
        CHECK(j->tap_status);
        j->n_rows += n;
    }
    j->window_resid = NULL;
    model_ctx_set_tap(j->ctx, NULL, NULL, 0, MODEL_TAP_ATTN_IN);
    return IFN_OK;
}

/* A calibration file's bytes; what: "text" or "ids", for the message. */
static ifn_status read_calib_file(const char *path, const char *what, char **text, size_t *len)
{
    ifn_status s = cli_read_file(path, text, len);
    if (s != IFN_ERR_IO) return s;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", ifn_error_detail());
    ifn_error_clear();
    return ifn_error_set(s, "cannot open the calibration %s: %s", what, detail);
}

/* Whitespace-separated token ids of a file, each checked against the vocabulary. */
static ifn_status read_ids_file(const char *path, int32_t **ids, int *n, int vocab)
{
    char *text;
    size_t len;
    CHECK(read_calib_file(path, "ids", &text, &len));
    *ids = malloc((len / 2 + 1) * sizeof **ids); /* every id takes a digit and a separator */
    *n = 0;
    ifn_status s = *ids ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory for the ids of %s", path);
    for (char *p = text, *end; s == IFN_OK; p = end) {
        p += strspn(p, " \t\r\n");
        if (!*p) break;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && !strchr(" \t\r\n", *end)))
            s = ifn_error_set(IFN_ERR_FORMAT, "%s: item %d is not a token id", path, *n + 1);
        else if (v < 0 || v >= vocab)
            s = ifn_error_set(IFN_ERR_RANGE, "%s: token id %ld (number %d) is outside the vocabulary 0..%d", path, v,
                              *n + 1, vocab - 1);
        else
            (*ids)[(*n)++] = (int32_t)v;
    }
    free(text);
    return s;
}

static ifn_status load_calibration(quant_job *j)
{
    const quant_args *a = j->a;
    if (a->calib_ids) {
        CHECK(read_ids_file(a->calib_ids, &j->calib, &j->n_calib, j->c->vocab_size));
    } else {
        tokenizer *tok = NULL;
        ifn_status s = model_tokenizer_load(j->mf, &tok);
        if (s != IFN_OK) {
            ifn_error_clear();
            return ifn_error_set(IFN_ERR_INVALID_ARG, "%s has no tokenizer to read calibration text with: give "
                                 "--calib-ids", a->in);
        }
        char *text = NULL;
        size_t len = 0;
        if (a->calib) s = read_calib_file(a->calib, "text", &text, &len);
        size_t n = 0;
        if (s == IFN_OK)
            s = tokenizer_encode(tok, a->calib ? text : quantize_sample_text,
                                 a->calib ? len : strlen(quantize_sample_text), true, false, &j->calib, &n);
        free(text);
        tokenizer_destroy(tok);
        CHECK(s);
        j->n_calib = (int)(n > (size_t)INT32_MAX ? INT32_MAX : n);
    }
    if (j->n_calib > a->calib_tokens) j->n_calib = a->calib_tokens;
    if (j->n_calib < MIN_CALIB_TOKENS)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "the calibration %s %s gives %d tokens; %s needs at least %d",
                             a->calib_ids ? "ids" : "text", a->calib ? a->calib : a->calib_ids ? a->calib_ids : "sample",
                             j->n_calib, a->scheme_name, MIN_CALIB_TOKENS);
    return IFN_OK;
}

/* ---- weights ---------------------------------------------------------------------------- */

/* Reads a weight [out][in] as fp32. */
static ifn_status read_weight(quant_job *j, const char *name, int64_t in, int64_t out, float **dst)
{
    ifn_weight w;
    void *owned; /* a GPTQ checkpoint's layer, converted for this read */
    CHECK(model_file_weight(j->mf, name, in, out, &w, &owned));
    if (w.perm) {
        free(owned);
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: '%s' is act-order (permuted): quantize its source instead", j->a->in,
                             name);
    }
    float *buf = malloc((size_t)in * (size_t)out * sizeof *buf);
    if (!buf) {
        free(owned);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for '%s' (%lld x %lld)", name, (long long)out, (long long)in);
    }
    for (int64_t r = 0; r < out; r++) ifn_weight_row(&w, r, buf + (size_t)r * in);
    free(owned);
    for (size_t i = 0; i < (size_t)in * (size_t)out; i++)
        if (!isfinite(buf[i])) {
            free(buf);
            return ifn_error_set(IFN_ERR_FORMAT, "%s: '%s' holds a non-finite value at row %lld, column %lld", j->a->in,
                                 name, (long long)(i / (size_t)in), (long long)(i % (size_t)in));
        }
    *dst = buf;
    return IFN_OK;
}

/* The source row that output row r of a written Q or K matrix takes: GGUF pairs RoPE
 * dimensions (2i, 2i + 1) where a Hugging Face file pairs (i, i + head_dim / 2). */
static int64_t source_row(const quant_job *j, bool rope, int64_t r)
{
    if (!rope || j->c->rope_layout != IFN_ROPE_HALVES) return r;
    const int64_t hd = j->c->head_dim, h = r / hd, i = r % hd;
    return h * hd + (i % 2 ? i / 2 + hd / 2 : i / 2);
}

static ifn_status read_vector(quant_job *j, const char *name, int64_t n, float **dst)
{
    tensor_view v;
    CHECK(model_file_tensor(j->mf, name, 1, &n, &v));
    if (n % ifn_dtype_block_size(v.type))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: '%s' of %lld values cannot be %s", j->a->in, name, (long long)n,
                             ifn_dtype_name(v.type));
    *dst = malloc((size_t)n * sizeof **dst);
    if (!*dst) return ifn_error_set(IFN_ERR_NOMEM, "no memory for '%s'", name);
    ifn_dtype_to_f32(v.type, v.data, *dst, n);
    return IFN_OK;
}

/* The scheme's format as a matrix of `in` inputs gets it: the largest group up to the scheme's
 * that divides `in` (qw_fit_group; per row when none does), so that the file always loads.
 * The group of each matrix is recorded by the shape of its scales. */
static qformat fitted(const qformat *f, int64_t in)
{
    qformat g = *f;
    g.group = qw_fit_group(in, f->group);
    return g;
}

/* Declares a matrix [out][in]: plain (type F32/F16/BF16) or quantized with fmt (type I8). */
static ifn_status declare_matrix(quant_job *j, const char *base, int64_t in, int64_t out, ifn_dtype type, const qformat *fmt,
                                 bool act_scale, int idx[4])
{
    char name[256];
    int64_t ne[2] = { in, out };
    for (int i = 0; i < 4; i++) idx[i] = -1;
    snprintf(name, sizeof name, "%s.weight", base);
    if (type != IFN_DTYPE_I8) return gguf_writer_add_tensor(j->w, name, type, 2, ne, &idx[0]);
    CHECK(gguf_writer_add_tensor(j->w, name, fmt->bits == 4 ? IFN_DTYPE_U4 : IFN_DTYPE_I8, 2, ne, &idx[0]));
    int64_t gne[2] = { fmt->group ? in / fmt->group : 1, out };
    snprintf(name, sizeof name, "%s.scales", base);
    CHECK(gguf_writer_add_tensor(j->w, name, fmt->scale_type, 2, gne, &idx[1]));
    if (fmt->asym) {
        snprintf(name, sizeof name, "%s.zeros", base);
        CHECK(gguf_writer_add_tensor(j->w, name, IFN_DTYPE_I8, 2, gne, &idx[2]));
    }
    if (act_scale) {
        int64_t one = 1;
        snprintf(name, sizeof name, "%s.act_scale", base);
        CHECK(gguf_writer_add_tensor(j->w, name, IFN_DTYPE_F32, 1, &one, &idx[3]));
    }
    return IFN_OK;
}

/* Writes x [rows][n] as type (F32, F16, BF16), rows reordered for RoPE when rope is set. */
static ifn_status write_plain(quant_job *j, int idx, const float *x, int64_t rows, int64_t n, ifn_dtype type, bool rope)
{
    size_t bytes = ifn_dtype_row_bytes(type, n) * (size_t)rows;
    void *buf = malloc(bytes);
    if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "no memory to write %zu bytes", bytes);
    for (int64_t r = 0; r < rows; r++) {
        const float *src = x + (size_t)source_row(j, rope, r) * (size_t)n;
        for (int64_t k = 0; k < n; k++) {
            size_t i = (size_t)r * (size_t)n + (size_t)k;
            if (type == IFN_DTYPE_F32) ((float *)buf)[i] = src[k];
            else if (type == IFN_DTYPE_F16) ((uint16_t *)buf)[i] = ifn_f32_to_fp16(src[k]);
            else ((uint16_t *)buf)[i] = ifn_f32_to_bf16(src[k]);
        }
    }
    ifn_status s = gguf_writer_tensor_data(j->w, idx, buf, bytes);
    free(buf);
    return s;
}

/* Copies the n bytes of each row (rows reordered for RoPE) and writes them. */
static ifn_status write_rows(quant_job *j, int idx, const void *data, int64_t rows, size_t n, bool rope)
{
    if (!rope || j->c->rope_layout != IFN_ROPE_HALVES) return gguf_writer_tensor_data(j->w, idx, data, (size_t)rows * n);
    uint8_t *buf = malloc((size_t)rows * n);
    if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "no memory to write %zu bytes", (size_t)rows * n);
    for (int64_t r = 0; r < rows; r++) memcpy(buf + (size_t)r * n, (const uint8_t *)data + (size_t)source_row(j, true, r) * n, n);
    ifn_status s = gguf_writer_tensor_data(j->w, idx, buf, (size_t)rows * n);
    free(buf);
    return s;
}

static ifn_status write_qmatrix(quant_job *j, const int idx[4], const qmatrix *q, bool rope)
{
    size_t sb = q->f.scale_type == IFN_DTYPE_F32 ? 4 : 2;
    CHECK(write_rows(j, idx[0], q->q, q->n_out, (size_t)(q->f.bits == 4 ? q->n_in / 2 : q->n_in), rope));
    CHECK(write_rows(j, idx[1], q->scales, q->n_out, (size_t)q->n_groups * sb, rope));
    if (idx[2] >= 0) CHECK(write_rows(j, idx[2], q->zeros, q->n_out, (size_t)q->n_groups, rope));
    if (idx[3] >= 0) CHECK(gguf_writer_tensor_data(j->w, idx[3], &q->act_scale, sizeof q->act_scale));
    return IFN_OK;
}

static ifn_status check_scales(quant_job *j, const char *base, const qmatrix *q)
{
    for (int64_t r = 0; r < q->n_out; r++)
        for (int64_t g = 0; g < q->n_groups; g++) {
            float s;
            ifn_dtype_to_f32(q->f.scale_type,
                             (const uint8_t *)q->scales + ((size_t)r * q->n_groups + g) * (q->f.scale_type == IFN_DTYPE_F32 ? 4 : 2),
                             &s, 1);
            if (!isfinite(s))
                return ifn_error_set(IFN_ERR_RANGE, "%s: '%s' row %lld needs a scale beyond %s: use --scale-type f32",
                                     j->a->in, base, (long long)r, ifn_dtype_name(q->f.scale_type));
        }
    return IFN_OK;
}

/* ---- SmoothQuant ------------------------------------------------------------------------- */

/* s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (Xiao et al., "SmoothQuant", 2022), 1 where a
 * channel is never active or has no weight. */
static float smooth_factor(float act, float wmax, float alpha)
{
    if (!(act > 0.0f) || !(wmax > 0.0f)) return 1.0f;
    float s = powf(act, alpha) / powf(wmax, 1.0f - alpha);
    return s < 1e-5f ? 1e-5f : s > 1e5f ? 1e5f : s;
}

/* Column maxima of |W| over the n matrices [out[i]][in]. */
static void column_max(float *wmax, int64_t in, float *const *w, const int64_t *out, int n)
{
    for (int64_t k = 0; k < in; k++) wmax[k] = 0.0f;
    for (int i = 0; i < n; i++)
        for (int64_t r = 0; r < out[i]; r++)
            for (int64_t k = 0; k < in; k++) wmax[k] = fmaxf(wmax[k], fabsf(w[i][(size_t)r * in + k]));
}

/* The largest |x| / s over the channels: what a static activation scale must cover. */
static float smoothed_max(const float *amax, const float *s, int64_t n)
{
    float m = 0.0f;
    for (int64_t k = 0; k < n; k++) m = fmaxf(m, amax[k] / (s ? s[k] : 1.0f));
    return m;
}

typedef struct {
    float *w[MODEL_LINEAR_COUNT];
    int64_t in[MODEL_LINEAR_COUNT], out[MODEL_LINEAR_COUNT];
    float *attn_norm, *ffn_norm;
    float act_max[MODEL_LINEAR_COUNT]; /* largest smoothed input of each linear (static scales) */
} layer_data;

/* Folds the smoothing of layer l into its norms, V and up (exact in real arithmetic), and sets
 * each linear's largest smoothed input. alpha < 0: no smoothing, maxima only. */
static ifn_status smooth_layer(quant_job *j, int l, layer_data *d, float alpha)
{
    const model_config *c = j->c;
    const int64_t dim = c->dim, qd = (int64_t)c->n_heads * c->head_dim, ffn = c->ffn_dim, hd = c->head_dim;
    const int group = c->n_heads / c->n_kv_heads;
    float *const *amax = j->amax + (size_t)l * N_TAPS;
    int64_t widest = qd > ffn ? qd : ffn;
    if (dim > widest) widest = dim;
    float *s = malloc((size_t)widest * sizeof *s), *wmax = malloc((size_t)widest * sizeof *wmax);
    if (!s || !wmax) {
        free(s);
        free(wmax);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for smoothing factors");
    }
    const bool smooth = alpha >= 0.0f;
    /* Q, K, V and gate, up: their input is a norm's output */
    for (int part = 0; part < 2; part++) {
        const int first = part ? MODEL_LINEAR_GATE : MODEL_LINEAR_Q, n = part ? 2 : 3;
        const float *am = amax[part ? MODEL_TAP_FFN_IN : MODEL_TAP_ATTN_IN];
        float *norm = part ? d->ffn_norm : d->attn_norm;
        if (smooth) {
            column_max(wmax, dim, d->w + first, d->out + first, n);
            for (int64_t k = 0; k < dim; k++) s[k] = smooth_factor(am[k], wmax[k], alpha);
            for (int64_t k = 0; k < dim; k++) norm[k] /= s[k];
            for (int i = first; i < first + n; i++)
                for (int64_t r = 0; r < d->out[i]; r++)
                    for (int64_t k = 0; k < dim; k++) d->w[i][(size_t)r * dim + k] *= s[k];
        }
        float m = smoothed_max(am, smooth ? s : NULL, dim);
        for (int i = first; i < first + n; i++) d->act_max[i] = m;
    }
    /* down: its input silu(gate) * up scales with up's rows */
    if (smooth) {
        column_max(wmax, ffn, d->w + MODEL_LINEAR_DOWN, d->out + MODEL_LINEAR_DOWN, 1);
        for (int64_t k = 0; k < ffn; k++) s[k] = smooth_factor(amax[MODEL_TAP_FFN_MID][k], wmax[k], alpha);
        for (int64_t k = 0; k < ffn; k++) {
            for (int64_t i = 0; i < dim; i++) d->w[MODEL_LINEAR_UP][(size_t)k * dim + i] /= s[k];
            for (int64_t r = 0; r < dim; r++) d->w[MODEL_LINEAR_DOWN][(size_t)r * ffn + k] *= s[k];
        }
    }
    d->act_max[MODEL_LINEAR_DOWN] = smoothed_max(amax[MODEL_TAP_FFN_MID], smooth ? s : NULL, ffn);
    /* output: its input is attention over V, so dimension (kv head, i) of V scales dimension i of
     * every query head reading that KV head; one factor per (kv head, i) */
    if (smooth) {
        column_max(wmax, qd, d->w + MODEL_LINEAR_O, d->out + MODEL_LINEAR_O, 1);
        for (int kv = 0; kv < c->n_kv_heads; kv++)
            for (int64_t i = 0; i < hd; i++) {
                float am = 0.0f, wm = 0.0f;
                for (int h = kv * group; h < (kv + 1) * group; h++) {
                    am = fmaxf(am, amax[MODEL_TAP_ATTN_OUT][h * hd + i]);
                    wm = fmaxf(wm, wmax[h * hd + i]);
                }
                float f = smooth_factor(am, wm, alpha);
                for (int64_t k = 0; k < dim; k++) d->w[MODEL_LINEAR_V][(size_t)(kv * hd + i) * dim + k] /= f;
                for (int h = kv * group; h < (kv + 1) * group; h++) s[h * hd + i] = f;
            }
        for (int64_t r = 0; r < dim; r++)
            for (int64_t k = 0; k < qd; k++) d->w[MODEL_LINEAR_O][(size_t)r * qd + k] *= s[k];
    }
    d->act_max[MODEL_LINEAR_O] = smoothed_max(amax[MODEL_TAP_ATTN_OUT], smooth ? s : NULL, qd);
    free(s);
    free(wmax);
    return IFN_OK;
}

/* ---- the layers --------------------------------------------------------------------------- */

static void free_layer(layer_data *d)
{
    for (int i = 0; i < MODEL_LINEAR_COUNT; i++) free(d->w[i]);
    free(d->attn_norm);
    free(d->ffn_norm);
    memset(d, 0, sizeof *d);
}

static ifn_status read_layer(quant_job *j, int l, layer_data *d)
{
    const model_config *c = j->c;
    const int64_t dim = c->dim, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t in[MODEL_LINEAR_COUNT] = { dim, dim, dim, qd, dim, dim, c->ffn_dim };
    const int64_t out[MODEL_LINEAR_COUNT] = { qd, kvd, kvd, dim, c->ffn_dim, c->ffn_dim, dim };
    char name[96];
    for (int i = 0; i < MODEL_LINEAR_COUNT; i++) {
        d->in[i] = in[i];
        d->out[i] = out[i];
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, linear_names[i]);
        CHECK(read_weight(j, name, in[i], out[i], &d->w[i]));
    }
    snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
    CHECK(read_vector(j, name, dim, &d->attn_norm));
    snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
    return read_vector(j, name, dim, &d->ffn_norm);
}

/* GPTQ Hessians of layer l's four inputs, from the model as quantized so far: layer l alone,
 * on its input kept in j->resid (the embedding for layer 0). */
static ifn_status gather_hessians(quant_job *j, int l)
{
    for (int t = 0; t < N_TAPS; t++) memset(j->hess[t], 0, (size_t)j->tap_dim[t] * (size_t)j->tap_dim[t] * sizeof(double));
    j->collect = TAPS_HESSIANS;
    CHECK(run_calibration(j, l, l, MODEL_TAP_FFN_MID));
    for (int t = 0; t < N_TAPS; t++) hessian_finish(j->hess[t], j->tap_dim[t], 2.0 / (double)j->n_rows);
    return IFN_OK;
}

/* GPTQ: the calibration windows' residual streams go through layer l, now quantized, once:
 * j->resid becomes layer l + 1's input. */
static ifn_status advance_residuals(quant_job *j, int l)
{
    progress(j, "%s: layer %d forward", "gptq", l);
    j->collect = TAPS_RESIDUALS;
    return run_calibration(j, l, l, MODEL_TAP_LAYER_OUT);
}

/* Whether linear i is the last of a layer's linears to read its tap's Hessian. */
static bool last_reader(int i) { return i + 1 == MODEL_LINEAR_COUNT || linear_tap[i + 1] != linear_tap[i]; }

static ifn_status quantize_layer(quant_job *j, int l)
{
    const quant_args *a = j->a;
    layer_data d = { 0 };
    ifn_status s = read_layer(j, l, &d);
    if (s == IFN_OK && j->amax) s = smooth_layer(j, l, &d, a->method == METHOD_SMOOTH ? a->alpha : -1.0f);
    if (s == IFN_OK && a->method == METHOD_GPTQ) {
        progress(j, "%s: layer %d calibration", "gptq", l);
        s = gather_hessians(j, l);
    }
    /* Q, K, V read the same Hessian, and gate, up: GPTQ changes it in place, so each reader but
     * the last gets a copy (the last, and O and down, the only readers of theirs, take it as
     * it is: no copy of the FFN's ffn_dim² Hessian) */
    double *h = NULL;
    if (s == IFN_OK && a->method == METHOD_GPTQ) {
        int widest = 0;
        for (int i = 0; i < MODEL_LINEAR_COUNT; i++)
            if (!last_reader(i) && j->tap_dim[linear_tap[i]] > widest) widest = j->tap_dim[linear_tap[i]];
        h = malloc((size_t)widest * (size_t)widest * sizeof *h);
        if (!h) s = ifn_error_set(IFN_ERR_NOMEM, "no memory for a %d x %d Hessian", widest, widest);
    }
    for (int i = 0; s == IFN_OK && i < MODEL_LINEAR_COUNT; i++) {
        const bool rope = i == MODEL_LINEAR_Q || i == MODEL_LINEAR_K;
        char base[64];
        snprintf(base, sizeof base, "blk.%d.%s", l, linear_names[i]);
        progress(j, "%s: layer %d", base, l);
        if (a->method == METHOD_CONVERT) {
            s = write_plain(j, j->lin[l][i][0], d.w[i], d.out[i], d.in[i], a->convert_type, rope);
            continue;
        }
        qmatrix q;
        const qformat f = fitted(&a->fmt, d.in[i]);
        s = qmatrix_alloc(&q, &f, d.out[i], d.in[i]);
        if (s != IFN_OK) break;
        if (a->method == METHOD_GPTQ) {
            const int n = (int)d.in[i];
            double *hi = j->hess[linear_tap[i]], loss;
            if (!last_reader(i)) hi = memcpy(h, hi, (size_t)n * (size_t)n * sizeof *h);
            s = quant_gptq(d.w[i], hi, &a->gptq, &q, &loss);
        } else {
            quant_rtn(d.w[i], &q);
        }
        if (s == IFN_OK && a->static_act) q.act_scale = d.act_max[i] > 0.0f ? d.act_max[i] / 127.0f : 1.0f;
        if (s == IFN_OK) s = check_scales(j, base, &q);
        if (s == IFN_OK) s = write_qmatrix(j, j->lin[l][i], &q, rope);
        if (s == IFN_OK && a->method == METHOD_GPTQ) {
            ifn_weight w = qmatrix_weight(&q);
            s = model_replace_linear(j->m, l, (model_linear)i, &w, NULL);
        }
        qmatrix_free(&q);
    }
    free(h);
    if (s == IFN_OK) s = write_plain(j, j->norm[l][0], d.attn_norm, 1, j->c->dim, IFN_DTYPE_F32, false);
    if (s == IFN_OK) s = write_plain(j, j->norm[l][1], d.ffn_norm, 1, j->c->dim, IFN_DTYPE_F32, false);
    free_layer(&d);
    return s;
}

/* ---- the file ----------------------------------------------------------------------------- */

static const char *method_name(quant_method m)
{
    static const char *const names[] = { "convert", "rtn", "gptq", "smoothquant" };
    return names[m];
}

/* The input's tokenizer (a Hugging Face directory's tokenizer.json) as GGUF tokenizer keys. An
 * input without a usable one is said on stderr: the file is still written, without one. */
static ifn_status write_tokenizer(quant_job *j)
{
    tokenizer *tok = NULL;
    ifn_status s = model_tokenizer_load(j->mf, &tok);
    if (s == IFN_OK) s = tokenizer_write_gguf(tok, j->w);
    tokenizer_destroy(tok);
    if (s != IFN_ERR_NOT_FOUND && s != IFN_ERR_UNSUPPORTED && s != IFN_ERR_FORMAT) return s;
    fprintf(stderr, "quantize: warning: %s\nquantize: warning: %s gets no tokenizer: generate and serve will take "
            "token ids only (--prompt-ids)\n", ifn_error_detail(), j->a->out);
    ifn_error_clear();
    return IFN_OK;
}

static ifn_status write_metadata(quant_job *j)
{
    const model_config *c = j->c;
    const quant_args *a = j->a;
    const gguf_file *src = model_file_gguf(j->mf);
    if (src) {
        static const char *const skip[] = { "general.file_type", "general.alignment", "infernode.quantization." };
        CHECK(gguf_writer_copy_kv(j->w, src, skip, 3));
    } else {
        CHECK(gguf_writer_kv_str(j->w, "general.architecture", "llama"));
        CHECK(gguf_writer_kv_u32(j->w, "llama.block_count", (uint32_t)c->n_layers));
        CHECK(gguf_writer_kv_u32(j->w, "llama.context_length", (uint32_t)c->ctx_len));
        CHECK(gguf_writer_kv_u32(j->w, "llama.embedding_length", (uint32_t)c->dim));
        CHECK(gguf_writer_kv_u32(j->w, "llama.feed_forward_length", (uint32_t)c->ffn_dim));
        CHECK(gguf_writer_kv_u32(j->w, "llama.attention.head_count", (uint32_t)c->n_heads));
        CHECK(gguf_writer_kv_u32(j->w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads));
        CHECK(gguf_writer_kv_u32(j->w, "llama.attention.key_length", (uint32_t)c->head_dim));
        CHECK(gguf_writer_kv_u32(j->w, "llama.attention.value_length", (uint32_t)c->head_dim));
        CHECK(gguf_writer_kv_u32(j->w, "llama.rope.dimension_count", (uint32_t)c->head_dim));
        CHECK(gguf_writer_kv_u32(j->w, "llama.vocab_size", (uint32_t)c->vocab_size));
        CHECK(gguf_writer_kv_f32(j->w, "llama.rope.freq_base", c->rope_theta));
        CHECK(gguf_writer_kv_f32(j->w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps));
        CHECK(write_tokenizer(j));
    }
    CHECK(gguf_writer_kv_u32(j->w, "infernode.quantization.version", 1));
    CHECK(gguf_writer_kv_str(j->w, "infernode.quantization.scheme", a->scheme_name));
    CHECK(gguf_writer_kv_str(j->w, "infernode.quantization.method", method_name(a->method)));
    if (a->method == METHOD_CONVERT) return IFN_OK;
    CHECK(gguf_writer_kv_u32(j->w, "infernode.quantization.bits", (uint32_t)a->fmt.bits));
    CHECK(gguf_writer_kv_u32(j->w, "infernode.quantization.group_size", (uint32_t)a->fmt.group));
    CHECK(gguf_writer_kv_bool(j->w, "infernode.quantization.asymmetric", a->fmt.asym));
    CHECK(gguf_writer_kv_str(j->w, "infernode.quantization.scale_type", ifn_dtype_name(a->fmt.scale_type)));
    CHECK(gguf_writer_kv_str(j->w, "infernode.quantization.activation_scales", a->static_act ? "static" : "dynamic"));
    CHECK(gguf_writer_kv_str(j->w, "infernode.quantization.output_type",
                             a->output_type == IFN_DTYPE_I8 ? "w8" : ifn_dtype_name(a->output_type)));
    if (j->calib) CHECK(gguf_writer_kv_u32(j->w, "infernode.quantization.calibration_tokens", (uint32_t)j->n_calib));
    if (a->method == METHOD_GPTQ) {
        CHECK(gguf_writer_kv_f32(j->w, "infernode.quantization.gptq.damp", (float)a->gptq.damp));
        CHECK(gguf_writer_kv_u32(j->w, "infernode.quantization.gptq.block", (uint32_t)a->gptq.block));
        CHECK(gguf_writer_kv_bool(j->w, "infernode.quantization.gptq.act_order", a->gptq.act_order));
    }
    if (a->method == METHOD_SMOOTH) CHECK(gguf_writer_kv_f32(j->w, "infernode.quantization.smoothquant.alpha", a->alpha));
    return IFN_OK;
}

/* Says once per matrix kind which ones take a smaller group than the scheme's. */
static void report_fitted(const quant_args *a, const int64_t in[MODEL_LINEAR_COUNT])
{
    for (int i = 0; i < MODEL_LINEAR_COUNT; i++) {
        int g = fitted(&a->fmt, in[i]).group;
        if (a->method == METHOD_CONVERT || g == a->fmt.group) continue;
        char how[32] = "one scale per row";
        if (g) snprintf(how, sizeof how, "groups of %d", g);
        fprintf(stderr, "infernode quantize: %s has %lld inputs, which groups of %d do not divide: %s there\n",
                linear_names[i], (long long)in[i], a->fmt.group, how);
    }
}

static ifn_status declare_all(quant_job *j)
{
    const model_config *c = j->c;
    const quant_args *a = j->a;
    const int64_t dim = c->dim, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    const qformat out_fmt = { .bits = 8, .group = 0, .scale_type = a->fmt.scale_type };
    CHECK(declare_matrix(j, "token_embd", dim, c->vocab_size, a->output_type, &out_fmt, false, j->embd));
    for (int l = 0; l < c->n_layers; l++) {
        const int64_t in[MODEL_LINEAR_COUNT] = { dim, dim, dim, qd, dim, dim, c->ffn_dim };
        const int64_t out[MODEL_LINEAR_COUNT] = { qd, kvd, kvd, dim, c->ffn_dim, c->ffn_dim, dim };
        char name[64];
        int64_t n = dim;
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        CHECK(gguf_writer_add_tensor(j->w, name, IFN_DTYPE_F32, 1, &n, &j->norm[l][0]));
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        CHECK(gguf_writer_add_tensor(j->w, name, IFN_DTYPE_F32, 1, &n, &j->norm[l][1]));
        for (int i = 0; i < MODEL_LINEAR_COUNT; i++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, linear_names[i]);
            ifn_dtype t = a->method == METHOD_CONVERT ? a->convert_type : IFN_DTYPE_I8;
            const qformat f = fitted(&a->fmt, in[i]);
            CHECK(declare_matrix(j, name, in[i], out[i], t, &f, a->static_act, j->lin[l][i]));
        }
        if (l == 0) report_fitted(a, in);
    }
    int64_t n = dim;
    CHECK(gguf_writer_add_tensor(j->w, "output_norm.weight", IFN_DTYPE_F32, 1, &n, &j->output_norm));
    if (!c->tied_output) CHECK(declare_matrix(j, "output", dim, c->vocab_size, a->output_type, &out_fmt, false, j->output));
    return IFN_OK;
}

/* The token embedding or the output head: 8-bit per row, or plain. */
static ifn_status write_head(quant_job *j, const char *base, const int idx[4])
{
    const model_config *c = j->c;
    char name[64];
    snprintf(name, sizeof name, "%s.weight", base);
    float *w;
    CHECK(read_weight(j, name, c->dim, c->vocab_size, &w));
    ifn_status s;
    if (j->a->output_type != IFN_DTYPE_I8) {
        s = write_plain(j, idx[0], w, c->vocab_size, c->dim, j->a->output_type, false);
    } else {
        qmatrix q;
        const qformat f = { .bits = 8, .group = 0, .scale_type = j->a->fmt.scale_type };
        s = qmatrix_alloc(&q, &f, c->vocab_size, c->dim);
        if (s == IFN_OK) {
            quant_rtn(w, &q);
            s = check_scales(j, base, &q);
            if (s == IFN_OK) s = write_qmatrix(j, idx, &q, false);
            qmatrix_free(&q);
        }
    }
    free(w);
    return s;
}

/* Activation maxima (SmoothQuant, static scales), layer after layer with the layers as stored:
 * each layer is loaded, runs the windows from its input kept in j->resid (layer 0: from the
 * embedding), hands its output on in j->resid and is dropped. */
static ifn_status gather_maxima(quant_job *j)
{
    const int n_layers = j->c->n_layers;
    j->collect = TAPS_MAXIMA;
    for (int l = 0; l < n_layers; l++) {
        progress(j, "%s: layer %d activation maxima", "calibration", l);
        CHECK(model_load_layer(j->m, l));
        ifn_status s = run_calibration(j, l, l, l + 1 < n_layers ? MODEL_TAP_LAYER_OUT : MODEL_TAP_FFN_MID);
        model_drop_layer(j->m, l);
        model_file_release_pages(j->mf); /* the layer's file pages, read into the packed copy */
        CHECK(s);
    }
    return IFN_OK;
}

/* Loads the model for calibration forward passes (its layers on demand, so that one layer is
 * resident at a time), and the statistics' memory. */
static ifn_status prepare_calibration(quant_job *j)
{
    const model_config *c = j->c;
    CHECK(load_calibration(j));
    model_options mo = { .layers_on_demand = true };
    CHECK(model_load(j->mf, &mo, &j->m));
    if (j->a->calib_ctx == 0) j->a->calib_ctx = c->ctx_len < 512 ? c->ctx_len : 512;
    if (j->a->calib_ctx > c->ctx_len)
        return ifn_error_set(IFN_ERR_RANGE, "--calib-ctx %d is above the model's context %d", j->a->calib_ctx, c->ctx_len);
    CHECK(model_ctx_create(j->m, 1, j->a->calib_ctx, j->a->calib_ctx, IFN_KV_F32, &j->ctx));
    for (int t = 0; t < N_TAPS; t++) j->tap_dim[t] = tap_width(c, (model_tap)t);
    if (j->a->method == METHOD_GPTQ) {
        for (int t = 0; t < N_TAPS; t++) {
            j->hess[t] = malloc((size_t)j->tap_dim[t] * (size_t)j->tap_dim[t] * sizeof(double));
            if (!j->hess[t]) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a %d x %d Hessian", j->tap_dim[t], j->tap_dim[t]);
        }
    }
    const size_t resid_bytes = (size_t)j->n_calib * (size_t)c->dim * sizeof *j->resid;
    j->resid = malloc(resid_bytes);
    if (!j->resid)
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the residual streams of %d calibration tokens x %d "
                             "(%.1f MiB)", j->n_calib, c->dim, (double)resid_bytes / (1 << 20));
    if (j->a->method == METHOD_SMOOTH || j->a->static_act) {
        j->amax = calloc((size_t)c->n_layers * N_TAPS, sizeof *j->amax);
        if (!j->amax) return ifn_error_set(IFN_ERR_NOMEM, "no memory for activation maxima");
        for (int i = 0; i < c->n_layers * N_TAPS; i++) {
            j->amax[i] = calloc((size_t)j->tap_dim[i % N_TAPS], sizeof(float));
            if (!j->amax[i]) return ifn_error_set(IFN_ERR_NOMEM, "no memory for activation maxima");
        }
        CHECK(gather_maxima(j));
    }
    return IFN_OK;
}

/* What only the calibration passes need: the model, its context and the kept residual streams
 * (the maxima and Hessians stay). */
static void release_calibration(quant_job *j)
{
    model_ctx_destroy(j->ctx);
    model_destroy(j->m);
    free(j->resid);
    j->ctx = NULL;
    j->m = NULL;
    j->resid = NULL;
}

/* What the written file can say about the source, checked before any calibration: the layout
 * written here (separate Q/K/V, gated FFN, no biases) is Llama's, and of RoPE scaling a GGUF
 * source's keys are copied, but neither a rope_freqs tensor nor a Hugging Face rope_scaling is
 * written (refused rather than written as plain RoPE). */
static ifn_status check_source(const quant_job *j)
{
    const model_config *c = j->c;
    const char *path = model_file_path(j->mf);
    if (strcmp(c->arch, "llama") != 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: a %s model; infernode quantize writes Llama-architecture files "
                             "only (run it as stored, or pack it at load with --quant)", path, c->arch);
    if (c->rope_freqs_tensor || (!model_file_gguf(j->mf) && c->rope_scaling.kind != IFN_ROPE_SCALING_NONE))
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: RoPE scaling (%s%s) that infernode quantize does not write (run "
                             "it as stored, or pack it at load with --quant)", path,
                             ifn_rope_scaling_name(c->rope_scaling.kind),
                             c->rope_freqs_tensor ? ", with a rope_freqs tensor" : "");
    return IFN_OK;
}

static ifn_status run_job(quant_job *j)
{
    const model_config *c = j->c;
    j->lin = calloc((size_t)c->n_layers, sizeof *j->lin);
    j->norm = calloc((size_t)c->n_layers, sizeof *j->norm);
    if (!j->lin || !j->norm) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %d layers", c->n_layers);
    const bool gptq = j->a->method == METHOD_GPTQ;
    const bool calibrate = gptq || j->a->method == METHOD_SMOOTH || j->a->static_act;
    if (calibrate) CHECK(prepare_calibration(j));
    if (!gptq) release_calibration(j); /* the maxima are all the layers below need */
    CHECK(gguf_writer_create(j->a->out, &j->w));
    CHECK(write_metadata(j));
    CHECK(declare_all(j));
    CHECK(gguf_writer_begin_data(j->w));
    CHECK(write_head(j, "token_embd", j->embd));
    /* GPTQ: layer l is resident from its calibration to its forward pass once quantized */
    for (int l = 0; l < c->n_layers; l++) {
        if (gptq) CHECK(model_load_layer(j->m, l));
        CHECK(quantize_layer(j, l));
        if (gptq && l + 1 < c->n_layers) CHECK(advance_residuals(j, l));
        if (gptq) model_drop_layer(j->m, l);
        model_file_release_pages(j->mf); /* the layer's file pages, read into memory of our own */
    }
    float *norm;
    CHECK(read_vector(j, "output_norm.weight", c->dim, &norm));
    ifn_status s = write_plain(j, j->output_norm, norm, 1, c->dim, IFN_DTYPE_F32, false);
    free(norm);
    CHECK(s);
    if (!c->tied_output) CHECK(write_head(j, "output", j->output));
    return gguf_writer_finish(j->w);
}

static void free_job(quant_job *j)
{
    gguf_writer_destroy(j->w);
    release_calibration(j);
    for (int t = 0; t < N_TAPS; t++) free(j->hess[t]);
    if (j->amax)
        for (int i = 0; i < j->c->n_layers * N_TAPS; i++) free(j->amax[i]);
    free(j->amax);
    free(j->calib);
    free(j->lin);
    free(j->norm);
    model_file_close(j->mf);
}

int cli_quantize(comm *c, int argc, char **argv)
{
    quant_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    if (comm_world(c) != 1) {
        fprintf(stderr, "infernode quantize: runs in one process, not under mpirun with %d ranks\n", comm_world(c));
        return CLI_EXIT_USAGE;
    }
    quant_job j = { .a = &a, .t0 = ifn_seconds() };
    ifn_status s = model_file_open(a.in, &j.mf);
    if (s == IFN_OK) {
        j.c = model_file_config(j.mf);
        s = check_source(&j);
    }
    if (s == IFN_OK) s = run_job(&j);
    if (a.progress) fputc('\n', stderr);
    if (s != IFN_OK) {
        free_job(&j);
        return cli_fail("quantize");
    }
    fprintf(stderr, "quantize: wrote %s (%s) in %.1f s\n", a.out, a.scheme_name, ifn_seconds() - j.t0);
    free_job(&j);
    return 0;
}
