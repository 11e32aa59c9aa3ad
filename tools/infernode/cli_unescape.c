/* The backslash escapes of printf '%b' (bash's builtin), for the text options of `infernode
 * client`, so that -p 'a\nb' means what printf '%b' 'a\nb' prints. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "unicode.h"

/* The value of up to max digits of base (8 or 16) at *p, advancing *p; -1 if none. */
static long take_digits(const char **p, int base, int max)
{
    long v = 0;
    int n = 0;
    for (; n < max; n++, (*p)++) {
        char c = **p;
        int d = c >= '0' && c <= '7' ? c - '0'
              : base == 16 && c >= '8' && c <= '9' ? c - '0'
              : base == 16 && c >= 'a' && c <= 'f' ? c - 'a' + 10
              : base == 16 && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) break;
        v = v * base + d;
    }
    return n ? v : -1;
}

/* Writes code point cp as UTF-8 at *o; false for a surrogate or beyond U+10FFFF. */
static bool put_utf8(char **o, long cp)
{
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    *o += unicode_utf8_encode((uint32_t)cp, (unsigned char *)*o);
    return true;
}

static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), len;
    uint32_t cp;
    for (size_t i = 0; i < n; i += len)
        if (unicode_utf8_classify(p + i, n - i, &cp, &len) != UTF8_VALID) return false;
    return true;
}

/* One escape after the backslash at *p (advanced past it) into *o. 1: done, 0: \c (the end),
 * -1: an error set. */
static int unescape_one(const char **p, char **o)
{
    static const char simple[] = "\\\\a\ab\be\033E\033f\fn\nr\rt\tv\v";
    const char c = **p;
    const char *hit = c ? strchr(simple, c) : NULL;
    if (hit && (hit - simple) % 2 == 0) {
        (*p)++;
        *(*o)++ = hit[1];
        return 1;
    }
    long v = -1;
    const char *start = *p;
    if (c == 'c') return 0;
    if (c == '0') {
        (*p)++;
        v = take_digits(p, 8, 3);
        if (v < 0) v = 0;
    } else if (c >= '1' && c <= '7') {
        v = take_digits(p, 8, 3);
    } else if (c == 'x' || c == 'u' || c == 'U') {
        (*p)++;
        v = take_digits(p, 16, c == 'x' ? 2 : c == 'u' ? 4 : 8);
        if (v < 0) { /* no digit: the backslash and the letter stay, as printf leaves them */
            *(*o)++ = '\\';
            *(*o)++ = c;
            return 1;
        }
        if (c != 'x') {
            if (put_utf8(o, v)) return 1;
            ifn_error_set(IFN_ERR_INVALID_ARG, "\\%.*s is not a Unicode scalar value", (int)(*p - start), start);
            return -1;
        }
    } else { /* not an escape: the backslash stays */
        *(*o)++ = '\\';
        return 1;
    }
    if ((v & 0xFF) == 0) {
        ifn_error_set(IFN_ERR_INVALID_ARG, "\\%.*s makes a NUL byte, which the text cannot hold", (int)(*p - start),
                      start);
        return -1;
    }
    *(*o)++ = (char)(v & 0xFF);
    return 1;
}

ifn_status cli_unescape(const char *s, char **out)
{
    *out = malloc(strlen(s) + 1); /* no escape is shorter than what it makes */
    if (!*out) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a %zu-byte option value", strlen(s));
    char *o = *out;
    for (const char *p = s; *p;) {
        if (*p != '\\' || !p[1]) {
            *o++ = *p++;
            continue;
        }
        p++;
        int r = unescape_one(&p, &o);
        if (r < 0) {
            free(*out);
            *out = NULL;
            return IFN_ERR_INVALID_ARG;
        }
        if (r == 0) break;
    }
    *o = '\0';
    if (!valid_utf8(*out) && valid_utf8(s)) {
        free(*out);
        *out = NULL;
        return ifn_error_set(IFN_ERR_INVALID_ARG, "its escapes make bytes that are not UTF-8");
    }
    return IFN_OK;
}
