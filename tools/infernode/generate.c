/* infernode generate: one prompt, one model, tokens or text to stdout. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clock.h"
#include "engine.h"
#include "model_tokenizer.h"
#include "qweight.h"
#include "request_defaults.h"
#include "sampler.h"

#define PROMPT_BATCH 512

typedef struct {
    const char *model_path;
    const char *prompt;
    const char *prompt_ids;
    const char *fim_prefix, *fim_suffix; /* a FIM prompt if either is set */
    const char *logits_out;
    const char *quant;
    int n_predict;
    int ctx_size;
    bool print_ids;
    bool ignore_eos;
    bool seed_given;
    bool parse_special;
    ifn_kv_type kv_type;
    sampler_params sp;
} gen_args;

static void gen_usage(FILE *out)
{
    fputs("usage: infernode generate [-m MODEL] (-p TEXT | --prompt-ids 1,2,3 | --fim-prefix TEXT\n"
          "                          --fim-suffix TEXT) [options]\n"
          "\n"
          "  -m, --model PATH        GGUF file, Hugging Face directory or llama2.c .bin\n"
          "                          (default: $INFERNODE_MODEL, else the shipped code model\n"
          "                          " INFERNODE_DEFAULT_MODEL ")\n"
          "  -p, --prompt TEXT       prompt text (BOS added as the model's tokenizer says;\n"
          "                          special tokens such as <s> typed in it stay text)\n"
          "      --parse-special     recognise special tokens such as <s> in -p TEXT\n"
          "      --prompt-ids LIST   prompt as comma-separated token ids, used as given\n"
          "      --fim-prefix TEXT   fill in the middle: the code before the gap and after it\n"
          "      --fim-suffix TEXT   (either may be left out: empty), as plain text, in the\n"
          "                          vocabulary's format: [BOS] <fim_prefix> prefix\n"
          "                          <fim_suffix> suffix <fim_middle> (StarCoder) or [BOS]\n"
          "                          <PRE> prefix <SUF> suffix <MID> (Code Llama); the\n"
          "                          output is the middle\n"
          "  -n, --n-predict N       tokens to generate (default 64); stops early at\n"
          "                          end-of-generation unless --ignore-eos\n"
          "      --temp T            temperature, 0 = greedy (default 0: greedy, as the gRPC\n"
          "                          and HTTP APIs; docs/defaults.md)\n"
          "      --top-k K           keep the K most likely tokens, 0 = off (default 0)\n"
          "      --top-p P           nucleus sampling, 1 = off (default 1)\n"
          "      --min-p P           drop tokens below P x the top probability (default 0)\n"
          "      --repeat-penalty R  penalty for the last 64 tokens, 1 = off (default 1)\n"
          "      --seed S            sampling seed (default: from the clock)\n"
          "      --ctx-size N        context to allocate (default: the model's, at most 4096)\n"
          "      --kv-type T         KV cache storage: f16 (default, as serve), bf16, f32\n"
          "                          (with --quant f32: the exact reference path)\n"
          "      --quant SCHEME      pack the weights at load: f32 (exact reference path), f16,\n"
          "                          bf16, w8a8, w8a8-g32, w4a8-g32|g64|g128|pc, w4a16-g32|g64|\n"
          "                          g128|pc (W4 optionally -asym); round-to-nearest from\n"
          "                          F32/F16/BF16. Default: as stored (GGUF Q8_0, Q5_0, IQ4_NL,\n"
          "                          Q3_K run as w8a8-g32, Q4_0 as w4a8-g32, Q4_1/Q4_K as\n"
          "                          w4a8-g32-asym; Q6_K, Q5_1, Q5_K, Q2_K are converted to\n"
          "                          w8a8-g32)\n"
          "      --ignore-eos        keep generating after end-of-generation tokens\n"
          "      --ids               print the generated token ids on one line instead of text\n"
          "      --logits-out FILE   write float32 little-endian logits of every prompt\n"
          "                          position, [n_prompt][vocab]\n"
          "  -t, --threads N         OpenMP threads (default: OMP_NUM_THREADS, else the\n"
          "                          CPUs this process may use: affinity and cgroup quota)\n"
          "  -h, --help              this help\n"
          "\n"
          "Text goes to stdout as it is generated; timings go to stderr.\n",
          out);
}

static int parse_args(int argc, char **argv, gen_args *a, bool report)
{
    enum {
        O_IDS = 256, O_PROMPT_IDS, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REPEAT, O_SEED, O_LOGITS, O_CTX, O_EOS, O_QUANT,
        O_FIM_PREFIX, O_FIM_SUFFIX, O_KV_TYPE, O_PARSE_SPECIAL,
    };
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },    { "prompt", required_argument, 0, 'p' },
        { "n-predict", required_argument, 0, 'n' }, { "threads", required_argument, 0, 't' },
        { "help", no_argument, 0, 'h' },            { "ids", no_argument, 0, O_IDS },
        { "prompt-ids", required_argument, 0, O_PROMPT_IDS }, { "temp", required_argument, 0, O_TEMP },
        { "top-k", required_argument, 0, O_TOPK },  { "top-p", required_argument, 0, O_TOPP },
        { "min-p", required_argument, 0, O_MINP },  { "repeat-penalty", required_argument, 0, O_REPEAT },
        { "seed", required_argument, 0, O_SEED },   { "logits-out", required_argument, 0, O_LOGITS },
        { "ctx-size", required_argument, 0, O_CTX }, { "ignore-eos", no_argument, 0, O_EOS },
        { "quant", required_argument, 0, O_QUANT }, { "fim-prefix", required_argument, 0, O_FIM_PREFIX },
        { "fim-suffix", required_argument, 0, O_FIM_SUFFIX }, { "kv-type", required_argument, 0, O_KV_TYPE },
        { "parse-special", no_argument, 0, O_PARSE_SPECIAL },
        { 0, 0, 0, 0 },
    };
    *a = (gen_args){ .n_predict = IFN_DEFAULT_MAX_NEW_TOKENS, .parse_special = IFN_DEFAULT_PARSE_SPECIAL,
                     .kv_type = IFN_DEFAULT_KV_TYPE, .sp = sampler_params_default() };
    optind = 1;
    opterr = report;
    int c, li;
    while ((li = -1, c = getopt_long(argc, argv, "m:p:n:t:h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = "a number"; /* what a refused value should have been */
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'p': a->prompt = optarg; break;
        case 'n':
            ok = cli_parse_int(optarg, 0, INT_MAX, &a->n_predict);
            expect = "an integer >= 0";
            break;
        case 't':
            ok = cli_set_threads(optarg);
            expect = CLI_THREADS_EXPECT;
            break;
        case 'h':
            if (report) gen_usage(stdout);
            return -1;
        case O_IDS: a->print_ids = true; break;
        case O_PROMPT_IDS: a->prompt_ids = optarg; break;
        case O_FIM_PREFIX: a->fim_prefix = optarg; break;
        case O_FIM_SUFFIX: a->fim_suffix = optarg; break;
        case O_TEMP: ok = cli_parse_float(optarg, &a->sp.temperature); break;
        case O_TOPK:
            ok = cli_parse_int(optarg, 0, INT_MAX, &a->sp.top_k);
            expect = "an integer >= 0";
            break;
        case O_TOPP: ok = cli_parse_float(optarg, &a->sp.top_p); break;
        case O_MINP: ok = cli_parse_float(optarg, &a->sp.min_p); break;
        case O_REPEAT: ok = cli_parse_float(optarg, &a->sp.repeat_penalty); break;
        case O_SEED:
            ok = cli_parse_u64(optarg, &a->sp.seed);
            expect = "an integer in 0..2^64-1";
            a->seed_given = true;
            break;
        case O_LOGITS: a->logits_out = optarg; break;
        case O_CTX:
            ok = cli_parse_int(optarg, 1, INT_MAX, &a->ctx_size);
            expect = "an integer >= 1";
            break;
        case O_EOS: a->ignore_eos = true; break;
        case O_PARSE_SPECIAL: a->parse_special = true; break;
        case O_KV_TYPE:
            ok = cli_parse_kv_type(optarg, &a->kv_type);
            expect = "f16, bf16 or f32";
            break;
        case O_QUANT: {
            qw_spec spec;
            a->quant = optarg;
            ok = qw_spec_parse(optarg, &spec) == IFN_OK;
            if (!ok) {
                if (report) fprintf(stderr, "infernode: error: %s\n", ifn_error_detail());
                return CLI_EXIT_USAGE;
            }
            break;
        }
        default:
            if (report) gen_usage(stderr);
            return CLI_EXIT_USAGE;
        }
        if (!ok) return report ? cli_bad_value(opts, li, c, optarg, expect) : CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        if (report) fprintf(stderr, "infernode: error: unexpected argument '%s'\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (!a->model_path) a->model_path = getenv("INFERNODE_MODEL");
    if (!a->model_path) a->model_path = INFERNODE_DEFAULT_MODEL;
    if (!!a->prompt + !!a->prompt_ids + (a->fim_prefix || a->fim_suffix) != 1) {
        if (report)
            fprintf(stderr, "infernode: error: give exactly one of -p TEXT, --prompt-ids LIST and "
                    "--fim-prefix/--fim-suffix TEXT\n");
        return CLI_EXIT_USAGE;
    }
    if (!a->seed_given) a->sp.seed = (uint64_t)time(NULL);
    if (sampler_params_validate(&a->sp) != IFN_OK) {
        if (report) fprintf(stderr, "infernode: error: %s\n", ifn_error_detail());
        return CLI_EXIT_USAGE;
    }
    return 0;
}

static ifn_status write_logits(const char *path, const float *logits, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return ifn_error_set(IFN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t put = fwrite(logits, sizeof(float), n, fp);
    int closed = fclose(fp);
    if (put != n || closed != 0) return ifn_error_set(IFN_ERR_IO, "%s: write failed", path);
    return IFN_OK;
}

typedef struct {
    engine *eng;
    tokenizer *tok;
    sampler *smp;
    detok_stream *detok;
    int32_t *tokens;  /* prompt then generated, [n_prompt + n_predict] */
    float *logits;    /* [vocab] or, with --logits-out, [n_prompt][vocab] */
    int32_t *top_ids; /* [top_k] */
    float *top_logits;
} gen_state;

static void gen_state_free(gen_state *g)
{
    free(g->top_logits);
    free(g->top_ids);
    free(g->logits);
    free(g->tokens);
    detok_stream_destroy(g->detok);
    sampler_destroy(g->smp);
    tokenizer_destroy(g->tok);
}

/* Tokenizes the prompt into g->tokens with room for n_predict more. */
static int prepare_prompt(gen_state *g, const gen_args *a, size_t *n_prompt)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (a->prompt_ids) {
        int rc = cli_parse_ids("--prompt-ids", a->prompt_ids, &ids, &n);
        if (rc) return rc;
    } else if (!g->tok) {
        fprintf(stderr, "infernode: error: %s has no tokenizer, so %s cannot be used; give --prompt-ids\n",
                a->model_path, a->prompt ? "-p TEXT" : "--fim-prefix/--fim-suffix");
        return CLI_EXIT_USAGE;
    } else if (!a->prompt) {
        const char *pre = a->fim_prefix ? a->fim_prefix : "", *suf = a->fim_suffix ? a->fim_suffix : "";
        ifn_status st = model_tokenizer_encode_fim(g->tok, pre, strlen(pre), suf, strlen(suf), IFN_DEFAULT_ADD_SPECIAL,
                                                   &ids, &n);
        if (st == IFN_ERR_UNSUPPORTED) {
            fprintf(stderr, "infernode: error: %s: %s\n", a->model_path, ifn_error_detail());
            ifn_error_clear();
            return CLI_EXIT_USAGE;
        }
        if (st != IFN_OK) return cli_fail("tokenizing the FIM prompt");
    } else if (tokenizer_encode(g->tok, a->prompt, strlen(a->prompt), IFN_DEFAULT_ADD_SPECIAL, a->parse_special, &ids,
                                &n) != IFN_OK) {
        return cli_fail("tokenizing the prompt");
    }
    if (n == 0) {
        free(ids);
        fprintf(stderr, "infernode: error: the prompt is empty: give -p TEXT or --prompt-ids with at least one id\n");
        return CLI_EXIT_USAGE;
    }
    int vocab = engine_config(g->eng)->vocab_size;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= vocab) {
            fprintf(stderr, "infernode: error: prompt token id %d (at index %zu) is outside the vocabulary (0..%d)\n",
                    ids[i], i, vocab - 1);
            free(ids);
            return CLI_EXIT_USAGE;
        }
    g->tokens = realloc(ids, (n + (size_t)a->n_predict) * sizeof *ids);
    if (!g->tokens) {
        free(ids);
        fprintf(stderr, "infernode: error: no memory for %d tokens\n", a->n_predict);
        return CLI_EXIT_ERROR;
    }
    *n_prompt = n;
    return 0;
}

static int emit_token(gen_state *g, const gen_args *a, int32_t id, bool first)
{
    if (a->print_ids || !g->tok) {
        printf(first ? "%d" : " %d", id);
        return 0;
    }
    char buf[4096];
    size_t n;
    if (detok_stream_push(g->detok, id, buf, sizeof buf, &n) != IFN_OK) return cli_fail("detokenizing");
    fwrite(buf, 1, n, stdout);
    fflush(stdout);
    return 0;
}

/* What the sampler needs back from the ranks for the next token. */
static engine_output next_token_request(gen_state *g, const sampler_params *sp)
{
    if (sampler_needs_full_logits(sp)) return (engine_output){ .mode = ENGINE_LOGITS_FULL, .logits = g->logits };
    if (sp->temperature == 0.0f)
        return (engine_output){ .mode = ENGINE_LOGITS_ARGMAX, .ids = g->top_ids, .values = g->top_logits };
    return (engine_output){ .mode = ENGINE_LOGITS_TOPK, .top_k = sp->top_k, .ids = g->top_ids, .values = g->top_logits };
}

static int32_t pick(gen_state *g, const engine_output *o, size_t n_tok)
{
    if (o->mode == ENGINE_LOGITS_FULL) return sampler_sample(g->smp, g->logits, g->tokens, n_tok);
    return sampler_sample_top(g->smp, g->top_ids, g->top_logits, o->mode == ENGINE_LOGITS_TOPK ? o->top_k : 1);
}

/* Rank 0's part: tokenize, evaluate, sample, print. The other ranks follow in engine_serve. */
static int run(gen_state *g, const gen_args *a)
{
    const model_config *c = engine_config(g->eng);
    fprintf(stderr, "infernode: %s\n", engine_describe(g->eng));
    ifn_status s = model_tokenizer_load(engine_model_file(g->eng), &g->tok);
    if (s == IFN_ERR_NOT_FOUND) {
        ifn_error_clear();
        if (!a->print_ids && a->prompt_ids) fprintf(stderr, "infernode: %s has no tokenizer: printing token ids\n", a->model_path);
    } else if (s != IFN_OK) {
        return cli_fail(NULL);
    }

    size_t n_prompt = 0;
    int rc = prepare_prompt(g, a, &n_prompt);
    if (rc) return rc;
    int ctx = engine_ctx_size(g->eng);
    if (n_prompt > (size_t)ctx) {
        fprintf(stderr, "infernode: error: the prompt has %zu tokens, more than the context of %d\n", n_prompt, ctx);
        return CLI_EXIT_USAGE;
    }
    if (sampler_create(&a->sp, c->vocab_size, &g->smp) != IFN_OK) return cli_fail(NULL);
    if (g->tok && detok_stream_create(g->tok, false, &g->detok) != IFN_OK) return cli_fail(NULL);
    if (g->detok && detok_stream_follow(g->detok, g->tokens, n_prompt) != IFN_OK) return cli_fail(NULL);
    size_t rows = a->logits_out ? n_prompt : 1;
    int k = a->sp.top_k > 0 ? a->sp.top_k : 1;
    g->logits = malloc(rows * (size_t)c->vocab_size * sizeof(float));
    g->top_ids = malloc((size_t)k * sizeof *g->top_ids);
    g->top_logits = malloc((size_t)k * sizeof *g->top_logits);
    if (!g->logits || !g->top_ids || !g->top_logits) {
        fprintf(stderr, "infernode: error: no memory for logits\n");
        return CLI_EXIT_ERROR;
    }

    double t0 = ifn_seconds();
    engine_output req = next_token_request(g, &a->sp);
    if (a->logits_out) {
        engine_output all = { .mode = ENGINE_LOGITS_FULL, .logits = g->logits };
        if (engine_eval(g->eng, g->tokens, (int)n_prompt, true, &all) != IFN_OK) return cli_fail("evaluating the prompt");
        if (write_logits(a->logits_out, g->logits, n_prompt * (size_t)c->vocab_size) != IFN_OK) return cli_fail(NULL);
        /* The next token comes from the last row. */
        memmove(g->logits, g->logits + (n_prompt - 1) * (size_t)c->vocab_size, (size_t)c->vocab_size * sizeof(float));
        req = (engine_output){ .mode = ENGINE_LOGITS_FULL, .logits = g->logits };
    } else if (engine_eval(g->eng, g->tokens, (int)n_prompt, false, &req) != IFN_OK) {
        return cli_fail("evaluating the prompt");
    }
    double t1 = ifn_seconds();

    size_t n_tok = n_prompt;
    int n_gen = 0;
    const char *stop_reason = "length";
    while (n_gen < a->n_predict) {
        int32_t id = pick(g, &req, n_tok);
        req = next_token_request(g, &a->sp);
        if (!a->ignore_eos && g->tok && tokenizer_is_eog(g->tok, id)) {
            stop_reason = "end of generation";
            break;
        }
        g->tokens[n_tok++] = id;
        if ((rc = emit_token(g, a, id, n_gen == 0))) return rc;
        n_gen++;
        if (n_gen == a->n_predict) break;
        if (engine_slot_len(g->eng, 0) == ctx) {
            stop_reason = "context full";
            break;
        }
        if (engine_eval(g->eng, &id, 1, false, &req) != IFN_OK) return cli_fail("generating");
    }
    double t2 = ifn_seconds();
    if (g->detok && !a->print_ids) {
        char buf[64];
        size_t n;
        if (detok_stream_finish(g->detok, buf, sizeof buf, &n) == IFN_OK) fwrite(buf, 1, n, stdout);
    }
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr, "infernode: prompt %zu tokens in %.1f ms (%.1f tok/s); generated %d tokens in %.1f ms "
            "(%.1f tok/s); stopped: %s\n", n_prompt, 1e3 * (t1 - t0), (double)n_prompt / (t1 - t0), n_gen,
            1e3 * (t2 - t1), n_gen > 0 ? (double)n_gen / (t2 - t1) : 0.0, stop_reason);
    return 0;
}

int cli_generate(comm *c, int argc, char **argv)
{
    gen_args a;
    int rc = parse_args(argc, argv, &a, comm_rank(c) == 0);
    if (rc) return rc < 0 ? 0 : rc;
    engine_params ep = { .model_path = a.model_path, .quant = a.quant, .ctx_size = a.ctx_size, .n_batch = PROMPT_BATCH,
                         .n_slots = 1, .kv_type = a.kv_type };
    engine *eng;
    if (engine_create(c, &ep, &eng) != IFN_OK) {
        if (*ifn_error_detail()) cli_fail(NULL);
        return CLI_EXIT_ERROR;
    }
    if (comm_rank(c) != 0) {
        rc = engine_serve(eng) == IFN_OK ? 0 : cli_fail(NULL);
    } else {
        gen_state g = { .eng = eng };
        rc = run(&g, &a);
        gen_state_free(&g);
        if (engine_stop(eng) != IFN_OK && rc == 0) rc = cli_fail(NULL);
    }
    engine_destroy(eng);
    return rc;
}
