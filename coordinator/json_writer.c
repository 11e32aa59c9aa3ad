#include "json_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"

void json_writer_init(json_writer *w)
{
    *w = (json_writer){ 0 };
    w->first[0] = true;
}

void json_writer_free(json_writer *w)
{
    free(w->buf);
    json_writer_init(w);
}

ifn_status json_writer_take(json_writer *w, char **out, size_t *len)
{
    *out = NULL;
    if (w->failed || !w->buf) {
        json_writer_free(w);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for a JSON response");
    }
    *out = w->buf;
    if (len) *len = w->len;
    w->buf = NULL;
    json_writer_init(w);
    return IFN_OK;
}

static void put(json_writer *w, const char *s, size_t n)
{
    if (w->failed) return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n + 1) cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = true;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

/* The comma before an item or member that is not its container's first. */
static void separate(json_writer *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (!w->first[w->depth]) put(w, ",", 1);
    w->first[w->depth] = false;
}

static void open_container(json_writer *w, const char *c)
{
    separate(w);
    put(w, c, 1);
    if (w->depth + 1 >= JSON_WRITER_MAX_DEPTH) {
        w->failed = true; /* deeper than any response this project writes: a bug, reported as no memory */
        return;
    }
    w->first[++w->depth] = true;
}

static void close_container(json_writer *w, const char *c)
{
    put(w, c, 1);
    if (w->depth > 0) w->depth--;
}

void json_object_begin(json_writer *w) { open_container(w, "{"); }
void json_object_end(json_writer *w) { close_container(w, "}"); }
void json_array_begin(json_writer *w) { open_container(w, "["); }
void json_array_end(json_writer *w) { close_container(w, "]"); }

/* s[0..n), which is valid UTF-8, as the inside of a JSON string. */
static void put_escaped(json_writer *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(w, s + run, i - run);
        run = i + 1;
        char esc[7] = { '\\', 0 };
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default: memcpy(esc + 1, "u00", 3), esc[4] = hex[c >> 4], esc[5] = hex[c & 15]; break;
        }
        put(w, esc, strlen(esc));
    }
    put(w, s + run, n - run);
}

void json_string_n(json_writer *w, const char *s, size_t n)
{
    separate(w);
    put(w, "\"", 1);
    size_t used, need = unicode_utf8_scrub((const unsigned char *)s, n, 0, NULL, &used);
    if (need == n) {
        put_escaped(w, s, n); /* already valid: the common case, no copy */
    } else {
        char *clean = malloc(need + 1);
        if (!clean) w->failed = true;
        else put_escaped(w, clean, unicode_utf8_scrub((const unsigned char *)s, n, 0, clean, &used));
        free(clean);
    }
    put(w, "\"", 1);
}

void json_string(json_writer *w, const char *s) { json_string_n(w, s, strlen(s)); }

void json_key(json_writer *w, const char *key)
{
    json_string(w, key);
    put(w, ":", 1);
    w->after_key = true;
}

void json_int(json_writer *w, int64_t v)
{
    char b[24];
    separate(w);
    put(w, b, (size_t)snprintf(b, sizeof b, "%lld", (long long)v));
}

void json_float(json_writer *w, double v)
{
    if (!isfinite(v)) {
        json_null(w);
        return;
    }
    char b[32];
    separate(w);
    put(w, b, (size_t)snprintf(b, sizeof b, "%.9g", v));
}

void json_bool(json_writer *w, bool v)
{
    separate(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void json_null(json_writer *w)
{
    separate(w);
    put(w, "null", 4);
}

void json_kv_string(json_writer *w, const char *key, const char *s)
{
    json_key(w, key);
    json_string(w, s);
}

void json_kv_int(json_writer *w, const char *key, int64_t v)
{
    json_key(w, key);
    json_int(w, v);
}
