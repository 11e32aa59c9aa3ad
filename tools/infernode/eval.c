/* infernode eval: perplexity, KL against a reference, and HumanEval-style pass@k. */
#include <errno.h>
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

ifn_status eval_read_file(const char *path, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ifn_error_set(IFN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            size_t nc = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                fclose(fp);
                return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory to read it", path);
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    if (err) {
        free(buf);
        return ifn_error_set(IFN_ERR_IO, "%s: cannot read: %s", path, strerror(err));
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return IFN_OK;
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
