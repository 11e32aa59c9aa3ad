/* infernode serve: the gRPC service. Rank 0 runs the coordinator (gRPC server, health,
 * metrics, scheduler) and computes its shard; the other ranks follow its steps.
 *
 * Order of events on rank 0: the gRPC server and the health service come up first (NOT_SERVING,
 * Generate answers UNAVAILABLE) so that probes see the model loading; then every rank loads its
 * shard; then health turns SERVING. SIGTERM, SIGINT or SIGUSR1 (the one mpirun forwards to the
 * ranks) start a drain: health NOT_SERVING, new calls UNAVAILABLE, the calls in flight run to
 * their end for at most --drain-seconds, then every rank stops and the process exits 0. Ranks
 * other than 0 ignore these signals and stop when rank 0 says so. Before serving (MPI starting,
 * the model loading) the same signals end every rank at once with status 1.
 *
 * A lost rank or link (comm_watch) makes rank 0 turn health NOT_SERVING and end every call in
 * flight, and every later one, with UNAVAILABLE naming the rank and its host; then the process
 * exits 1 and mpirun ends the job. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "descriptor_set.h"
#include "engine.h"
#include "grpc_reflection.h"
#include "health.h"
#include "http_api.h"
#include "metrics.h"
#include "metrics_http.h"
#include "model_tokenizer.h"
#include "request_defaults.h"
#include "rpc_server.h"
#include "scheduler.h"
#include "secret_file.h"
#include "service.h"
#include "speculative.h"

typedef struct {
    const char *model_path, *quant, *host, *metrics_host, *tls_cert, *tls_key, *draft_model, *draft_quant;
    char *auth_token; /* secret_free */
    int port, metrics_port, http_port, ctx_size, max_seqs, max_queue, step_tokens, prefill_chunk, max_message_mib;
    sched_spec_mode spec;
    int spec_max_draft;
    int kv_slots, n_keep, n_discard;
    ifn_kv_type kv_type;
    const char *kv_eviction; /* NULL: the model's default */
    double drain_seconds, session_ttl;
} serve_args;

static volatile sig_atomic_t stop_signal;
/* What a stop signal does now: end the process (loading), drain (rank 0 serving), nothing
 * (the other ranks, which stop when rank 0 says so). */
static volatile sig_atomic_t signal_phase;
enum { PHASE_LOADING, PHASE_SERVING, PHASE_FOLLOWING };

static void on_stop_signal(int sig)
{
    if (signal_phase == PHASE_LOADING) {
        static const char msg[] = "infernode: stop signal while starting: exiting\n";
        if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do before exiting */ }
        _exit(CLI_EXIT_ERROR);
    }
    if (signal_phase == PHASE_SERVING) stop_signal = sig;
}

void cli_serve_signals(void)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

static void serve_usage(FILE *out)
{
    fputs("usage: infernode serve [-m MODEL] [options]   (under mpirun: one rank per NUMA node)\n"
          "\n"
          "  -m, --model PATH          GGUF file, Hugging Face directory or llama2.c .bin\n"
          "                            (default: $INFERNODE_MODEL, else " INFERNODE_DEFAULT_MODEL ")\n"
          "      --quant SCHEME        pack the weights at load (see 'infernode generate --help')\n"
          "      --host ADDR           address to listen on (default 127.0.0.1, this machine\n"
          "                            only; 0.0.0.0 or :: for every interface)\n"
          "      --port N              gRPC port (default 50051; 0 picks a free one)\n"
          "      --metrics-port N      Prometheus /metrics port (default 9090; 0 picks a free\n"
          "                            one; -1 turns metrics off); it has the gRPC port's TLS\n"
          "                            and bearer token\n"
          "      --metrics-host ADDR   address for /metrics (default: --host)\n"
          "      --http-port N         OpenAI-compatible HTTP API port on --host (default 8080;\n"
          "                            0 picks a free one; -1 turns it off); it has the gRPC\n"
          "                            port's TLS, bearer token and --max-message-mib\n"
          "      --ctx-size N          positions per sequence (default: the model's, at most 4096)\n"
          "      --max-seqs N          sequences generating at once (default 16)\n"
          "      --kv-slots N          KV caches: running sequences and idle chat sessions\n"
          "                            (default: --max-seqs); memory is reserved at start\n"
          "      --kv-type T           KV cache storage: f16 (default), bf16 or f32\n"
          "      --n-keep N            attention sinks kept when a KV ring is full (default 4)\n"
          "      --n-discard N         oldest entries dropped when it is full: -1 half of the\n"
          "                            window after the sinks (default), 0 never\n"
          "      --kv-eviction E       shift-rope (kept keys re-rotated; the default with RoPE)\n"
          "                            or recompute (the kept window evaluated again; the\n"
          "                            default and the only way for models without RoPE)\n"
          "      --session-ttl S       seconds an idle chat session is kept (default 600)\n"
          "      --draft-model PATH    speculative decoding with this draft model (on rank 0; it\n"
          "                            must share the model's tokenizer)\n"
          "      --draft-quant SCHEME  pack the draft's weights at load (as --quant)\n"
          "      --spec MODE           off, draft (the default with --draft-model) or ngram\n"
          "                            (proposals from the prompt and output so far)\n"
          "      --spec-max-draft N    most tokens proposed per step, 1..16 (default 8); each\n"
          "                            sequence's number adapts below it\n"
          "      --max-queue N         requests waiting for a sequence slot; more get\n"
          "                            RESOURCE_EXHAUSTED (default 256)\n"
          "      --step-tokens N       tokens per forward step over all sequences (default 256)\n"
          "      --prefill-chunk N     prompt tokens of one sequence per step (default 128)\n"
          "      --max-message-mib N   largest request or response message (default 4)\n"
          "      --tls-cert FILE       serve TLS (gRPC and /metrics) with this PEM certificate\n"
          "                            chain ...\n"
          "      --tls-key FILE        ... and this PEM private key\n"
          "      --auth-token-file F   require 'authorization: Bearer <token>' (gRPC and\n"
          "                            /metrics; health checks stay open) with the token in F:\n"
          "                            the whole file, one line of letters, digits and -._~+/=\n"
          "      --drain-seconds S     on SIGTERM, how long calls in flight may finish (default 30)\n"
          "  -t, --threads N           OpenMP threads per rank\n"
          "  -h, --help                this help\n"
          "\n"
          "Logs go to stderr; the first line after loading says where the server listens.\n",
          out);
}

/* A finite number of seconds >= 0. */
static bool parse_seconds(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && *out >= 0 && isfinite(*out);
}

static int parse_args(int argc, char **argv, serve_args *a, bool report)
{
    enum { O_QUANT = 256, O_HOST, O_PORT, O_METRICS, O_CTX, O_SEQS, O_QUEUE, O_STEP, O_CHUNK, O_MSG, O_CERT, O_KEY,
           O_TOKEN, O_DRAIN, O_KV_SLOTS, O_KV_TYPE, O_KEEP, O_DISCARD, O_EVICTION, O_TTL, O_DRAFT, O_DRAFT_QUANT, O_SPEC,
           O_SPEC_MAX, O_METRICS_HOST, O_HTTP_PORT };
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },        { "threads", required_argument, 0, 't' },
        { "help", no_argument, 0, 'h' },               { "quant", required_argument, 0, O_QUANT },
        { "host", required_argument, 0, O_HOST },      { "port", required_argument, 0, O_PORT },
        { "metrics-port", required_argument, 0, O_METRICS }, { "ctx-size", required_argument, 0, O_CTX },
        { "max-seqs", required_argument, 0, O_SEQS },  { "max-queue", required_argument, 0, O_QUEUE },
        { "step-tokens", required_argument, 0, O_STEP }, { "prefill-chunk", required_argument, 0, O_CHUNK },
        { "max-message-mib", required_argument, 0, O_MSG }, { "tls-cert", required_argument, 0, O_CERT },
        { "tls-key", required_argument, 0, O_KEY },    { "auth-token-file", required_argument, 0, O_TOKEN },
        { "drain-seconds", required_argument, 0, O_DRAIN }, { "kv-slots", required_argument, 0, O_KV_SLOTS },
        { "kv-type", required_argument, 0, O_KV_TYPE }, { "n-keep", required_argument, 0, O_KEEP },
        { "n-discard", required_argument, 0, O_DISCARD }, { "kv-eviction", required_argument, 0, O_EVICTION },
        { "session-ttl", required_argument, 0, O_TTL }, { "draft-model", required_argument, 0, O_DRAFT },
        { "draft-quant", required_argument, 0, O_DRAFT_QUANT }, { "spec", required_argument, 0, O_SPEC },
        { "spec-max-draft", required_argument, 0, O_SPEC_MAX }, { "metrics-host", required_argument, 0, O_METRICS_HOST },
        { "http-port", required_argument, 0, O_HTTP_PORT },
        { 0, 0, 0, 0 },
    };
    const char *env_model = getenv("INFERNODE_MODEL");
    *a = (serve_args){ .model_path = env_model && *env_model ? env_model : INFERNODE_DEFAULT_MODEL, .host = "127.0.0.1",
                       .port = 50051, .metrics_port = 9090, .http_port = 8080, .max_seqs = 16, .max_queue = 256, .step_tokens = 256,
                       .prefill_chunk = 128, .max_message_mib = 4, .drain_seconds = 30, .n_keep = 4, .n_discard = -1,
                       .kv_type = IFN_DEFAULT_KV_TYPE, .session_ttl = 600, .spec = -1, .spec_max_draft = 8 };
    const char *token_file = NULL;
    optind = 1;
    opterr = 0;
    int c, li;
    while ((li = -1, c = getopt_long(argc, argv, "m:t:h", opts, &li)) != -1) {
        bool ok = true;
        const char *expect = "a valid value"; /* what a refused value should have been */
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 't': ok = cli_set_threads(optarg); expect = CLI_THREADS_EXPECT; break;
        case 'h':
            if (report) serve_usage(stdout);
            return -1;
        case O_QUANT: a->quant = optarg; break;
        case O_HOST: a->host = optarg; break;
        case O_METRICS_HOST: a->metrics_host = optarg; break;
        case O_PORT: ok = cli_parse_int(optarg, 0, 65535, &a->port); expect = "an integer in 0..65535"; break;
        case O_METRICS:
            ok = cli_parse_int(optarg, -1, 65535, &a->metrics_port);
            expect = "an integer in -1..65535";
            break;
        case O_HTTP_PORT:
            ok = cli_parse_int(optarg, -1, 65535, &a->http_port);
            expect = "an integer in -1..65535";
            break;
        case O_CTX: ok = cli_parse_int(optarg, 1, 1 << 20, &a->ctx_size); expect = "an integer in 1..1048576"; break;
        case O_SEQS: ok = cli_parse_int(optarg, 1, 1024, &a->max_seqs); expect = "an integer in 1..1024"; break;
        case O_QUEUE: ok = cli_parse_int(optarg, 0, 1 << 20, &a->max_queue); expect = "an integer in 0..1048576"; break;
        case O_STEP: ok = cli_parse_int(optarg, 1, 1 << 16, &a->step_tokens); expect = "an integer in 1..65536"; break;
        case O_CHUNK:
            ok = cli_parse_int(optarg, 1, 1 << 16, &a->prefill_chunk);
            expect = "an integer in 1..65536";
            break;
        case O_MSG: ok = cli_parse_int(optarg, 1, 1024, &a->max_message_mib); expect = "an integer in 1..1024"; break;
        case O_CERT: a->tls_cert = optarg; break;
        case O_KEY: a->tls_key = optarg; break;
        case O_TOKEN: token_file = optarg; break;
        case O_DRAIN: ok = parse_seconds(optarg, &a->drain_seconds); expect = "a number of seconds >= 0"; break;
        case O_TTL:
            ok = parse_seconds(optarg, &a->session_ttl) && a->session_ttl > 0;
            expect = "a number of seconds > 0";
            break;
        case O_KV_SLOTS: ok = cli_parse_int(optarg, 1, 1 << 16, &a->kv_slots); expect = "an integer in 1..65536"; break;
        case O_KEEP: ok = cli_parse_int(optarg, 0, 1 << 20, &a->n_keep); expect = "an integer in 0..1048576"; break;
        case O_DISCARD:
            ok = cli_parse_int(optarg, -1, 1 << 20, &a->n_discard);
            expect = "an integer in -1..1048576";
            break;
        case O_KV_TYPE: ok = cli_parse_kv_type(optarg, &a->kv_type); expect = "f16, bf16 or f32"; break;
        case O_DRAFT: a->draft_model = optarg; break;
        case O_DRAFT_QUANT: a->draft_quant = optarg; break;
        case O_SPEC:
            a->spec = strcmp(optarg, "off") == 0     ? SCHED_SPEC_OFF
                      : strcmp(optarg, "draft") == 0 ? SCHED_SPEC_DRAFT
                      : strcmp(optarg, "ngram") == 0 ? SCHED_SPEC_NGRAM
                                                     : -1;
            ok = (int)a->spec >= 0;
            expect = "off, draft or ngram";
            break;
        case O_SPEC_MAX:
            ok = cli_parse_int(optarg, 1, SPEC_MAX_DRAFT, &a->spec_max_draft);
            expect = "an integer in 1..16";
            break;
        case O_EVICTION:
            ok = strcmp(optarg, "shift-rope") == 0 || strcmp(optarg, "recompute") == 0;
            a->kv_eviction = optarg;
            expect = "shift-rope or recompute";
            break;
        default:
            if (report) fprintf(stderr, "infernode: error: serve: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (!ok) return report ? cli_bad_value(opts, li, c, optarg, expect) : CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        if (report) fprintf(stderr, "infernode: error: serve: unexpected argument '%s'\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if ((int)a->spec < 0) a->spec = a->draft_model ? SCHED_SPEC_DRAFT : SCHED_SPEC_OFF;
    if ((a->spec == SCHED_SPEC_DRAFT) != (a->draft_model != NULL)) {
        if (report) fprintf(stderr, "infernode: error: %s\n", a->draft_model ? "--draft-model is only for --spec draft"
                                                                               : "--spec draft needs --draft-model PATH");
        return CLI_EXIT_USAGE;
    }
    if (a->draft_quant && !a->draft_model) {
        if (report) fprintf(stderr, "infernode: error: --draft-quant needs --draft-model PATH\n");
        return CLI_EXIT_USAGE;
    }
    if (!a->kv_slots) a->kv_slots = a->max_seqs;
    if (a->kv_slots < a->max_seqs) {
        if (report) fprintf(stderr, "infernode: error: --kv-slots %d is fewer than --max-seqs %d: every running sequence "
                            "needs a KV cache\n", a->kv_slots, a->max_seqs);
        return CLI_EXIT_USAGE;
    }
    if (!a->tls_cert != !a->tls_key) {
        if (report) fprintf(stderr, "infernode: error: --tls-cert and --tls-key go together\n");
        return CLI_EXIT_USAGE;
    }
    if (token_file && secret_file_read_token(token_file, &a->auth_token) != IFN_OK) {
        if (report) fprintf(stderr, "infernode: error: --auth-token-file: %s\n", ifn_error_detail());
        ifn_error_clear();
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* Everything rank 0 runs beside its shard. */
typedef struct {
    metrics *met;
    metrics_http *met_http;
    http_api *http;
    health *hl;
    grpc_reflection *refl;
    service *sv;
    rpc_server *rpc;
    tokenizer *tok;
    scheduler *sch;
    comm *draft_comm;   /* rank 0 alone, for the draft model */
    engine *draft;
} coordinator;

static void coordinator_free(coordinator *co)
{
    /* health first (its watchers end), then the server, as health.h asks */
    if (co->hl) health_shutdown(co->hl);
    if (co->rpc) rpc_server_shutdown(co->rpc, 1.0);
    rpc_server_destroy(co->rpc);
    http_api_stop(co->http); /* before the scheduler its requests are in */
    scheduler_destroy(co->sch);
    engine_destroy(co->draft);
    comm_finalize(co->draft_comm);
    service_destroy(co->sv);
    health_destroy(co->hl);
    grpc_reflection_destroy(co->refl);
    tokenizer_destroy(co->tok);
    metrics_http_stop(co->met_http);
    metrics_destroy(co->met);
}

/* host as it goes before ":port": an IPv6 address in brackets ([::1]), as gRPC wants it. */
static void bracketed(const char *host, char out[300])
{
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, 300, "%s%.290s%s", v6 ? "[" : "", host, v6 ? "]" : "");
}

static ifn_status coordinator_start(coordinator *co, const serve_args *a)
{
    CHECK(metrics_create(&co->met));
    metrics_http_options mo = { .host = a->metrics_host ? a->metrics_host : a->host, .port = a->metrics_port,
                                .tls_cert_file = a->tls_cert, .tls_key_file = a->tls_key, .auth_token = a->auth_token };
    if (a->metrics_port >= 0) CHECK(metrics_http_start(co->met, &mo, &co->met_http));
    CHECK(service_create(co->met, &co->sv));
    CHECK(health_create(&co->hl));
    health_set(co->hl, "", false);
    health_set(co->hl, "infernode.v1.Inference", false);
    CHECK(grpc_reflection_create(ifn_descriptor_set, ifn_descriptor_set_len, &co->refl));
    enum { N_METHODS = SERVICE_N_METHODS + 2 + GRPC_REFLECTION_N_METHODS };
    rpc_method methods[N_METHODS];
    service_methods(co->sv, methods);
    health_methods(co->hl, methods + SERVICE_N_METHODS);
    grpc_reflection_methods(co->refl, methods + SERVICE_N_METHODS + 2);
    char host[300], addr[320];
    bracketed(a->host, host);
    snprintf(addr, sizeof addr, "%s:%d", host, a->port);
    rpc_server_options ro = { .addr = addr, .max_message_bytes = a->max_message_mib << 20, .tls_cert_file = a->tls_cert,
                              .tls_key_file = a->tls_key, .auth_token = a->auth_token,
                              .on_status = service_count_status, .status_user = co->sv };
    CHECK(rpc_server_create(&ro, methods, N_METHODS, &co->rpc));
    CHECK(rpc_server_start(co->rpc));
    http_api_options ho = { .host = a->host, .port = a->http_port, .tls_cert_file = a->tls_cert,
                            .tls_key_file = a->tls_key, .auth_token = a->auth_token,
                            .max_body_bytes = (size_t)a->max_message_mib << 20, .met = co->met };
    if (a->http_port >= 0) CHECK(http_api_start(&ho, &co->http));
    char metrics_host[300], metrics_where[340] = "metrics off", http_where[340] = "http off";
    bracketed(mo.host, metrics_host);
    if (a->metrics_port >= 0)
        snprintf(metrics_where, sizeof metrics_where, "metrics on %s:%d", metrics_host, metrics_http_port(co->met_http));
    if (co->http) snprintf(http_where, sizeof http_where, "http on %s:%d", host, http_api_port(co->http));
    fprintf(stderr, "infernode: listening on %s:%d (%s%s), %s, %s; loading the model\n", host, rpc_server_port(co->rpc),
            a->tls_cert ? "tls" : "plaintext", a->auth_token ? ", bearer token" : "", http_where, metrics_where);
    return IFN_OK;
}

/* A lost rank (on the watch thread): no step can finish any more. Health goes NOT_SERVING, the
 * calls end with UNAVAILABLE, and their statuses get 0.2 s to leave (a status is one small
 * frame on an open connection) before the exit, which mpirun turns into the job's end. */
static void on_rank_lost(void *user, int rank, const char *host, const char *what)
{
    coordinator *co = user;
    char msg[512];
    snprintf(msg, sizeof msg, "rank %d (%s) %s: the model cannot run; this server is stopping", rank, host, what);
    if (co->hl) {
        health_set(co->hl, "", false);
        health_set(co->hl, "infernode.v1.Inference", false);
    }
    if (co->rpc) rpc_server_fail_all(co->rpc, GRPC_STATUS_UNAVAILABLE, msg);
    struct timespec grace = { .tv_nsec = 200 * 1000 * 1000 };
    nanosleep(&grace, NULL);
}

/* Rank 0 after loading: serve until a stop signal, then drain. */
static int coordinate(coordinator *co, comm *c, engine *eng, const serve_args *a)
{
    ifn_status s = model_tokenizer_load(engine_model_file(eng), &co->tok);
    if (s == IFN_ERR_NOT_FOUND) {
        ifn_error_clear();
        fprintf(stderr, "infernode: %s has no tokenizer: requests must send token ids\n", a->model_path);
    } else if (s != IFN_OK) {
        return cli_fail(NULL);
    }
    if (a->spec == SCHED_SPEC_DRAFT) {
        engine_params dp = { .model_path = a->draft_model, .quant = a->draft_quant, .ctx_size = engine_ctx_size(eng),
                             .n_batch = engine_n_batch(eng), .n_slots = engine_n_slots(eng), .kv_type = a->kv_type };
        char what[64 + 4096];
        snprintf(what, sizeof what, "--draft-model %s", a->draft_model);
        if (comm_create_self(c, &co->draft_comm) != IFN_OK || engine_create(co->draft_comm, &dp, &co->draft) != IFN_OK ||
            spec_check_vocab(eng, co->tok, co->draft) != IFN_OK)
            return cli_fail(what);
        fprintf(stderr, "infernode: draft %s\n", engine_describe(co->draft));
    }
    /* Learned positions live in the residual stream, not in the keys: nothing to re-rotate. */
    const model_config *cfg = engine_config(eng);
    const bool rope = cfg->pos == MODEL_POS_ROPE;
    const bool recompute = a->kv_eviction ? strcmp(a->kv_eviction, "recompute") == 0 : !rope;
    if (!rope && !recompute) {
        fprintf(stderr, "infernode: error: --kv-eviction shift-rope: %s is a %s model with learned positions, not RoPE, "
                "so its kept keys cannot be shifted; use --kv-eviction recompute (its default)\n", a->model_path,
                cfg->arch);
        return CLI_EXIT_USAGE;
    }
    int step_tokens = a->step_tokens < engine_n_batch(eng) ? a->step_tokens : engine_n_batch(eng);
    sched_limits lim = { .max_queue = a->max_queue, .max_step_tokens = step_tokens, .prefill_chunk = a->prefill_chunk,
                         .max_running = a->max_seqs, .kv_recompute = recompute, .session_ttl = a->session_ttl,
                         .spec = { .mode = a->spec, .draft = co->draft, .max_draft = a->spec_max_draft } };
    if (scheduler_create(eng, co->tok, co->met, &lim, &co->sch) != IFN_OK) return cli_fail(NULL);
    if (a->spec != SCHED_SPEC_OFF) {
        char plan[1024];
        scheduler_spec_describe(co->sch, plan, sizeof plan);
        fprintf(stderr, "infernode: speculation %s\n", plan);
    }
    service_kv kv = { .n_keep = a->n_keep, .n_discard = a->n_discard, .recompute = recompute,
                      .kv_type = a->kv_type, .session_ttl = a->session_ttl };
    service_spec spec = { .mode = a->spec, .draft_model = a->draft_model,
                          .draft_quant = co->draft ? engine_quant_desc(co->draft) : NULL, .max_draft = a->spec_max_draft };
    service_ready(co->sv, eng, co->tok, co->sch, comm_world(c), &kv, &spec);
    if (co->http && http_api_ready(co->http, eng, co->tok, co->sch, &kv, &spec) != IFN_OK) return cli_fail("http");
    signal_phase = PHASE_SERVING;
    health_set(co->hl, "", true);
    health_set(co->hl, "infernode.v1.Inference", true);
    fprintf(stderr, "infernode: serving %s: %d sequences at once, %d KV slots of %d positions (%s, %s eviction), %d "
            "tokens per step, speculation %s\n", a->model_path, a->max_seqs, engine_n_slots(eng), engine_ctx_size(eng),
            ifn_kv_type_name(a->kv_type), recompute ? "recompute" : "shift-rope", step_tokens,
            a->spec == SCHED_SPEC_DRAFT ? "with the draft model" : a->spec == SCHED_SPEC_NGRAM ? "by prompt lookup" : "off");

    while (!stop_signal)
        if (scheduler_step(co->sch, 0.05) != IFN_OK) return cli_fail("forward step");
    fprintf(stderr, "infernode: signal %d: draining %d requests for at most %.0f s\n", (int)stop_signal,
            scheduler_pending(co->sch), a->drain_seconds);
    service_drain(co->sv);
    http_api_drain(co->http);
    health_set(co->hl, "", false);
    health_set(co->hl, "infernode.v1.Inference", false);
    double end = ifn_seconds() + a->drain_seconds;
    while (scheduler_pending(co->sch) > 0 && ifn_seconds() < end)
        if (scheduler_step(co->sch, 0.05) != IFN_OK) return cli_fail("forward step");
    if (scheduler_pending(co->sch) > 0)
        fprintf(stderr, "infernode: drain time over: ending %d requests\n", scheduler_pending(co->sch));
    scheduler_abort_all(co->sch);
    return 0;
}

int cli_serve(comm *c, int argc, char **argv)
{
    serve_args a;
    bool root = comm_rank(c) == 0;
    int rc = parse_args(argc, argv, &a, root);
    if (rc) return rc < 0 ? 0 : rc;

    /* Rank 0's server comes up first; if it cannot (a port in use, a bad certificate), no
     * rank loads. */
    coordinator co = { 0 };
    int started = !root || coordinator_start(&co, &a) == IFN_OK;
    if (root && started) comm_on_peer_lost(c, on_rank_lost, &co);
    if (root && !started) cli_fail(NULL);
    if (comm_allreduce_min_int(c, &started) != IFN_OK || !started) {
        comm_on_peer_lost(c, NULL, NULL);
        coordinator_free(&co);
        secret_free(a.auth_token);
        return CLI_EXIT_ERROR;
    }
    engine_params ep = { .model_path = a.model_path, .quant = a.quant, .ctx_size = a.ctx_size, .n_batch = a.step_tokens,
                         .n_slots = a.kv_slots, .kv_type = a.kv_type };
    engine *eng;
    if (engine_create(c, &ep, &eng) != IFN_OK) {
        if (*ifn_error_detail()) cli_fail(NULL);
        comm_on_peer_lost(c, NULL, NULL);
        coordinator_free(&co);
        secret_free(a.auth_token);
        return CLI_EXIT_ERROR;
    }
    if (!root) {
        signal_phase = PHASE_FOLLOWING;
        rc = engine_serve(eng) == IFN_OK ? 0 : cli_fail(NULL);
    } else {
        fprintf(stderr, "infernode: %s\n", engine_describe(eng));
        rc = coordinate(&co, c, eng, &a);
        if (rc != 0 && co.sch) scheduler_abort_all(co.sch);
        if (engine_stop(eng) != IFN_OK && rc == 0) rc = cli_fail(NULL);
        comm_on_peer_lost(c, NULL, NULL);
        coordinator_free(&co);
        if (rc == 0) fprintf(stderr, "infernode: stopped\n");
    }
    engine_destroy(eng);
    secret_free(a.auth_token);
    return rc;
}
