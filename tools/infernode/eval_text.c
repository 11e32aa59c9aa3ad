/* infernode eval ppl / eval kl: how well a model predicts text, alone or against a reference.
 *
 * Sequences. Each text file is tokenized on its own, as plain text (no special tokens parsed),
 * with the tokenizer's BOS in front and its EOS at the end when it has them; --ids gives the
 * sequences as token ids, one per line, used as given. BOS is only ever context; every later
 * token, EOS included, is predicted.
 *
 * Windows: the strided perplexity of Hugging Face's "Perplexity of fixed-length models". For
 * a sequence of n tokens, window w holds tokens [w*S, min(w*S + C, n)) for the context C
 * (--ctx) and stride S (--stride); the windows stop at the first that reaches n. The model
 * sees each window from an empty cache, and it scores a token (-log p of it given the
 * window's tokens before it) only in the first window that contains it with at least one
 * token before it: the first window scores its tokens 1.., each later one the tokens after
 * the previous window's end. With S < C every token after the first is scored once and sees
 * at least C - S tokens of context unless it lies in the first window; with S = C the
 * windows do not overlap and the first token of each later window is not scored.
 *
 * Streaming: a window runs through the engine in chunks of at most the step size (and 16M
 * logits), and each chunk's rows are scored and dropped; log-softmax and KL are computed in
 * double. Under mpirun 'eval ppl' runs the model over all ranks (rank 0 scores); 'eval kl'
 * holds two models and runs in one process. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine.h"
#include "eval.h"
#include "model_tokenizer.h"
#include "qweight.h"

#define DEFAULT_CTX_CAP 4096 /* the default window at most, as engine_params.ctx_size's default */
#define MAX_CHUNK_LOGITS (16u << 20) /* floats of one engine's chunk: 64 MiB */

typedef struct {
    bool kl, json;
    const char *model_path, *quant, *ref_path, *ref_quant;
    const char **files; /* [n_files] from -f and the further arguments */
    int n_files;
    const char *file_list, *ids_path;
    int ctx, stride;    /* 0: the defaults */
} text_args;

/* One sequence and what was measured on it. */
typedef struct {
    char *name;         /* its file, or "FILE line N" for --ids */
    int32_t *ids;       /* [n] */
    size_t n;
    size_t bytes;       /* of the text (0 for --ids) */
    size_t scored, agree;
    double nll, ref_nll, kl; /* sums over the scored tokens, nats */
} eval_seq;

typedef struct {
    const text_args *a;
    model_file *mf, *ref_mf; /* rank 0 while preparing */
    tokenizer *tok;
    eval_seq *seqs;
    size_t n_seqs, cap;
    bool text;
    int ctx, stride, vocab;
    /* while scoring */
    engine *eng, *ref;
    float *logits, *ref_logits; /* [chunk][vocab] */
    int chunk;
    size_t windows;
} text_job;

static void text_usage(FILE *out, bool kl)
{
    if (kl)
        fputs("usage: infernode eval kl -m MODEL [--quant Q] --ref REF [--ref-quant Q]\n"
              "                         (-f FILE... | --file-list LIST | --ids FILE) [options]\n"
              "\n"
              "KL(P_ref || P_model) per scored token (nats, log-softmax in double), top-1\n"
              "agreement (argmax equal, lowest id on ties) and both perplexities, over the same\n"
              "windows. The two models must have the same vocabulary (and, for text, tokenizers\n"
              "that agree). Runs in one process.\n"
              "\n"
              "  -m, --model PATH     the model measured (default: $INFERNODE_MODEL, else\n"
              "                       " INFERNODE_DEFAULT_MODEL ")\n"
              "      --quant SCHEME   how to pack its weights (see 'generate --help')\n"
              "      --ref PATH       the reference model\n"
              "      --ref-quant SCHEME  how to pack the reference's weights (default: as stored)\n",
              out);
    else
        fputs("usage: infernode eval ppl -m MODEL [--quant Q] (-f FILE... | --file-list LIST | --ids FILE)\n"
              "                          [options]\n"
              "\n"
              "Perplexity: exp of the mean negative log-likelihood of the scored tokens.\n"
              "\n"
              "  -m, --model PATH     GGUF file, Hugging Face directory or llama2.c .bin (default:\n"
              "                       $INFERNODE_MODEL, else " INFERNODE_DEFAULT_MODEL ")\n"
              "      --quant SCHEME   how to pack the weights (see 'generate --help'; default: as stored)\n",
              out);
    fputs("  -f, --file FILE      a text file (UTF-8 or not, read as bytes); repeat -f, and any\n"
          "                       further arguments are text files too\n"
          "      --file-list LIST a file naming one text file per line (blank lines skipped)\n"
          "      --ids FILE       token ids instead of text: one sequence per line, ids separated\n"
          "                       by spaces (blank lines skipped); used as given\n"
          "      --ctx N          tokens per window, 2 up to the model's context (default: the\n"
          "                       model's context, at most 4096)\n"
          "      --stride S       tokens from one window's start to the next, 1..N (default 3N/4)\n"
          "      --json           one JSON object on stdout instead of text (per input as well)\n"
          "  -t, --threads N      OpenMP threads (default: OMP_NUM_THREADS, else the\n"
          "                       CPUs this process may use: affinity and cgroup quota)\n"
          "  -h, --help           this help\n"
          "\n"
          "Each text file is tokenized alone, as plain text, with the tokenizer's BOS in front\n"
          "and its EOS at the end (when it has them): BOS is given, every later token and EOS\n"
          "are predicted. Windows (Hugging Face's strided perplexity): for a sequence of n\n"
          "tokens, window w holds tokens [w*S, min(w*S + N, n)), the last window being the\n"
          "first that reaches n; each starts from an empty cache. The first window scores its\n"
          "tokens 1.., every later window only the tokens after the previous window's end, so\n"
          "with S < N each token after the first is scored once, with at least N - S tokens of\n"
          "context outside the first window (S = N: no overlap, and the first token of each\n"
          "later window is not scored). Bits per byte (text only): the scored tokens' total\n"
          "negative log-likelihood / ln 2 / the bytes of the files.\n",
          out);
}

static int parse_args(int argc, char **argv, text_args *a, bool kl, bool report)
{
    enum { O_QUANT = 256, O_REF, O_REF_QUANT, O_FILE_LIST, O_IDS, O_CTX, O_STRIDE, O_JSON };
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },      { "quant", required_argument, 0, O_QUANT },
        { "ref", required_argument, 0, O_REF },      { "ref-quant", required_argument, 0, O_REF_QUANT },
        { "file", required_argument, 0, 'f' },       { "file-list", required_argument, 0, O_FILE_LIST },
        { "ids", required_argument, 0, O_IDS },      { "ctx", required_argument, 0, O_CTX },
        { "stride", required_argument, 0, O_STRIDE }, { "json", no_argument, 0, O_JSON },
        { "threads", required_argument, 0, 't' },    { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    *a = (text_args){ .kl = kl, .files = malloc((size_t)(argc + 1) * sizeof *a->files) };
    if (!a->files) {
        if (report) fprintf(stderr, "infernode: error: no memory for the arguments\n");
        return CLI_EXIT_ERROR;
    }
    optind = 1;
    opterr = report;
    int c, li;
    while ((li = -1, c = getopt_long(argc, argv, "m:f:t:h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = "a number"; /* what a refused value should have been */
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'f': a->files[a->n_files++] = optarg; break;
        case 't':
            ok = cli_set_threads(optarg);
            expect = CLI_THREADS_EXPECT;
            break;
        case 'h':
            if (report) text_usage(stdout, kl);
            return -1;
        case O_QUANT: a->quant = optarg; break;
        case O_REF: a->ref_path = optarg; break;
        case O_REF_QUANT: a->ref_quant = optarg; break;
        case O_FILE_LIST: a->file_list = optarg; break;
        case O_IDS: a->ids_path = optarg; break;
        case O_CTX:
            ok = cli_parse_int(optarg, 2, INT_MAX, &a->ctx);
            expect = "an integer of at least 2";
            break;
        case O_STRIDE:
            ok = cli_parse_int(optarg, 1, INT_MAX, &a->stride);
            expect = "a positive integer";
            break;
        case O_JSON: a->json = true; break;
        default:
            if (report) text_usage(stderr, kl);
            return CLI_EXIT_USAGE;
        }
        if (!ok) return report ? cli_bad_value(opts, li, c, optarg, expect) : CLI_EXIT_USAGE;
    }
    while (optind < argc) a->files[a->n_files++] = argv[optind++];
    const char *quants[2] = { a->quant, a->ref_quant };
    for (int i = 0; i < 2; i++) {
        qw_spec spec;
        if (quants[i] && qw_spec_parse(quants[i], &spec) != IFN_OK) {
            if (report) fprintf(stderr, "infernode: error: %s %s\n", i ? "--ref-quant:" : "--quant:", ifn_error_detail());
            return CLI_EXIT_USAGE;
        }
    }
    if (!a->model_path) a->model_path = getenv("INFERNODE_MODEL");
    if (!a->model_path) a->model_path = INFERNODE_DEFAULT_MODEL;
    const char *problem = NULL;
    if (kl && !a->ref_path) problem = "eval kl needs the reference model: --ref PATH";
    else if (!kl && (a->ref_path || a->ref_quant)) problem = "--ref and --ref-quant belong to 'eval kl', not 'eval ppl'";
    else if (!a->n_files && !a->file_list && !a->ids_path)
        problem = "no input: give text files (-f FILE, --file-list LIST) or token ids (--ids FILE)";
    else if (a->ids_path && (a->n_files || a->file_list))
        problem = "give text files (-f, --file-list) or token ids (--ids), not both";
    if (problem) {
        if (report) fprintf(stderr, "infernode: error: %s\n", problem);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* ---------------------------------------------------------------- inputs */

static eval_seq *add_seq(text_job *j)
{
    if (j->n_seqs == j->cap) {
        size_t nc = j->cap ? 2 * j->cap : 16;
        eval_seq *ns = realloc(j->seqs, nc * sizeof *ns);
        if (!ns) return NULL;
        j->seqs = ns;
        j->cap = nc;
    }
    eval_seq *s = &j->seqs[j->n_seqs++];
    *s = (eval_seq){ 0 };
    return s;
}

static int no_memory(const char *what)
{
    fprintf(stderr, "infernode: error: no memory for %s\n", what);
    return CLI_EXIT_ERROR;
}

/* A text file as BOS, its tokens, EOS. */
static int add_text(text_job *j, const char *path)
{
    char *text;
    size_t len;
    if (cli_read_file(path, &text, &len) != IFN_OK) return cli_fail(NULL);
    if (len == 0) {
        free(text);
        fprintf(stderr, "infernode: error: %s is empty: there is no text to score\n", path);
        return CLI_EXIT_USAGE;
    }
    int32_t *body;
    size_t n_body;
    ifn_status st = tokenizer_encode(j->tok, text, len, false, false, &body, &n_body);
    free(text);
    if (st != IFN_OK) return cli_fail(path);
    const int32_t bos = tokenizer_bos(j->tok), eos = tokenizer_eos(j->tok);
    eval_seq *s = add_seq(j);
    size_t n = n_body + (bos >= 0) + (eos >= 0);
    if (s) {
        s->name = strdup(path);
        s->ids = malloc(n * sizeof *s->ids);
    }
    if (!s || !s->name || !s->ids) {
        free(body);
        return no_memory(path);
    }
    s->n = 0;
    if (bos >= 0) s->ids[s->n++] = bos;
    memcpy(s->ids + s->n, body, n_body * sizeof *body);
    s->n += n_body;
    if (eos >= 0) s->ids[s->n++] = eos;
    s->bytes = len;
    free(body);
    if (s->n < 2) {
        fprintf(stderr, "infernode: error: %s is %zu token long with BOS and EOS; a sequence needs at least 2 (one "
                "given, one predicted)\n", path, s->n);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

static int list_line(void *arg, char *line, int no)
{
    return add_text(arg, line);
}

static int ids_line(void *arg, char *line, int no)
{
    text_job *j = arg;
    eval_seq *s = add_seq(j);
    char name[4200];
    snprintf(name, sizeof name, "%s line %d", j->a->ids_path, no);
    if (!s || !(s->name = strdup(name))) return no_memory(name);
    size_t cap = 0;
    for (char *p = line;;) {
        p += strspn(p, " \t");
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ' ' && *end != '\t')) {
            fprintf(stderr, "infernode: error: %s: '%.*s' is not a token id (a non-negative integer)\n", name,
                    (int)strcspn(p, " \t"), p);
            return CLI_EXIT_USAGE;
        }
        if (s->n == cap) {
            cap = cap ? 2 * cap : 256;
            int32_t *ni = realloc(s->ids, cap * sizeof *ni);
            if (!ni) return no_memory(name);
            s->ids = ni;
        }
        s->ids[s->n++] = (int32_t)v;
        p = end;
    }
    if (s->n < 2) {
        fprintf(stderr, "infernode: error: %s has 1 token id; a sequence needs at least 2 (one given, one predicted)\n",
                name);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

static int read_lines_of(text_job *j, const char *path, int (*fn)(void *, char *, int), const char *what)
{
    char *text;
    size_t len;
    if (cli_read_file(path, &text, &len) != IFN_OK) return cli_fail(NULL);
    size_t before = j->n_seqs;
    int rc = eval_for_lines(text, len, fn, j);
    free(text);
    if (rc == 0 && j->n_seqs == before) {
        fprintf(stderr, "infernode: error: %s has no %s\n", path, what);
        return CLI_EXIT_USAGE;
    }
    return rc;
}

/* The text's tokenizer: the model's. For kl, a reference with a tokenizer of its own must
 * encode every text the same way. */
static int load_tokenizer(text_job *j)
{
    ifn_status s = model_tokenizer_load(j->mf, &j->tok);
    if (s == IFN_ERR_NOT_FOUND) {
        ifn_error_clear();
        fprintf(stderr, "infernode: error: %s has no tokenizer, so text cannot be scored; give token ids with --ids\n",
                j->a->model_path);
        return CLI_EXIT_USAGE;
    }
    return s == IFN_OK ? 0 : cli_fail(NULL);
}

static int check_ref_tokenizer(text_job *j)
{
    tokenizer *rt;
    ifn_status s = model_tokenizer_load(j->ref_mf, &rt);
    if (s == IFN_ERR_NOT_FOUND) {
        ifn_error_clear();
        return 0;
    }
    if (s != IFN_OK) return cli_fail(NULL);
    int rc = 0;
    if (tokenizer_bos(rt) != tokenizer_bos(j->tok) || tokenizer_eos(rt) != tokenizer_eos(j->tok)) {
        fprintf(stderr, "infernode: error: the tokenizers of %s (BOS %d, EOS %d) and of the reference %s (BOS %d, EOS "
                "%d) differ: KL needs the same tokens\n", j->a->model_path, tokenizer_bos(j->tok), tokenizer_eos(j->tok),
                j->a->ref_path, tokenizer_bos(rt), tokenizer_eos(rt));
        rc = CLI_EXIT_USAGE;
    }
    for (size_t i = 0; rc == 0 && i < j->n_seqs; i++) {
        const eval_seq *q = &j->seqs[i];
        char *text;
        size_t len;
        int32_t *ids;
        size_t n;
        if (cli_read_file(q->name, &text, &len) != IFN_OK) {
            rc = cli_fail(NULL);
            break;
        }
        s = tokenizer_encode(rt, text, len, false, false, &ids, &n);
        free(text);
        if (s != IFN_OK) {
            rc = cli_fail(q->name);
            break;
        }
        size_t off = tokenizer_bos(rt) >= 0, k = 0;
        while (k < n && k + off < q->n && ids[k] == q->ids[k + off]) k++;
        if (k < n || n + off + (tokenizer_eos(rt) >= 0) != q->n) {
            fprintf(stderr, "infernode: error: the tokenizers of %s and of the reference %s encode %s differently "
                    "(from token %zu on): KL needs the same tokens\n", j->a->model_path, j->a->ref_path, q->name, k + off);
            rc = CLI_EXIT_USAGE;
        }
        free(ids);
    }
    tokenizer_destroy(rt);
    return rc;
}

static int load_inputs(text_job *j)
{
    const text_args *a = j->a;
    if (a->ids_path) return read_lines_of(j, a->ids_path, ids_line, "token ids");
    j->text = true;
    int rc = load_tokenizer(j);
    for (int i = 0; rc == 0 && i < a->n_files; i++) rc = add_text(j, a->files[i]);
    if (rc == 0 && a->file_list) rc = read_lines_of(j, a->file_list, list_line, "file names");
    if (rc == 0 && a->kl) rc = check_ref_tokenizer(j);
    return rc;
}

/* Rank 0: opens the models' files for their shapes and tokenizers, reads the inputs and checks
 * everything against the models before any weights are loaded. */
static int prepare(text_job *j)
{
    const text_args *a = j->a;
    if (model_file_open(a->model_path, &j->mf) != IFN_OK) return cli_fail(NULL);
    const model_config *mc = model_file_config(j->mf);
    j->vocab = mc->vocab_size;
    int max_ctx = mc->ctx_len;
    const char *limit_path = a->model_path;
    if (a->kl) {
        if (model_file_open(a->ref_path, &j->ref_mf) != IFN_OK) return cli_fail(NULL);
        const model_config *rc = model_file_config(j->ref_mf);
        if (rc->vocab_size != j->vocab) {
            fprintf(stderr, "infernode: error: the vocabularies differ: %s has %d tokens, the reference %s %d; KL needs "
                    "the same tokens\n", a->model_path, j->vocab, a->ref_path, rc->vocab_size);
            return CLI_EXIT_USAGE;
        }
        if (rc->ctx_len < max_ctx) {
            max_ctx = rc->ctx_len;
            limit_path = a->ref_path;
        }
    }
    if (a->ctx > max_ctx) {
        fprintf(stderr, "infernode: error: --ctx %d is above the context of %s (%d tokens)\n", a->ctx, limit_path,
                max_ctx);
        return CLI_EXIT_USAGE;
    }
    j->ctx = a->ctx ? a->ctx : max_ctx < DEFAULT_CTX_CAP ? max_ctx : DEFAULT_CTX_CAP;
    if (j->ctx < 2) {
        fprintf(stderr, "infernode: error: %s has a context of %d token: a window needs at least 2\n", limit_path, j->ctx);
        return CLI_EXIT_USAGE;
    }
    if (a->stride > j->ctx) {
        fprintf(stderr, "infernode: error: --stride %d is outside 1..%d (the window, --ctx)\n", a->stride, j->ctx);
        return CLI_EXIT_USAGE;
    }
    j->stride = a->stride ? a->stride : j->ctx * 3 / 4 > 0 ? j->ctx * 3 / 4 : 1;
    int rc = load_inputs(j);
    for (size_t i = 0; rc == 0 && i < j->n_seqs; i++)
        for (size_t k = 0; k < j->seqs[i].n; k++)
            if (j->seqs[i].ids[k] >= j->vocab) {
                fprintf(stderr, "infernode: error: %s: token id %d (at index %zu) is outside the vocabulary of %s "
                        "(0..%d)\n", j->seqs[i].name, j->seqs[i].ids[k], k, a->model_path, j->vocab - 1);
                return CLI_EXIT_USAGE;
            }
    return rc;
}

/* ---------------------------------------------------------------- scoring */

/* log(sum(exp(row))) in double. */
static double log_sum_exp(const float *row, int n)
{
    float m = row[0];
    for (int i = 1; i < n; i++)
        if (row[i] > m) m = row[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)row[i] - m);
    return m + log(s);
}

static int argmax(const float *row, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

/* Scores one output row: row predicts token `target`. */
static ifn_status score_row(text_job *j, eval_seq *s, const float *row, const float *ref_row, int32_t target,
                            size_t at)
{
    const int v = j->vocab;
    double lse = log_sum_exp(row, v);
    if (!isfinite(lse))
        return ifn_error_set(IFN_ERR_INTERNAL, "%s: the logits of %s predicting token %zu are not finite", s->name,
                             j->a->model_path, at);
    s->nll += lse - row[target];
    s->scored++;
    if (!ref_row) return IFN_OK;
    double ref_lse = log_sum_exp(ref_row, v);
    if (!isfinite(ref_lse))
        return ifn_error_set(IFN_ERR_INTERNAL, "%s: the logits of the reference %s predicting token %zu are not finite",
                             s->name, j->a->ref_path, at);
    s->ref_nll += ref_lse - ref_row[target];
    double kl = 0.0;
    for (int i = 0; i < v; i++) {
        double lr = ref_row[i] - ref_lse;
        kl += exp(lr) * (lr - (row[i] - lse));
    }
    s->kl += kl;
    s->agree += argmax(row, v) == argmax(ref_row, v);
    return IFN_OK;
}

/* Window [start, end) scoring tokens first..end-1: feeds tokens start..end-2 (the last token
 * is only predicted), the ones before first - 1 without output. */
static ifn_status score_window(text_job *j, eval_seq *s, size_t start, size_t first, size_t end)
{
    engine *engines[2] = { j->eng, j->ref };
    float *out[2] = { j->logits, j->ref_logits };
    const int n_eng = j->ref ? 2 : 1;
    for (int e = 0; e < n_eng; e++) {
        engine_reset(engines[e]);
        engine_output none = { .mode = ENGINE_LOGITS_NONE };
        if (first - 1 > start) CHECK(engine_eval(engines[e], s->ids + start, (int)(first - 1 - start), false, &none));
    }
    for (size_t t0 = first - 1; t0 < end - 1; t0 += (size_t)j->chunk) {
        const int m = end - 1 - t0 < (size_t)j->chunk ? (int)(end - 1 - t0) : j->chunk;
        for (int e = 0; e < n_eng; e++) {
            engine_output full = { .mode = ENGINE_LOGITS_FULL, .logits = out[e] };
            CHECK(engine_eval(engines[e], s->ids + t0, m, true, &full));
        }
        for (int i = 0; i < m; i++) {
            const size_t row = (size_t)i * (size_t)j->vocab;
            CHECK(score_row(j, s, j->logits + row, j->ref ? j->ref_logits + row : NULL, s->ids[t0 + i + 1],
                            t0 + i + 1));
        }
    }
    return IFN_OK;
}

static ifn_status score_seq(text_job *j, eval_seq *s)
{
    size_t prev_end = 1;
    for (size_t start = 0;; start += (size_t)j->stride) {
        size_t end = start + (size_t)j->ctx < s->n ? start + (size_t)j->ctx : s->n;
        size_t first = prev_end > start + 1 ? prev_end : start + 1;
        CHECK(score_window(j, s, start, first, end));
        j->windows++;
        prev_end = end;
        if (end == s->n) return IFN_OK;
    }
}

/* ---------------------------------------------------------------- report */

typedef struct {
    size_t tokens, bytes, scored, agree;
    double nll, ref_nll, kl;
} totals;

static totals sum_up(const text_job *j)
{
    totals t = { 0 };
    for (size_t i = 0; i < j->n_seqs; i++) {
        const eval_seq *s = &j->seqs[i];
        t.tokens += s->n;
        t.bytes += s->bytes;
        t.scored += s->scored;
        t.agree += s->agree;
        t.nll += s->nll;
        t.ref_nll += s->ref_nll;
        t.kl += s->kl;
    }
    return t;
}

static void print_text(const text_job *j, const totals *t)
{
    const text_args *a = j->a;
    const double n = (double)t->scored, ppl = exp(t->nll / n);
    printf("model: %s (%s)\n", a->model_path, engine_quant_desc(j->eng));
    if (a->kl) printf("reference: %s (%s)\n", a->ref_path, engine_quant_desc(j->ref));
    if (j->text)
        printf("input: %zu text file%s, %zu tokens with BOS and EOS, %zu bytes\n", j->n_seqs, j->n_seqs == 1 ? "" : "s",
               t->tokens, t->bytes);
    else
        printf("input: %zu sequence%s of token ids, %zu tokens\n", j->n_seqs, j->n_seqs == 1 ? "" : "s", t->tokens);
    printf("windows: %zu of at most %d tokens, stride %d; %zu tokens scored\n", j->windows, j->ctx, j->stride, t->scored);
    if (!a->kl) {
        printf("mean NLL: %.6f nats/token\nperplexity: %.4f\n", t->nll / n, ppl);
        if (j->text) printf("bits per byte: %.4f\n", t->nll / log(2.0) / (double)t->bytes);
        return;
    }
    const double ref_ppl = exp(t->ref_nll / n);
    printf("KL(reference || model): %.6f nats/token\n", t->kl / n);
    printf("top-1 agreement: %.4f (%zu of %zu)\n", (double)t->agree / n, t->agree, t->scored);
    printf("mean NLL: model %.6f, reference %.6f nats/token\n", t->nll / n, t->ref_nll / n);
    printf("perplexity: model %.4f, reference %.4f (%+.3f %%)\n", ppl, ref_ppl, 100.0 * (ppl / ref_ppl - 1.0));
}

static void print_json(const text_job *j, const totals *t)
{
    const text_args *a = j->a;
    const double n = (double)t->scored;
    printf("{\"mode\": \"%s\", \"model\": ", a->kl ? "kl" : "ppl");
    cli_json_string(stdout, a->model_path);
    printf(", \"quant\": ");
    cli_json_string(stdout, engine_quant_desc(j->eng));
    if (a->kl) {
        printf(", \"ref\": ");
        cli_json_string(stdout, a->ref_path);
        printf(", \"ref_quant\": ");
        cli_json_string(stdout, engine_quant_desc(j->ref));
    }
    printf(", \"ctx\": %d, \"stride\": %d, \"sequences\": %zu, \"windows\": %zu, \"tokens\": %zu, "
           "\"tokens_scored\": %zu, \"nll_sum\": %.17g, \"nll_mean\": %.17g, \"ppl\": %.17g",
           j->ctx, j->stride, j->n_seqs, j->windows, t->tokens, t->scored, t->nll, t->nll / n, exp(t->nll / n));
    if (j->text) printf(", \"bytes\": %zu, \"bits_per_byte\": %.17g", t->bytes, t->nll / log(2.0) / (double)t->bytes);
    if (a->kl)
        printf(", \"ref_nll_sum\": %.17g, \"ref_nll_mean\": %.17g, \"ref_ppl\": %.17g, \"ppl_delta_pct\": %.17g, "
               "\"kl_sum\": %.17g, \"kl_mean\": %.17g, \"top1_agree\": %zu, \"top1_agreement\": %.17g",
               t->ref_nll, t->ref_nll / n, exp(t->ref_nll / n), 100.0 * (exp((t->nll - t->ref_nll) / n) - 1.0), t->kl,
               t->kl / n, t->agree, (double)t->agree / n);
    printf(", \"inputs\": [");
    for (size_t i = 0; i < j->n_seqs; i++) {
        const eval_seq *s = &j->seqs[i];
        printf("%s{\"name\": ", i ? ", " : "");
        cli_json_string(stdout, s->name);
        printf(", \"tokens\": %zu, \"tokens_scored\": %zu, \"nll_sum\": %.17g", s->n, s->scored, s->nll);
        if (j->text) printf(", \"bytes\": %zu", s->bytes);
        if (a->kl)
            printf(", \"ref_nll_sum\": %.17g, \"kl_sum\": %.17g, \"top1_agree\": %zu", s->ref_nll, s->kl, s->agree);
        printf("}");
    }
    printf("]}\n");
}

/* Rank 0: every sequence through the windows, then the report. */
static int run(text_job *j)
{
    fprintf(stderr, "infernode: %s\n", engine_describe(j->eng));
    if (j->ref) fprintf(stderr, "infernode: reference: %s\n", engine_describe(j->ref));
    size_t chunk = MAX_CHUNK_LOGITS / (size_t)j->vocab;
    j->chunk = chunk < 1 ? 1 : chunk < (size_t)engine_n_batch(j->eng) ? (int)chunk : engine_n_batch(j->eng);
    const size_t rows = (size_t)j->chunk * (size_t)j->vocab;
    j->logits = malloc(rows * sizeof(float));
    if (j->ref) j->ref_logits = malloc(rows * sizeof(float));
    if (!j->logits || (j->ref && !j->ref_logits)) return no_memory("the logits of a chunk");
    for (size_t i = 0; i < j->n_seqs; i++)
        if (score_seq(j, &j->seqs[i]) != IFN_OK) return cli_fail(j->seqs[i].name);
    totals t = sum_up(j);
    if (j->a->json) print_json(j, &t);
    else print_text(j, &t);
    fflush(stdout);
    return 0;
}

static void job_free(text_job *j)
{
    free(j->ref_logits);
    free(j->logits);
    for (size_t i = 0; i < j->n_seqs; i++) {
        free(j->seqs[i].name);
        free(j->seqs[i].ids);
    }
    free(j->seqs);
    tokenizer_destroy(j->tok);
    if (j->ref_mf) model_file_close(j->ref_mf);
    if (j->mf) model_file_close(j->mf);
}

static int with_engines(comm *c, text_job *j)
{
    const text_args *a = j->a;
    engine_params ep = { .model_path = a->model_path, .quant = a->quant, .ctx_size = j->ctx, .n_slots = 1 };
    if (engine_create(c, &ep, &j->eng) != IFN_OK) {
        if (*ifn_error_detail()) cli_fail(NULL);
        return CLI_EXIT_ERROR;
    }
    int rc = 0;
    if (comm_rank(c) != 0) {
        rc = engine_serve(j->eng) == IFN_OK ? 0 : cli_fail(NULL);
    } else {
        engine_params rp = { .model_path = a->ref_path, .quant = a->ref_quant, .ctx_size = j->ctx, .n_slots = 1 };
        if (a->kl && engine_create(c, &rp, &j->ref) != IFN_OK) rc = cli_fail(NULL);
        if (rc == 0) rc = run(j);
        if (j->ref) engine_destroy(j->ref);
        if (engine_stop(j->eng) != IFN_OK && rc == 0) rc = cli_fail(NULL);
    }
    engine_destroy(j->eng);
    return rc;
}

int eval_text(comm *c, int argc, char **argv, bool kl)
{
    const bool talk = comm_rank(c) == 0;
    text_args a;
    int rc = parse_args(argc, argv, &a, kl, talk);
    if (rc == 0 && kl && comm_world(c) > 1) {
        if (talk) fprintf(stderr, "infernode: error: 'eval kl' holds two models and runs in one process, not under "
                          "mpirun (%d ranks)\n", comm_world(c));
        rc = CLI_EXIT_USAGE;
    }
    if (rc) {
        free(a.files);
        return rc < 0 ? 0 : rc;
    }
    text_job j = { .a = &a };
    /* Rank 0 decides; the window size goes to every rank with the verdict. */
    int plan[2] = { 0, 0 };
    if (talk) {
        plan[0] = prepare(&j);
        plan[1] = j.ctx;
        if (j.mf) model_file_close(j.mf);
        if (j.ref_mf) model_file_close(j.ref_mf);
        j.mf = j.ref_mf = NULL;
    }
    if (comm_bcast(c, plan, sizeof plan, 0) != IFN_OK) {
        plan[0] = cli_fail(NULL);
    } else if (plan[0] == 0) {
        j.ctx = plan[1];
        plan[0] = with_engines(c, &j);
    }
    job_free(&j);
    free(a.files);
    return plan[0];
}
