/* Helpers shared by the tokenizer tests: reading files, the ../shared skip rule, reporting. */
#ifndef IFN_TOK_TEST_UTIL_H
#define IFN_TOK_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "status.h"

#define SKIP_CODE 77

/* Tests that need ../shared skip when it is absent, except under CI=true where that fails. */
static inline int tt_missing_shared(const char *path)
{
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "FAIL: %s is missing (CI=true: the shared folder must be present)\n", path);
        return 1;
    }
    fprintf(stderr, "SKIP: %s is missing (the shared folder beside the project)\n", path);
    return SKIP_CODE;
}

static inline int tt_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Reads a whole file; NULL on failure. *len excludes the NUL added at the end. */
static inline char *tt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *b = realloc(buf, cap + 1);
        if (!b) {
            free(buf);
            buf = NULL;
        } else {
            buf = b;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Prints bytes with C escapes for anything that is not printable ASCII. */
static inline void tt_print_escaped(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", out);
        else if (c == '\t') fputs("\\t", out);
        else if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20 || c >= 0x7F) fprintf(out, "\\x%02X", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

static inline void tt_print_ids(FILE *out, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) fprintf(out, " %d", ids[i]);
}

static int tt_failures __attribute__((unused));

#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            tt_failures++;                                                                    \
            fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

#define EXPECT_OK(expr)                                                                       \
    do {                                                                                      \
        ifn_status expect_st_ = (expr);                                                       \
        EXPECT(expect_st_ == IFN_OK, "%s: %s", ifn_status_str(expect_st_), ifn_error_detail()); \
        ifn_error_clear();                                                                    \
    } while (0)

#endif
