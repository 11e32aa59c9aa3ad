/* Prints the fill-in-the-middle prompt ids that model_tokenizer_encode_fim builds, for
 * test_fim.py to compare with its references (tests/reference/bpe_reference.py,
 * tests/reference/code_llama_reference.py).
 *
 *   fim_dump VOCAB.gguf [--add-special] < PREFIX\0SUFFIX\0PREFIX\0SUFFIX...
 *       one line of ids per (prefix, suffix) pair
 *   fim_dump VOCAB.gguf --eog
 *       one line: the ids that end generation
 *   fim_dump VOCAB.gguf --middle < lines of "PROMPT IDS ; GENERATED IDS"
 *       per line, the text of the generated ids as the service streams it after that prompt
 *       (detok_stream_follow), each followed by a NUL
 *
 * An error goes to stderr and the exit status is 1. */
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

static int print_eog(const tokenizer *tok)
{
    bool first = true;
    for (int32_t id = 0; id < tokenizer_vocab_size(tok); id++)
        if (tokenizer_is_eog(tok, id)) {
            printf(first ? "%d" : " %d", id);
            first = false;
        }
    putchar('\n');
    return 0;
}

/* The ids of text, up to its end or a ';' (*end then points there, past any spaces); at
 * most cap. */
static size_t parse_ids(const char *text, int32_t *ids, size_t cap, const char **end)
{
    size_t n = 0;
    char *e;
    for (long id = strtol(text, &e, 10); e != text && n < cap; id = strtol(text, &e, 10)) {
        ids[n++] = (int32_t)id;
        text = e;
    }
    while (*text == ' ') text++;
    *end = text;
    return n;
}

/* The text of ids as a stream after prompt (detok_stream_follow), followed by a NUL. */
static ifn_status print_middle(const tokenizer *tok, const int32_t *prompt, size_t n_prompt, const int32_t *ids,
                               size_t n_ids)
{
    char buf[4096];
    size_t n;
    detok_stream *d = NULL;
    ifn_status st = detok_stream_create(tok, false, &d);
    if (st == IFN_OK) st = detok_stream_follow(d, prompt, n_prompt);
    for (size_t i = 0; i < n_ids && st == IFN_OK; i++) {
        st = detok_stream_push(d, ids[i], buf, sizeof buf, &n);
        if (st == IFN_OK) fwrite(buf, 1, n, stdout);
    }
    if (st == IFN_OK) st = detok_stream_finish(d, buf, sizeof buf, &n);
    if (st == IFN_OK) {
        fwrite(buf, 1, n, stdout);
        putchar('\0');
    }
    detok_stream_destroy(d);
    return st;
}

/* in: NUL-terminated lines "PROMPT IDS ; GENERATED IDS", each ending in a newline. */
static int print_middles(const tokenizer *tok, char *in)
{
    static int32_t prompt[4096], ids[4096];
    enum { CAP = sizeof prompt / sizeof prompt[0] };
    for (char *line = in, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        const char *rest;
        size_t n_prompt = parse_ids(line, prompt, CAP, &rest);
        if (*rest != ';') {
            fprintf(stderr, "error: a line without ';' between the prompt and the generated ids\n");
            return 1;
        }
        size_t n_ids = parse_ids(rest + 1, ids, CAP, &rest);
        if (print_middle(tok, prompt, n_prompt, ids, n_ids) != IFN_OK) {
            fprintf(stderr, "error: %s\n", ifn_error_detail());
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc == 3 ? argv[2] : "";
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(mode, "--add-special") != 0 && strcmp(mode, "--eog") != 0 &&
                                 strcmp(mode, "--middle") != 0)) {
        fprintf(stderr, "usage: %s VOCAB.gguf [--add-special | --eog | --middle] < INPUT\n", argv[0]);
        return 2;
    }
    const bool add_special = strcmp(mode, "--add-special") == 0;
    gguf_file *f = NULL;
    tokenizer *tok = NULL;
    if (gguf_file_open(argv[1], &f) != IFN_OK || tokenizer_from_gguf(f, &tok) != IFN_OK) {
        fprintf(stderr, "error: %s: %s\n", argv[1], ifn_error_detail());
        gguf_file_close(f);
        return 1;
    }
    gguf_file_close(f);
    if (strcmp(mode, "--eog") == 0) {
        int rc = print_eog(tok);
        tokenizer_destroy(tok);
        return rc;
    }
    size_t len;
    char *in = read_stdin(&len);
    if (!in) {
        fprintf(stderr, "error: no memory for the input\n");
        tokenizer_destroy(tok);
        return 1;
    }
    if (strcmp(mode, "--middle") == 0) {
        in[len] = '\0';
        int rc = print_middles(tok, in);
        free(in);
        tokenizer_destroy(tok);
        return rc;
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
