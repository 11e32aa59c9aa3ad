/* Prints how the C tokenizer of a model encodes texts, for test_model_tokenizer.py.
 *
 *   tok_encode MODEL < texts
 *
 * MODEL is a GGUF file (its tokenizer.ggml.* metadata) or a Hugging Face directory (its
 * tokenizer.json and tokenizer_config.json). The texts on stdin are separated by NUL bytes.
 * For each text, one line: "ids:" and the ids with the model's special tokens added (BOS),
 * then "roundtrip: 1" if decoding the ids gives the text back byte for byte, else 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
        }
    }
    *len = n;
    return buf;
}

static ifn_status load(const char *path, tokenizer **t)
{
    size_t n = strlen(path);
    if (n > 5 && strcmp(path + n - 5, ".gguf") == 0) {
        gguf_file *f = NULL;
        CHECK(gguf_file_open(path, &f));
        ifn_status st = tokenizer_from_gguf(f, t);
        gguf_file_close(f);
        return st;
    }
    char json[4096], config[4096];
    snprintf(json, sizeof json, "%s/tokenizer.json", path);
    snprintf(config, sizeof config, "%s/tokenizer_config.json", path);
    return tokenizer_from_json(json, config, t);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL < texts\n", argv[0]);
        return 2;
    }
    tokenizer *t = NULL;
    if (load(argv[1], &t) != IFN_OK) {
        fprintf(stderr, "tok_encode: %s\n", ifn_error_detail());
        return 1;
    }
    size_t len;
    char *buf = read_stdin(&len);
    if (!buf) {
        fprintf(stderr, "tok_encode: cannot read stdin\n");
        tokenizer_destroy(t);
        return 1;
    }
    int rc = 0;
    for (size_t start = 0; start < len;) {
        size_t end = start;
        while (end < len && buf[end] != '\0') end++;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        char *text = NULL;
        size_t text_len = 0;
        if (tokenizer_encode(t, buf + start, end - start, true, false, &ids, &n_ids) != IFN_OK ||
            tokenizer_decode(t, ids, n_ids, false, &text, &text_len) != IFN_OK) {
            fprintf(stderr, "tok_encode: %s\n", ifn_error_detail());
            free(ids);
            rc = 1;
            break;
        }
        printf("ids:");
        for (size_t i = 0; i < n_ids; i++) printf(" %d", ids[i]);
        printf("\nroundtrip: %d\n",
               text_len == end - start && memcmp(text, buf + start, text_len) == 0);
        free(ids);
        free(text);
        start = end + 1;
    }
    free(buf);
    tokenizer_destroy(t);
    return rc;
}
