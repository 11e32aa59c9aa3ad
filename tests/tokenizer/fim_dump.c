/* Prints the fill-in-the-middle prompt ids that model_tokenizer_encode_fim builds, for
 * test_fim.py to compare with tests/reference/bpe_reference.py.
 *
 *   fim_dump VOCAB.gguf [--add-special] < PREFIX\0SUFFIX\0PREFIX\0SUFFIX...
 *
 * One line of ids per (prefix, suffix) pair. An error goes to stderr and the exit status is 1. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model_tokenizer.h"
#include "tokenizer.h"

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap) break;
        char *b = realloc(buf, cap *= 2);
        if (!b) free(buf);
        buf = b;
    }
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--add-special") != 0)) {
        fprintf(stderr, "usage: %s VOCAB.gguf [--add-special] < PREFIX\\0SUFFIX\\0...\n", argv[0]);
        return 2;
    }
    const bool add_special = argc == 3;
    gguf_file *f = NULL;
    tokenizer *tok = NULL;
    if (gguf_file_open(argv[1], &f) != IFN_OK || tokenizer_from_gguf(f, &tok) != IFN_OK) {
        fprintf(stderr, "error: %s: %s\n", argv[1], ifn_error_detail());
        gguf_file_close(f);
        return 1;
    }
    gguf_file_close(f);
    size_t len;
    char *in = read_stdin(&len);
    if (!in) {
        fprintf(stderr, "error: no memory for the input\n");
        tokenizer_destroy(tok);
        return 1;
    }
    /* Fields are separated by NUL: a record is the text up to the next NUL or the end. */
    int rc = 0;
    size_t pos = 0;
    while (rc == 0 && pos <= len) {
        const char *prefix = in + pos;
        const char *nul = memchr(prefix, '\0', len - pos);
        if (!nul) {
            fprintf(stderr, "error: a prefix without its suffix at byte %zu of the input\n", pos);
            rc = 1;
            break;
        }
        size_t prefix_len = (size_t)(nul - prefix);
        pos += prefix_len + 1;
        const char *suffix = in + pos;
        nul = memchr(suffix, '\0', len - pos);
        size_t suffix_len = nul ? (size_t)(nul - suffix) : len - pos;
        pos += suffix_len + 1;
        int32_t *ids = NULL;
        size_t n = 0;
        if (model_tokenizer_encode_fim(tok, prefix, prefix_len, suffix, suffix_len, add_special, &ids, &n) != IFN_OK) {
            fprintf(stderr, "error: %s\n", ifn_error_detail());
            rc = 1;
        }
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        if (rc == 0) putchar('\n');
        free(ids);
    }
    free(in);
    tokenizer_destroy(tok);
    return rc;
}
