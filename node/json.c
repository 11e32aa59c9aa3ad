#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 512

typedef struct {
    const char *s, *end, *start;
    const char *what;
    int depth;
} parser;

static ifn_status fail(const parser *p, const char *msg)
{
    int line = 1, col = 1;
    for (const char *q = p->start; q < p->s; q++) {
        if (*q == '\n') { line++; col = 1; } else col++;
    }
    return ifn_error_set(IFN_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", p->what, line, col, msg);
}

static void skip_ws(parser *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static void free_value(json_value *v);

static ifn_status parse_value(parser *p, json_value *v);

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Parses a string starting at the opening quote. The unescaped text is never longer than the
 * escaped one, so one allocation of the raw length suffices. */
static ifn_status parse_string(parser *p, char **out, size_t *out_len)
{
    p->s++; /* opening quote */
    const char *q = p->s;
    while (q < p->end && *q != '"') {
        if (*q == '\\') q++;
        q++;
    }
    if (q >= p->end) return fail(p, "unterminated string");
    char *buf = malloc((size_t)(q - p->s) + 1);
    if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for a JSON string", p->what);
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) { free(buf); return fail(p, "control character in string"); }
        if (c != '\\') { buf[n++] = (char)c; p->s++; continue; }
        char e = p->s[1];
        p->s += 2;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            int hi = p->end - p->s >= 4 ? hex4(p->s) : -1;
            if (hi < 0) { free(buf); return fail(p, "bad \\u escape"); }
            p->s += 4;
            unsigned cp = (unsigned)hi;
            if (hi >= 0xd800 && hi <= 0xdbff && p->end - p->s >= 6 && p->s[0] == '\\' && p->s[1] == 'u') {
                int lo = hex4(p->s + 2);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + (((unsigned)hi - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
                    p->s += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd; /* lone surrogate */
            n += put_utf8(buf + n, cp);
            break;
        }
        default: free(buf); return fail(p, "bad escape in string");
        }
    }
    p->s++; /* closing quote */
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return IFN_OK;
}

static ifn_status parse_number(parser *p, json_value *v)
{
    const char *q = p->s;
    if (q < p->end && *q == '-') q++;
    if (q >= p->end || !(*q >= '0' && *q <= '9')) return fail(p, "bad number");
    while (q < p->end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-')) q++;
    char tmp[64];
    size_t len = (size_t)(q - p->s);
    if (len >= sizeof tmp) return fail(p, "number too long");
    memcpy(tmp, p->s, len);
    tmp[len] = '\0';
    char *endp;
    errno = 0;
    double d = strtod(tmp, &endp);
    if (endp != tmp + len) return fail(p, "bad number");
    v->kind = JSON_NUMBER;
    v->u.number = d;
    p->s = q;
    return IFN_OK;
}

static ifn_status parse_literal(parser *p, const char *lit, json_value *v)
{
    size_t n = strlen(lit);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, lit, n) != 0) return fail(p, "unexpected token");
    p->s += n;
    if (lit[0] == 'n') v->kind = JSON_NULL;
    else { v->kind = JSON_BOOL; v->u.boolean = lit[0] == 't'; }
    return IFN_OK;
}

/* Grows *items (of elem bytes each) so that index n fits. */
static ifn_status grow(parser *p, void **items, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap) return IFN_OK;
    size_t nc = *cap ? *cap * 2 : 8;
    void *ni = realloc(*items, nc * elem);
    if (!ni) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for JSON", p->what);
    *items = ni;
    *cap = nc;
    return IFN_OK;
}

static ifn_status parse_array(parser *p, json_value *v)
{
    p->s++;
    v->kind = JSON_ARRAY;
    v->u.array.items = NULL;
    v->u.array.n = 0;
    size_t cap = 0;
    skip_ws(p);
    if (p->s < p->end && *p->s == ']') { p->s++; return IFN_OK; }
    for (;;) {
        CHECK(grow(p, (void **)&v->u.array.items, v->u.array.n, &cap, sizeof(json_value)));
        json_value *item = &v->u.array.items[v->u.array.n];
        item->kind = JSON_NULL;
        ifn_status st = parse_value(p, item);
        v->u.array.n++;
        if (st != IFN_OK) return st;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == ']') { p->s++; return IFN_OK; }
        return fail(p, "expected ',' or ']' in array");
    }
}

static ifn_status parse_object(parser *p, json_value *v)
{
    p->s++;
    v->kind = JSON_OBJECT;
    v->u.object.members = NULL;
    v->u.object.n = 0;
    size_t cap = 0;
    skip_ws(p);
    if (p->s < p->end && *p->s == '}') { p->s++; return IFN_OK; }
    for (;;) {
        skip_ws(p);
        if (p->s >= p->end || *p->s != '"') return fail(p, "expected a string key in object");
        CHECK(grow(p, (void **)&v->u.object.members, v->u.object.n, &cap, sizeof(json_member)));
        json_member *m = &v->u.object.members[v->u.object.n];
        m->key = NULL;
        m->value.kind = JSON_NULL;
        CHECK(parse_string(p, &m->key, &m->key_len));
        v->u.object.n++;
        skip_ws(p);
        if (p->s >= p->end || *p->s != ':') return fail(p, "expected ':' after object key");
        p->s++;
        CHECK(parse_value(p, &m->value));
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == '}') { p->s++; return IFN_OK; }
        return fail(p, "expected ',' or '}' in object");
    }
}

static ifn_status parse_value(parser *p, json_value *v)
{
    skip_ws(p);
    if (p->s >= p->end) return fail(p, "unexpected end of input");
    if (++p->depth > JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    ifn_status st;
    switch (*p->s) {
    case '{': st = parse_object(p, v); break;
    case '[': st = parse_array(p, v); break;
    case '"':
        v->kind = JSON_STRING;
        v->u.string.ptr = NULL;
        st = parse_string(p, &v->u.string.ptr, &v->u.string.len);
        break;
    case 't': st = parse_literal(p, "true", v); break;
    case 'f': st = parse_literal(p, "false", v); break;
    case 'n': st = parse_literal(p, "null", v); break;
    default: st = parse_number(p, v); break;
    }
    p->depth--;
    return st;
}

static void free_value(json_value *v)
{
    switch (v->kind) {
    case JSON_STRING: free(v->u.string.ptr); break;
    case JSON_ARRAY:
        for (size_t i = 0; i < v->u.array.n; i++) free_value(&v->u.array.items[i]);
        free(v->u.array.items);
        break;
    case JSON_OBJECT:
        for (size_t i = 0; i < v->u.object.n; i++) {
            free(v->u.object.members[i].key);
            free_value(&v->u.object.members[i].value);
        }
        free(v->u.object.members);
        break;
    default: break;
    }
}

ifn_status json_parse(const char *text, size_t len, const char *what, json_value **out)
{
    *out = NULL;
    json_value *v = calloc(1, sizeof *v);
    if (!v) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for JSON", what);
    parser p = { .s = text, .end = text + len, .start = text, .what = what, .depth = 0 };
    ifn_status st = parse_value(&p, v);
    if (st == IFN_OK) {
        skip_ws(&p);
        if (p.s != p.end) st = fail(&p, "trailing characters after the value");
    }
    if (st != IFN_OK) {
        json_free(v);
        return st;
    }
    *out = v;
    return IFN_OK;
}

ifn_status json_parse_file(const char *path, json_value **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ifn_error_set(IFN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    ifn_status st = IFN_OK;
    for (;;) {
        if (cap - len < 65536) {
            size_t nc = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, nc);
            if (!nb) { st = ifn_error_set(IFN_ERR_NOMEM, "%s: no memory", path); break; }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp)) st = ifn_error_set(IFN_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(fp);
    if (st == IFN_OK) st = json_parse(buf, len, path, out);
    free(buf);
    return st;
}

void json_free(json_value *v)
{
    if (!v) return;
    free_value(v);
    free(v);
}

const json_value *json_get(const json_value *v, const char *key)
{
    if (!v || v->kind != JSON_OBJECT) return NULL;
    size_t len = strlen(key);
    for (size_t i = v->u.object.n; i-- > 0;) {
        const json_member *m = &v->u.object.members[i];
        if (m->key_len == len && memcmp(m->key, key, len) == 0) return &m->value;
    }
    return NULL;
}

const char *json_get_string(const json_value *v, const char *key)
{
    const json_value *m = json_get(v, key);
    return m && m->kind == JSON_STRING ? m->u.string.ptr : NULL;
}

const char *json_kind_name(json_kind k)
{
    switch (k) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "bool";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

bool json_integer(const json_value *v, int64_t min, int64_t max, int64_t *out)
{
    if (!v || v->kind != JSON_NUMBER) return false;
    double d = v->u.number;
    /* -2^63 and 2^63 are exact doubles: [-2^63, 2^63) is what int64_t holds; NaN fails too */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false;
    int64_t i = (int64_t)d;
    if ((double)i != d || i < min || i > max) return false;
    *out = i;
    return true;
}
