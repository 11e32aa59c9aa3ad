/* infernode eval: perplexity, KL against a reference, and HumanEval-style pass@k. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval.h"

static void eval_usage(FILE *out)
{
    fputs("usage: infernode eval MODE [options]\n"
          "\n"
          "modes:\n"
          "  ppl        perplexity of a model over text files or token ids, in sliding windows\n"
          "  kl         KL(reference || model) per token, top-1 agreement and both perplexities\n"
          "  humaneval  pass@k of completions of HumanEval-format tasks, each run sandboxed\n"
          "\n"
          "Run 'infernode eval MODE --help' for a mode's options.\n",
          out);
}

int eval_for_lines(char *text, size_t len, int (*fn)(void *arg, char *line, int no), void *arg)
{
    char *p = text, *end = text + len;
    for (int no = 1; p < end; no++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        *line_end = '\0';
        if (line_end > p && line_end[-1] == '\r') line_end[-1] = '\0';
        if (p[strspn(p, " \t")] != '\0') {
            int rc = fn(arg, p, no);
            if (rc) return rc;
        }
        p = line_end + 1;
    }
    return 0;
}

int cli_eval(comm *c, int argc, char **argv)
{
    const char *mode = argc >= 2 ? argv[1] : NULL;
    bool talk = comm_rank(c) == 0;
    if (mode && strcmp(mode, "ppl") == 0) return eval_text(c, argc - 1, argv + 1, false);
    if (mode && strcmp(mode, "kl") == 0) return eval_text(c, argc - 1, argv + 1, true);
    if (mode && strcmp(mode, "humaneval") == 0) return eval_humaneval(c, argc - 1, argv + 1);
    if (mode && (strcmp(mode, "--help") == 0 || strcmp(mode, "-h") == 0)) {
        if (talk) eval_usage(stdout);
        return 0;
    }
    if (talk) {
        if (mode) fprintf(stderr, "infernode: error: unknown eval mode '%s' (ppl, kl, humaneval)\n\n", mode);
        eval_usage(stderr);
    }
    return CLI_EXIT_USAGE;
}
