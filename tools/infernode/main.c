/* infernode: a thin main over the libraries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "status.h"

static void usage(FILE *out)
{
    fputs("infernode - LLM inference on Xeon CPUs\n"
          "\n"
          "usage: infernode COMMAND [options]\n"
          "\n"
          "commands:\n"
          "  generate   generate text (or token ids) from a prompt with one model\n"
          "  serve      the gRPC service (under mpirun for tensor parallelism)\n"
          "  bench      benchmarks: 'bench FILE' (a model file, llama-bench's pp/tg tests),\n"
          "             'bench' (model level, random weights), 'bench kernels', 'bench serve',\n"
          "             'bench kv' and 'bench spec' (speculative decoding)\n"
          "  eval       measure a model: 'eval ppl' (perplexity), 'eval kl' (against a reference),\n"
          "             'eval humaneval' (pass@k of sandboxed completions)\n"
          "  client     call a running infernode server over gRPC (generate, stream, tokenize, ...)\n"
          "  quantize   write a quantized GGUF (round to nearest, GPTQ, SmoothQuant)\n"
          "\n"
          "Run 'infernode COMMAND --help' for a command's options.\n"
          "Models: GGUF files (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K,\n"
          "Q3_K, Q2_K, IQ4_NL), Hugging Face directories (config.json + safetensors,\n"
          "F32/F16/BF16) and llama2.c .bin checkpoints.\n"
          "Environment: OMP_NUM_THREADS sets the number of threads; under mpirun,\n"
          "INFERNODE_PEER_TIMEOUT the seconds of silence after which a rank or link counts as\n"
          "lost (default 5), INFERNODE_HEARTBEAT_PORT rank 0's port for the ranks' heartbeat\n"
          "connections (default: any free one).\n",
          out);
}

int cli_fail(const char *context)
{
    const char *detail = ifn_error_detail();
    if (context && *context) fprintf(stderr, "infernode: error: %s: %s\n", context, detail);
    else fprintf(stderr, "infernode: error: %s\n", detail);
    return CLI_EXIT_ERROR;
}

/* Runs a subcommand inside the ranks of an MPI launch (or alone). */
static int run_ranked(int (*cmd)(comm *, int, char **), int argc, char **argv)
{
    cli_default_threads();
    comm *c;
    if (comm_init(&argc, &argv, &c) != IFN_OK) {
        fprintf(stderr, "infernode: error (rank %d): %s\n", comm_launch_rank(), ifn_error_detail());
        return CLI_EXIT_ERROR;
    }
    /* INFERNODE_PEER_TIMEOUT: seconds of silence after which a rank or link is lost;
     * INFERNODE_HEARTBEAT_PORT: rank 0's heartbeat port during the start (firewalls). The
     * heartbeat goes over the network the ranks' MPI traffic uses (mpirun --mca
     * btl_tcp_if_include, which launch.sh --if / --btl-if set, reaches the ranks as this). */
    const char *timeout = getenv("INFERNODE_PEER_TIMEOUT"), *port = getenv("INFERNODE_HEARTBEAT_PORT");
    const char *ifaces = getenv("OMPI_MCA_btl_tcp_if_include");
    liveness_options lo = { .timeout = timeout ? atof(timeout) : 0, .port = port ? atoi(port) : 0,
                            .interfaces = ifaces ? ifaces : getenv("OMPI_MCA_oob_tcp_if_include") };
    if (comm_watch(c, &lo) != IFN_OK) {
        fprintf(stderr, "infernode: error (rank %d): %s\n", comm_rank(c), ifn_error_detail());
        comm_finalize(c);
        return CLI_EXIT_ERROR;
    }
    int rc = cmd(c, argc - 1, argv + 1);
    comm_finalize(c);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        puts("infernode " INFERNODE_VERSION);
        return 0;
    }
    /* The client talks to a server; it is no rank of a model, so it never initialises MPI. */
    if (strcmp(cmd, "client") == 0) return cli_client(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0) return run_ranked(cli_generate, argc, argv);
    if (strcmp(cmd, "serve") == 0) {
        cli_serve_signals();
        return run_ranked(cli_serve, argc, argv);
    }
    if (strcmp(cmd, "bench") == 0) return run_ranked(cli_bench, argc, argv);
    if (strcmp(cmd, "quantize") == 0) return run_ranked(cli_quantize, argc, argv);
    if (strcmp(cmd, "eval") == 0) return run_ranked(cli_eval, argc, argv);
    fprintf(stderr, "infernode: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
