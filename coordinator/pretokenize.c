#include "pretokenize.h"

#include <stdint.h>
#include <stdlib.h>

#include "unicode.h"

/* One decoded character of the text. */
typedef struct {
    size_t off;    /* byte offset in the text */
    uint32_t cp;   /* code point, UNICODE_BAD for a stray byte */
    uint8_t flags; /* UNICODE_* */
} pt_char;

static bool is_l(const pt_char *c) { return (c->flags & UNICODE_LETTER) != 0; }
static bool is_n(const pt_char *c) { return (c->flags & UNICODE_NUMBER) != 0; }
static bool is_s(const pt_char *c) { return (c->flags & UNICODE_WHITESPACE) != 0; }
static bool is_crlf(const pt_char *c) { return c->cp == '\r' || c->cp == '\n'; }
/* [^\s\p{L}\p{N}] */
static bool is_other(const pt_char *c) { return !is_s(c) && !is_l(c) && !is_n(c); }

static uint32_t ascii_lower(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

/* 's|'t|'re|'ve|'m|'ll|'d at c[i] (c[i] is an apostrophe); returns the end or i if none. */
static size_t match_contraction(const pt_char *c, size_t i, size_t e, bool fold_case)
{
    if (i + 1 >= e) return i;
    uint32_t a = fold_case ? ascii_lower(c[i + 1].cp) : c[i + 1].cp;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= e) return i;
    uint32_t b = fold_case ? ascii_lower(c[i + 2].cp) : c[i + 2].cp;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
}

/* \s+(?!\S)|\s+ at c[i], a whitespace character. The lookahead makes a run of whitespace that
 * is followed by a non-space character give up its last character, which then starts the next
 * piece (so " world" keeps its space); a lone whitespace character before text stands alone. */
static size_t match_space_run(const pt_char *c, size_t i, size_t e)
{
    size_t j = i;
    while (j < e && is_s(&c[j])) j++;
    if (j == e) return e;
    return j - i >= 2 ? j - 1 : j;
}

/* One GPT-2 match starting at c[i] of the segment c[..e); returns its end (> i). */
static size_t match_gpt2(const pt_char *c, size_t i, size_t e)
{
    if (c[i].cp == '\'') {
        size_t end = match_contraction(c, i, e, false);
        if (end > i) return end;
    }
    /* " ?X+" for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]: the optional space only helps when the
     * character after it is of the class, since a space is none of them itself. */
    size_t k = c[i].cp == ' ' && i + 1 < e ? i + 1 : i;
    bool (*cls)(const pt_char *) = NULL;
    if (is_l(&c[k])) cls = is_l;
    else if (is_n(&c[k])) cls = is_n;
    else if (is_other(&c[k])) cls = is_other;
    if (cls) {
        size_t j = k + 1;
        while (j < e && cls(&c[j])) j++;
        return j;
    }
    return match_space_run(c, i, e);
}

/* One Llama-3 match starting at c[i] of the segment c[..e); returns its end (> i). */
static size_t match_llama3(const pt_char *c, size_t i, size_t e)
{
    if (c[i].cp == '\'') {
        size_t end = match_contraction(c, i, e, true);
        if (end > i) return end;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    size_t k = i;
    if (!is_l(&c[i]) && !is_n(&c[i]) && !is_crlf(&c[i]) && i + 1 < e && is_l(&c[i + 1])) k = i + 1;
    if (is_l(&c[k])) {
        size_t j = k + 1;
        while (j < e && is_l(&c[j])) j++;
        return j;
    }
    /* \p{N}{1,3} */
    if (is_n(&c[i])) {
        size_t j = i + 1;
        while (j < e && j < i + 3 && is_n(&c[j])) j++;
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    k = c[i].cp == ' ' && i + 1 < e ? i + 1 : i;
    if (is_other(&c[k])) {
        size_t j = k + 1;
        while (j < e && is_other(&c[j])) j++;
        while (j < e && is_crlf(&c[j])) j++;
        return j;
    }
    /* \s*[\r\n]+ : the greedy \s* backs off to the last line break of the whitespace run. */
    size_t j = i, last_break = e;
    while (j < e && is_s(&c[j])) {
        if (is_crlf(&c[j])) last_break = j;
        j++;
    }
    if (last_break != e) return last_break + 1;
    return match_space_run(c, i, e);
}

static ifn_status spans_push(pretok_spans *s, size_t off, size_t len)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        pretok_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return ifn_error_set(IFN_ERR_NOMEM, "pre-tokenizer: out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].off = off;
    s->v[s->n].len = len;
    s->n++;
    return IFN_OK;
}

/* Splits the characters c[b..e) with matcher m (NULL: one piece). c[e].off is valid. */
static ifn_status split_segment(const pt_char *c, size_t b, size_t e,
                                size_t (*m)(const pt_char *, size_t, size_t), pretok_spans *out)
{
    size_t i = b;
    while (i < e) {
        size_t j = m ? m(c, i, e) : e;
        CHECK(spans_push(out, c[i].off, c[j].off - c[i].off));
        i = j;
    }
    return IFN_OK;
}

ifn_status pretokenize(pretok_kind kind, const char *text, size_t len, pretok_spans *out)
{
    if (len == 0) return IFN_OK;
    if (kind == PRETOK_NONE) return spans_push(out, 0, len);

    const unsigned char *s = (const unsigned char *)text;
    pt_char *c = malloc((len + 1) * sizeof *c); /* at most one character per byte */
    if (!c) return ifn_error_set(IFN_ERR_NOMEM, "pre-tokenizer: out of memory for %zu bytes", len);
    size_t n = 0;
    for (size_t off = 0; off < len; n++) {
        uint32_t cp;
        size_t l = unicode_utf8_next(s + off, len - off, &cp);
        c[n].off = off;
        c[n].cp = cp;
        c[n].flags = cp == UNICODE_BAD ? UNICODE_OTHER : unicode_flags(cp);
        off += l;
    }
    c[n].off = len;
    c[n].cp = 0;
    c[n].flags = 0;

    size_t n_before = out->n;
    ifn_status st = IFN_OK;
    switch (kind) {
    case PRETOK_GPT2: st = split_segment(c, 0, n, match_gpt2, out); break;
    case PRETOK_LLAMA3: st = split_segment(c, 0, n, match_llama3, out); break;
    case PRETOK_STARCODER: {
        /* Digits are split off first; GPT-2 then sees each stretch between them as a whole
         * text (so the lookahead of \s+(?!\S) stops at a digit's boundary too). */
        size_t b = 0;
        for (size_t i = 0; i <= n && st == IFN_OK; i++) {
            if (i < n && !is_n(&c[i])) continue;
            st = split_segment(c, b, i, match_gpt2, out);
            if (st == IFN_OK && i < n) st = spans_push(out, c[i].off, c[i + 1].off - c[i].off);
            b = i + 1;
        }
        break;
    }
    case PRETOK_NONE: break;
    }
    free(c);
    if (st != IFN_OK) out->n = n_before;
    return st;
}

void pretok_spans_free(pretok_spans *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

const char *pretok_kind_name(pretok_kind kind)
{
    switch (kind) {
    case PRETOK_NONE: return "none";
    case PRETOK_GPT2: return "gpt-2";
    case PRETOK_LLAMA3: return "llama-3";
    case PRETOK_STARCODER: return "starcoder";
    }
    return "unknown";
}
