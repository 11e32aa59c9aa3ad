#include "secret_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void wipe_free(char *buf, size_t n)
{
    if (buf) explicit_bzero(buf, n);
    free(buf);
}

/* The whole file, at most max bytes, NUL-terminated (malloc'd), in *out and its length in *len. */
static ifn_status read_whole(const char *what, const char *path, size_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ifn_error_set(IFN_ERR_IO, "cannot open the %s file %s: %s", what, path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    ifn_status st = IFN_OK;
    while (buf && n <= max) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1) break;
        char *bigger = malloc(cap * 2); /* not realloc: the old block is wiped before it is freed */
        if (bigger) memcpy(bigger, buf, n);
        wipe_free(buf, cap);
        buf = bigger;
        cap *= 2;
    }
    if (!buf) st = ifn_error_set(IFN_ERR_NOMEM, "no memory to read the %s file %s", what, path);
    else if (ferror(f)) st = ifn_error_set(IFN_ERR_IO, "cannot read the %s file %s", what, path);
    else if (n > max) st = ifn_error_set(IFN_ERR_FORMAT, "the %s file %s is larger than %zu bytes", what, path, max);
    fclose(f);
    if (st != IFN_OK) {
        wipe_free(buf, cap);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return IFN_OK;
}

ifn_status secret_file_read_pem(const char *what, const char *path, char **out)
{
    char label[64];
    snprintf(label, sizeof label, "TLS %s", what);
    char *buf;
    size_t n;
    CHECK(read_whole(label, path, 1 << 20, &buf, &n));
    ifn_status st = IFN_OK;
    if (strlen(buf) != n)
        st = ifn_error_set(IFN_ERR_FORMAT, "the %s file %s has a NUL byte at offset %zu", label, path, strlen(buf));
    else if (!strstr(buf, "-----BEGIN "))
        st = ifn_error_set(IFN_ERR_FORMAT, "the %s file %s is not PEM (no -----BEGIN line)", label, path);
    if (st != IFN_OK) {
        wipe_free(buf, n);
        return st;
    }
    *out = buf;
    return IFN_OK;
}

static int token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~+/=", c);
}

/* Why buf[0..n) is not one token on one line, or NULL if it is. */
static const char *token_problem(const char *buf, size_t n, size_t *at)
{
    for (*at = 0; *at < n; (*at)++) {
        unsigned char c = (unsigned char)buf[*at];
        if (c == '\0') return "has a NUL byte";
        if (c == '\n' || c == '\r') return "has more than one line (or a line end inside the token)";
        if (c == ' ' || c == '\t') return "has a space or tab (a token is one word)";
        if (!token_char(c)) return "has a byte that a bearer token cannot hold (letters, digits and -._~+/= only)";
    }
    return NULL;
}

ifn_status secret_file_read_token(const char *path, char **out)
{
    *out = NULL;
    char *buf;
    size_t n;
    CHECK(read_whole("token", path, 1 << 20, &buf, &n));
    size_t len = n;
    if (len > 0 && buf[len - 1] == '\n') len--;
    if (len > 0 && buf[len - 1] == '\r' && len < n) len--;
    size_t at = 0;
    const char *why = len == 0 ? "is empty" : len > SECRET_TOKEN_MAX ? "holds more than 4096 bytes" : token_problem(buf, len, &at);
    if (why) {
        wipe_free(buf, n);
        if (len == 0 || len > SECRET_TOKEN_MAX) return ifn_error_set(IFN_ERR_FORMAT, "the token file %s %s", path, why);
        return ifn_error_set(IFN_ERR_FORMAT, "the token file %s %s (byte %zu)", path, why, at);
    }
    buf[len] = '\0';
    *out = buf;
    return IFN_OK;
}

void secret_free(char *s)
{
    if (s) explicit_bzero(s, strlen(s));
    free(s);
}
