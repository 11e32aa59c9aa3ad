/* Prints how a pre-tokenizer splits texts, for test_pretokenize.py.
 *
 *   pretok_dump gpt2|llama3|starcoder < texts
 *
 * The texts on stdin are separated by NUL bytes; for each, one line of piece lengths in
 * bytes, separated by spaces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pretokenize.h"
#include "tok_test_util.h"

int main(int argc, char **argv)
{
    pretok_kind kind;
    if (argc == 2 && strcmp(argv[1], "gpt2") == 0) kind = PRETOK_GPT2;
    else if (argc == 2 && strcmp(argv[1], "llama3") == 0) kind = PRETOK_LLAMA3;
    else if (argc == 2 && strcmp(argv[1], "starcoder") == 0) kind = PRETOK_STARCODER;
    else {
        fprintf(stderr, "usage: %s gpt2|llama3|starcoder < texts\n", argv[0]);
        return 2;
    }
    size_t len;
    char *buf = tt_read_file("/dev/stdin", &len);
    if (!buf) {
        fprintf(stderr, "cannot read stdin\n");
        return 1;
    }
    pretok_spans spans = {0};
    for (size_t start = 0; start < len;) {
        size_t end = start;
        while (end < len && buf[end] != '\0') end++;
        spans.n = 0;
        if (pretokenize(kind, buf + start, end - start, &spans) != IFN_OK) {
            fprintf(stderr, "pretokenize: %s\n", ifn_error_detail());
            return 1;
        }
        for (size_t i = 0; i < spans.n; i++) printf(i ? " %zu" : "%zu", spans.v[i].len);
        putchar('\n');
        start = end + 1;
    }
    pretok_spans_free(&spans);
    free(buf);
    return 0;
}
