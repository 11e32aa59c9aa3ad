/* The tokenizers the encode and decode harnesses run on: IFN_FUZZ_VOCABS lists files separated
 * by ':' (GGUF files with tokenizer.ggml.* keys, or tokenizer.json files), loaded once. */
#ifndef IFN_FUZZ_VOCABS_H
#define IFN_FUZZ_VOCABS_H

#include "fuzz_util.h"
#include "gguf.h"
#include "tokenizer.h"

#define FUZZ_MAX_VOCABS 8

typedef struct {
    tokenizer *tok[FUZZ_MAX_VOCABS];
    int n;
} fuzz_vocabs;

static inline tokenizer *fuzz_vocab_load(const char *path)
{
    size_t n = strlen(path);
    tokenizer *tok = NULL;
    ifn_status st;
    if (n > 5 && strcmp(path + n - 5, ".json") == 0) {
        st = tokenizer_from_json(path, NULL, &tok);
    } else {
        gguf_file *f = NULL;
        st = gguf_file_open(path, &f);
        if (st == IFN_OK) st = tokenizer_from_gguf(f, &tok);
        gguf_file_close(f);
    }
    if (st != IFN_OK) {
        fprintf(stderr, "fuzz: %s\n", ifn_error_detail());
        abort();
    }
    return tok;
}

/* Aborts when the list is empty or a file does not load: a harness without a tokenizer would
 * pass while testing nothing. */
static inline void fuzz_vocabs_load(fuzz_vocabs *v)
{
    const char *list = getenv("IFN_FUZZ_VOCABS");
    if (!list || !list[0]) {
        fprintf(stderr, "fuzz: set IFN_FUZZ_VOCABS to tokenizer files separated by ':'\n");
        abort();
    }
    char *copy = strdup(list), *save = NULL;
    FUZZ_ASSERT(copy);
    for (char *p = strtok_r(copy, ":", &save); p && v->n < FUZZ_MAX_VOCABS; p = strtok_r(NULL, ":", &save))
        v->tok[v->n++] = fuzz_vocab_load(p);
    free(copy);
    FUZZ_ASSERT(v->n > 0);
}

#endif
