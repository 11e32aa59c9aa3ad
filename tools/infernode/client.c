/* infernode client: calls a running infernode server over gRPC. It needs no model and no MPI:
 * main() dispatches it before any rank is set up. */
#include <getopt.h>
#include <limits.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client_output.h"
#include "client_rpc.h"
#include "request_defaults.h"

enum {
    SUB_GENERATE = 1 << 0,
    SUB_STREAM = 1 << 1,
    SUB_TOKENIZE = 1 << 2,
    SUB_DETOKENIZE = 1 << 3,
    SUB_INFO = 1 << 4,
    SUB_HEALTH = 1 << 5,
    SUB_DELETE = 1 << 6,
    SUB_GEN = SUB_GENERATE | SUB_STREAM,
    SUB_ALL = (1 << 7) - 1,
};

typedef struct {
    const char *name;
    int sub;
    const char *method;
    const ProtobufCMessageDescriptor *response;
} client_command;

static const client_command COMMANDS[] = {
    { "generate", SUB_GENERATE, "/infernode.v1.Inference/Generate", &infernode__v1__generate_response__descriptor },
    { "stream", SUB_STREAM, "/infernode.v1.Inference/GenerateStream", &infernode__v1__generate_response__descriptor },
    { "tokenize", SUB_TOKENIZE, "/infernode.v1.Inference/Tokenize", &infernode__v1__tokenize_response__descriptor },
    { "detokenize", SUB_DETOKENIZE, "/infernode.v1.Inference/Detokenize", &infernode__v1__detokenize_response__descriptor },
    { "info", SUB_INFO, "/infernode.v1.Inference/ModelInfo", &infernode__v1__model_info_response__descriptor },
    { "health", SUB_HEALTH, "/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_response__descriptor },
    { "delete-session", SUB_DELETE, "/infernode.v1.Inference/DeleteSession",
      &infernode__v1__delete_session_response__descriptor },
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void client_usage(FILE *out)
{
    fputs("usage: infernode client COMMAND --addr HOST:PORT [options]\n"
          "\n"
          "Calls a running infernode server over gRPC (no model or MPI needed here).\n"
          "\n"
          "commands:\n"
          "  generate     one request, the whole completion       (infernode.v1.Inference/Generate)\n"
          "  stream       one request, text printed as generated  (infernode.v1.Inference/GenerateStream)\n"
          "  tokenize     text to token ids                       (infernode.v1.Inference/Tokenize)\n"
          "  detokenize   token ids to text                       (infernode.v1.Inference/Detokenize)\n"
          "  info         the model being served                  (infernode.v1.Inference/ModelInfo)\n"
          "  health       whether the server is serving           (grpc.health.v1.Health/Check)\n"
          "  delete-session ID  frees a chat session's KV cache     (infernode.v1.Inference/DeleteSession)\n"
          "\n"
          "connection (every command):\n"
          "      --addr HOST:PORT     the server (required)\n"
          "      --token T            send 'authorization: Bearer T' (default: $INFERNODE_TOKEN)\n"
          "      --tls-ca FILE        use TLS, trusting the PEM certificates in FILE\n"
          "                           (default: plaintext)\n"
          "      --timeout SECONDS    deadline of the call (default: none)\n"
          "      --json               print each response message as one JSON object per line\n"
          "  -h, --help               this help\n"
          "\n"
          "generate and stream:\n"
          "  -p, --prompt TEXT        prompt text\n"
          "      --ids LIST           prompt as comma-separated token ids (instead of -p)\n"
          "      --fim-prefix TEXT    fill in the middle (instead of -p): the code before the\n"
          "      --fim-suffix TEXT    gap and after it (either may be left out: empty); the\n"
          "                           server builds the model's FIM prompt (StarCoder's or\n"
          "                           Code Llama's) and the answer is the middle\n"
          "  -n, --max-new-tokens N   tokens to generate (default 64)\n"
          "      --temp T             temperature, 0 = greedy\n"
          "      --top-k K            keep the K most likely tokens, 0 = off\n"
          "      --top-p P            nucleus sampling, 1 = off\n"
          "      --min-p P            drop tokens below P x the top probability, 0 = off\n"
          "      --repeat-penalty R   repetition penalty, 1 = off\n"
          "      --seed S             sampling seed (same seed and request, same output)\n"
          "      --stop STR           stop when the text ends with STR (repeatable)\n"
          "      --ignore-eos         keep generating after end-of-generation tokens\n"
          "      --no-special         do not add BOS in front of a text prompt\n"
          "      --new-session        start a chat session: the server keeps its KV cache and\n"
          "                           names it (printed as 'infernode: session ID' on stderr,\n"
          "                           \"session_id\" with --json)\n"
          "      --session ID         continue that session: send only the new turn's text\n"
          "      --no-spec            no speculative decoding for this request\n"
          "      --max-draft N        most tokens the server's speculation proposes per step\n"
          "  Sampling options left out take the server's defaults (greedy, as 'infernode\n"
          "  generate'; docs/defaults.md).\n"
          "  The text of -p, --stop, --fim-prefix and --fim-suffix may hold the escapes of\n"
          "  printf '%b': \\\\ \\n \\t \\r \\a \\b \\e \\f \\v \\0NNN \\NNN \\xHH \\uHHHH\n"
          "  \\UHHHHHHHH \\c (so --stop '\\n\\n' is two newlines; \\\\ is one backslash).\n"
          "\n"
          "tokenize:    -p TEXT [--no-special] [--parse-special (recognise <s> and the like)]\n"
          "             or --fim-prefix TEXT --fim-suffix TEXT [--no-special]: a FIM prompt's ids\n"
          "detokenize:  --ids LIST [--render-special (print special tokens as text)]\n"
          "health:      [--service NAME (default: the whole server)]\n"
          "delete-session ID: NOT_FOUND if the session is unknown or has ended\n"
          "\n"
          "Output: generate prints the text, stream prints it as it arrives; usage and timings\n"
          "go to stderr. tokenize prints ids separated by spaces; info prints 'field: value'\n"
          "lines; health prints the serving status.\n"
          "Exit status: 0 success; 1 the call failed ('infernode: error: STATUS: details' on\n"
          "stderr) or health is not SERVING; 2 a usage error.\n",
          out);
}

typedef struct {
    const client_command *cmd;
    rpc_options rpc;
    bool json;
    char *prompt;                /* -p, --fim-*, --stop: unescaped copies (cli_unescape) */
    const char *ids_list;
    char *fim_prefix, *fim_suffix; /* a FIM prompt if either is set */
    const char *service;
    bool no_special, parse_special, render_special;
    int32_t *ids; /* [n_ids], from --ids */
    size_t n_ids;
    char **stops; /* [n_stops] */
    size_t n_stops;
    int max_new_tokens;
    bool sampling_given;
    bool ignore_eos;
    bool new_session;
    const char *session; /* --session, or delete-session's ID */
    Infernode__V1__SamplingParams sampling;
    Infernode__V1__SpeculativeOptions spec;
} client_args;

enum {
    O_ADDR = 256, O_TOKEN, O_TLS_CA, O_TIMEOUT, O_JSON, O_IDS, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REPEAT, O_SEED,
    O_STOP, O_EOS, O_NO_SPECIAL, O_SESSION, O_NO_SPEC, O_MAX_DRAFT, O_PARSE_SPECIAL, O_RENDER_SPECIAL, O_SERVICE,
    O_FIM_PREFIX, O_FIM_SUFFIX, O_NEW_SESSION,
};

static const struct option OPTIONS[] = {
    { "addr", required_argument, 0, O_ADDR },
    { "token", required_argument, 0, O_TOKEN },
    { "tls-ca", required_argument, 0, O_TLS_CA },
    { "timeout", required_argument, 0, O_TIMEOUT },
    { "json", no_argument, 0, O_JSON },
    { "help", no_argument, 0, 'h' },
    { "prompt", required_argument, 0, 'p' },
    { "ids", required_argument, 0, O_IDS },
    { "fim-prefix", required_argument, 0, O_FIM_PREFIX },
    { "fim-suffix", required_argument, 0, O_FIM_SUFFIX },
    { "max-new-tokens", required_argument, 0, 'n' },
    { "temp", required_argument, 0, O_TEMP },
    { "top-k", required_argument, 0, O_TOPK },
    { "top-p", required_argument, 0, O_TOPP },
    { "min-p", required_argument, 0, O_MINP },
    { "repeat-penalty", required_argument, 0, O_REPEAT },
    { "seed", required_argument, 0, O_SEED },
    { "stop", required_argument, 0, O_STOP },
    { "ignore-eos", no_argument, 0, O_EOS },
    { "no-special", no_argument, 0, O_NO_SPECIAL },
    { "session", required_argument, 0, O_SESSION },
    { "new-session", no_argument, 0, O_NEW_SESSION },
    { "no-spec", no_argument, 0, O_NO_SPEC },
    { "max-draft", required_argument, 0, O_MAX_DRAFT },
    { "parse-special", no_argument, 0, O_PARSE_SPECIAL },
    { "render-special", no_argument, 0, O_RENDER_SPECIAL },
    { "service", required_argument, 0, O_SERVICE },
    { 0, 0, 0, 0 },
};

/* The commands an option belongs to. */
static int option_commands(int code)
{
    switch (code) {
    case 'p': case O_FIM_PREFIX: case O_FIM_SUFFIX: return SUB_GEN | SUB_TOKENIZE;
    case O_IDS: return SUB_GEN | SUB_DETOKENIZE;
    case O_NO_SPECIAL: return SUB_GEN | SUB_TOKENIZE;
    case 'n': case O_TEMP: case O_TOPK: case O_TOPP: case O_MINP: case O_REPEAT: case O_SEED: case O_STOP:
    case O_EOS: case O_SESSION: case O_NEW_SESSION: case O_NO_SPEC: case O_MAX_DRAFT:
        return SUB_GEN;
    case O_PARSE_SPECIAL: return SUB_TOKENIZE;
    case O_RENDER_SPECIAL: return SUB_DETOKENIZE;
    case O_SERVICE: return SUB_HEALTH;
    }
    return SUB_ALL;
}

/* *dst = v with its printf '%b' escapes made (a value given before is replaced). NULL, or
 * what a refused value should have been. */
static const char *take_text(char **dst, const char *v)
{
    free(*dst);
    *dst = NULL;
    if (cli_unescape(v, dst) == IFN_OK) return NULL;
    ifn_error_clear();
    return "text whose escapes make UTF-8 without NUL bytes";
}

/* Parses one option's value into a. NULL, or what a refused value should have been. */
static const char *take_option(client_args *a, int code, const char *v)
{
    Infernode__V1__SamplingParams *s = &a->sampling;
    static const char number[] = "a number", integer[] = "a 32-bit integer";
    float seconds;
    switch (code) {
    case O_ADDR: a->rpc.addr = v; return NULL;
    case O_TOKEN: a->rpc.token = v; return NULL;
    case O_TLS_CA: a->rpc.tls_ca = v; return NULL;
    case O_TIMEOUT:
        if (!cli_parse_float(v, &seconds) || !(seconds > 0)) return "a number of seconds > 0";
        a->rpc.timeout = seconds;
        return NULL;
    case O_JSON: a->json = true; return NULL;
    case 'p': return take_text(&a->prompt, v);
    case O_IDS: a->ids_list = v; return NULL;
    case O_FIM_PREFIX: return take_text(&a->fim_prefix, v);
    case O_FIM_SUFFIX: return take_text(&a->fim_suffix, v);
    case 'n': return cli_parse_int(v, 1, INT32_MAX, &a->max_new_tokens) ? NULL : "an integer in 1..2147483647";
    case O_TEMP: return (s->has_temperature = cli_parse_float(v, &s->temperature)) ? NULL : number;
    case O_TOPK: return (s->has_top_k = cli_parse_int(v, INT32_MIN, INT32_MAX, &s->top_k)) ? NULL : integer;
    case O_TOPP: return (s->has_top_p = cli_parse_float(v, &s->top_p)) ? NULL : number;
    case O_MINP: return (s->has_min_p = cli_parse_float(v, &s->min_p)) ? NULL : number;
    case O_REPEAT: return (s->has_repetition_penalty = cli_parse_float(v, &s->repetition_penalty)) ? NULL : number;
    case O_SEED: return (s->has_seed = cli_parse_u64(v, &s->seed)) ? NULL : "an integer in 0..2^64-1";
    case O_STOP: return take_text(&a->stops[a->n_stops++], v);
    case O_EOS: a->ignore_eos = true; return NULL;
    case O_NO_SPECIAL: a->no_special = true; return NULL;
    case O_SESSION: a->session = v; return NULL;
    case O_NEW_SESSION: a->new_session = true; return NULL;
    case O_NO_SPEC: a->spec.has_enabled = true; return NULL; /* enabled stays false */
    case O_MAX_DRAFT:
        return (a->spec.has_max_draft_tokens = cli_parse_int(v, INT32_MIN, INT32_MAX, &a->spec.max_draft_tokens))
                   ? NULL : integer;
    case O_PARSE_SPECIAL: a->parse_special = true; return NULL;
    case O_RENDER_SPECIAL: a->render_special = true; return NULL;
    case O_SERVICE: a->service = v; return NULL;
    }
    return "a value of a known option";
}

static int usage_error(const char *fmt, const char *what)
{
    fputs("infernode: error: ", stderr);
    fprintf(stderr, fmt, what);
    fputs("\nRun 'infernode client --help' for the options.\n", stderr);
    return CLI_EXIT_USAGE;
}

/* argv[0] is the command's name. Returns 0, CLI_EXIT_USAGE, or -1 after --help. */
static int parse_args(int argc, char **argv, client_args *a)
{
    optind = 1;
    opterr = 1;
    argv[0] = "infernode client";
    int code, index;
    while ((index = -1, code = getopt_long(argc, argv, "p:n:h", OPTIONS, &index)) != -1) {
        if (code == 'h') {
            client_usage(stdout);
            return -1;
        }
        if (code == '?' || code == ':') {
            fputs("Run 'infernode client --help' for the options.\n", stderr);
            return CLI_EXIT_USAGE;
        }
        char shown[64];
        if (index >= 0) snprintf(shown, sizeof shown, "--%s", OPTIONS[index].name);
        else snprintf(shown, sizeof shown, "-%c", code);
        if (!(option_commands(code) & a->cmd->sub)) {
            fprintf(stderr, "infernode: error: %s is not an option of 'infernode client %s'\n", shown, a->cmd->name);
            return CLI_EXIT_USAGE;
        }
        const char *expect = take_option(a, code, optarg);
        if (expect) return cli_bad_value(OPTIONS, index, code, optarg, expect);
        a->sampling_given |= code >= O_TEMP && code <= O_SEED;
    }
    if (a->cmd->sub == SUB_DELETE && optind == argc - 1) a->session = argv[optind++];
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->cmd->sub == SUB_DELETE && !a->session) return usage_error("%s needs the session's ID", a->cmd->name);
    if (a->new_session && a->session)
        return usage_error("%s: --new-session starts a session, --session continues one: give one of them",
                           a->cmd->name);
    if (!a->rpc.addr) return usage_error("%s needs --addr HOST:PORT", a->cmd->name);
    if (!a->rpc.token) a->rpc.token = getenv("INFERNODE_TOKEN");
    const bool fim = a->fim_prefix || a->fim_suffix;
    if ((a->cmd->sub & SUB_GEN) && !!a->prompt + !!a->ids_list + fim != 1)
        return usage_error("%s needs exactly one of -p TEXT, --ids LIST and --fim-prefix/--fim-suffix TEXT",
                           a->cmd->name);
    if (a->cmd->sub == SUB_TOKENIZE && !a->prompt == !fim)
        return usage_error("%s needs exactly one of -p TEXT and --fim-prefix/--fim-suffix TEXT", a->cmd->name);
    if (fim && a->parse_special)
        return usage_error("%s: --parse-special is not for a FIM prompt (its prefix and suffix are plain text)",
                           a->cmd->name);
    if (a->cmd->sub == SUB_DETOKENIZE && !a->ids_list) return usage_error("%s needs --ids LIST", a->cmd->name);
    if (a->ids_list) return cli_parse_ids("--ids", a->ids_list, &a->ids, &a->n_ids);
    return 0;
}

/* ---- requests ---------------------------------------------------------------------- */

/* The request of a->cmd, serialized into *buf (malloc'd). */
static ifn_status pack_request(client_args *a, uint8_t **buf, size_t *len)
{
    Infernode__V1__GenerateRequest gen = INFERNODE__V1__GENERATE_REQUEST__INIT;
    Infernode__V1__TokenIds prompt_ids = INFERNODE__V1__TOKEN_IDS__INIT;
    Infernode__V1__FimPrompt fim = INFERNODE__V1__FIM_PROMPT__INIT;
    fim.prefix = (char *)a->fim_prefix;
    fim.suffix = (char *)a->fim_suffix;
    const bool is_fim = a->fim_prefix || a->fim_suffix;
    Infernode__V1__TokenizeRequest tok = INFERNODE__V1__TOKENIZE_REQUEST__INIT;
    Infernode__V1__DetokenizeRequest detok = INFERNODE__V1__DETOKENIZE_REQUEST__INIT;
    Infernode__V1__ModelInfoRequest info = INFERNODE__V1__MODEL_INFO_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckRequest health = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Infernode__V1__DeleteSessionRequest del = INFERNODE__V1__DELETE_SESSION_REQUEST__INIT;
    ProtobufCMessage *msg;
    switch (a->cmd->sub) {
    case SUB_GENERATE:
    case SUB_STREAM:
        if (a->prompt) {
            gen.text = (char *)a->prompt;
        } else if (is_fim) {
            gen.fim = &fim;
        } else {
            prompt_ids.n_ids = a->n_ids;
            prompt_ids.ids = a->ids;
            gen.token_ids = &prompt_ids;
        }
        gen.has_max_new_tokens = true;
        gen.max_new_tokens = a->max_new_tokens;
        if (a->sampling_given) gen.sampling = &a->sampling;
        gen.n_stop = a->n_stops;
        gen.stop = a->stops;
        gen.has_ignore_eos = a->ignore_eos;
        gen.ignore_eos = a->ignore_eos;
        gen.has_add_special = a->no_special;
        gen.add_special = !a->no_special;
        gen.session_id = (char *)a->session;
        gen.has_new_session = a->new_session;
        gen.new_session = a->new_session;
        if (a->spec.has_enabled || a->spec.has_max_draft_tokens) gen.speculative = &a->spec;
        msg = &gen.base;
        break;
    case SUB_TOKENIZE:
        tok.text = (char *)a->prompt;
        if (is_fim) tok.fim = &fim;
        tok.has_add_special = true;
        tok.has_parse_special = !is_fim;
        tok.add_special = !a->no_special;
        tok.parse_special = a->parse_special;
        msg = &tok.base;
        break;
    case SUB_DETOKENIZE:
        detok.n_token_ids = a->n_ids;
        detok.token_ids = a->ids;
        detok.has_render_special = true;
        detok.render_special = a->render_special;
        msg = &detok.base;
        break;
    case SUB_INFO: msg = &info.base; break;
    case SUB_DELETE:
        del.session_id = (char *)a->session;
        msg = &del.base;
        break;
    default:
        health.service = (char *)(a->service ? a->service : "");
        msg = &health.base;
        break;
    }
    *len = protobuf_c_message_get_packed_size(msg);
    *buf = malloc(*len ? *len : 1);
    if (!*buf) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a %zu-byte request", *len);
    protobuf_c_message_pack(msg, *buf);
    return IFN_OK;
}

/* ---- responses --------------------------------------------------------------------- */

typedef struct {
    const client_args *a;
    size_t n_messages;
    ProtobufCMessage *last; /* the response (unary) or the last message of the stream */
    bool wrote_text;        /* stream: text printed on stdout without its final newline */
} call_ctx;

/* Streamed messages are shown as they arrive; a unary call's one message after its status. */
static ifn_status on_message(void *ctx, const uint8_t *data, size_t len)
{
    call_ctx *cc = ctx;
    const client_command *cmd = cc->a->cmd;
    ProtobufCMessage *msg = protobuf_c_message_unpack(cmd->response, NULL, len, data);
    if (!msg)
        return ifn_error_set(IFN_ERR_FORMAT, "message %zu from the server is not a valid %s", cc->n_messages + 1,
                             cmd->response->name);
    if (++cc->n_messages > 1 && cmd->sub != SUB_STREAM) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return ifn_error_set(IFN_ERR_FORMAT, "the server sent more than one response to the unary call %s", cmd->method);
    }
    if (cmd->sub == SUB_STREAM) {
        const Infernode__V1__GenerateResponse *r = (const Infernode__V1__GenerateResponse *)msg;
        if (cc->a->json) {
            client_json_generate(stdout, r);
        } else if (r->text && *r->text) {
            fputs(r->text, stdout);
            cc->wrote_text = true;
        }
        fflush(stdout);
    }
    if (cc->last) protobuf_c_message_free_unpacked(cc->last, NULL);
    cc->last = msg;
    return IFN_OK;
}

/* Shows the final answer of an OK call; returns the exit status. */
static int show_result(const call_ctx *cc)
{
    const client_args *a = cc->a;
    const ProtobufCMessage *msg = cc->last;
    switch (a->cmd->sub) {
    case SUB_GENERATE: {
        const Infernode__V1__GenerateResponse *r = (const Infernode__V1__GenerateResponse *)msg;
        if (a->json) {
            client_json_generate(stdout, r);
        } else {
            printf("%s\n", r->text ? r->text : "");
            client_print_summary(stderr, r);
            client_print_session(stderr, r);
        }
        return 0;
    }
    case SUB_STREAM:
        if (!a->json) {
            putchar('\n');
            client_print_summary(stderr, (const Infernode__V1__GenerateResponse *)msg);
            client_print_session(stderr, (const Infernode__V1__GenerateResponse *)msg);
        }
        return 0;
    case SUB_DELETE:
        if (a->json) client_json_deleted(stdout, a->session);
        else printf("deleted session %s\n", a->session);
        return 0;
    case SUB_TOKENIZE: {
        const Infernode__V1__TokenizeResponse *r = (const Infernode__V1__TokenizeResponse *)msg;
        if (a->json) client_json_token_ids(stdout, r->token_ids, r->n_token_ids);
        else client_print_token_ids(stdout, r->token_ids, r->n_token_ids);
        return 0;
    }
    case SUB_DETOKENIZE: {
        const Infernode__V1__DetokenizeResponse *r = (const Infernode__V1__DetokenizeResponse *)msg;
        if (a->json) client_json_text(stdout, r->text);
        else printf("%s\n", r->text ? r->text : "");
        return 0;
    }
    case SUB_INFO:
        if (a->json) client_json_model_info(stdout, (const Infernode__V1__ModelInfoResponse *)msg);
        else client_print_model_info(stdout, (const Infernode__V1__ModelInfoResponse *)msg);
        return 0;
    default: {
        const Grpc__Health__V1__HealthCheckResponse *r = (const Grpc__Health__V1__HealthCheckResponse *)msg;
        if (a->json) client_json_health(stdout, r);
        else printf("%s\n", client_serving_status_name((int)r->status));
        return r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : CLI_EXIT_ERROR;
    }
    }
}

static int run_call(client_args *a)
{
    uint8_t *req = NULL;
    size_t len;
    rpc_client *c = NULL;
    if (pack_request(a, &req, &len) != IFN_OK || rpc_client_create(&a->rpc, &c) != IFN_OK) {
        free(req);
        return cli_fail(NULL);
    }
    call_ctx cc = { .a = a };
    rpc_status status = { 0 };
    ifn_status st = rpc_call(c, a->cmd->method, req, len, on_message, &cc, &status);
    free(req);
    if (cc.wrote_text && (st != IFN_OK || status.code != 0)) putchar('\n');
    fflush(stdout);
    int rc;
    if (st != IFN_OK) {
        rc = cli_fail(a->cmd->method);
    } else if (status.code != 0) {
        fprintf(stderr, "infernode: error: %s: %s\n", rpc_status_name(status.code), status.details);
        rc = CLI_EXIT_ERROR;
    } else if (!cc.last) {
        fprintf(stderr, "infernode: error: %s ended OK without a response\n", a->cmd->method);
        rc = CLI_EXIT_ERROR;
    } else {
        rc = show_result(&cc);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "infernode: error: cannot write to stdout\n");
        rc = CLI_EXIT_ERROR;
    }
    if (cc.last) protobuf_c_message_free_unpacked(cc.last, NULL);
    rpc_status_free(&status);
    rpc_client_destroy(c);
    return rc;
}

int cli_client(int argc, char **argv)
{
    if (argc < 2) {
        client_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        client_usage(stdout);
        return 0;
    }
    client_args a = { .max_new_tokens = IFN_DEFAULT_MAX_NEW_TOKENS, .sampling = INFERNODE__V1__SAMPLING_PARAMS__INIT,
                      .spec = INFERNODE__V1__SPECULATIVE_OPTIONS__INIT };
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, COMMANDS[i].name) == 0) a.cmd = &COMMANDS[i];
    if (!a.cmd) return usage_error("unknown client command '%s'", name);
    a.stops = calloc((size_t)argc, sizeof *a.stops);
    if (!a.stops) {
        fprintf(stderr, "infernode: error: no memory for the arguments\n");
        return CLI_EXIT_ERROR;
    }
    int rc = parse_args(argc - 1, argv + 1, &a);
    if (rc == 0) rc = run_call(&a);
    for (size_t i = 0; i < a.n_stops; i++) free(a.stops[i]);
    free(a.stops);
    free(a.prompt);
    free(a.fim_prefix);
    free(a.fim_suffix);
    free(a.ids);
    return rc < 0 ? 0 : rc;
}
