/* Encoding and decoding over a loaded vocabulary: special tokens are cut out of the text
 * first, then each stretch of plain text goes to the model's engine. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

#define MAX_ENCODE_BYTES (1 << 29)

int32_t tokenizer_vocab_size(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
bool tokenizer_adds_bos(const tokenizer *t) { return t->add_bos && t->bos >= 0; }

bool tokenizer_is_eog(const tokenizer *t, int32_t id)
{
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

int32_t tokenizer_token_id(const tokenizer *t, const char *text, size_t len)
{
    return tok_find(t, text, len);
}

size_t tokenizer_max_token_bytes(const tokenizer *t)
{
    /* Every byte of a piece may turn into a 3-byte U+FFFD in the streaming detokenizer. */
    return 3 * t->max_piece_len;
}

/* --- special tokens --- */

/* A stretch of the input: a token (id >= 0) or plain text (id < 0) at text[off..off+len). */
typedef struct {
    int32_t id;
    size_t off, len;
} tok_frag;

typedef struct {
    tok_frag *v;
    size_t n, cap;
} tok_frags;

static ifn_status frags_push(tok_frags *f, int32_t id, size_t off, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        tok_frag *v = realloc(f->v, cap * sizeof *v);
        if (!v) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (tok_frag){id, off, len};
    return IFN_OK;
}

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0 || m > n) return NULL;
    const char *end = hay + (n - m) + 1;
    for (const char *p = hay; p < end;) {
        p = memchr(p, needle[0], (size_t)(end - p));
        if (!p) return NULL;
        if (memcmp(p, needle, m) == 0) return p;
        p++;
    }
    return NULL;
}

static bool is_ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits the plain-text fragments of *frags around every occurrence of token id. */
static ifn_status split_on_token(const tokenizer *t, const char *text, int32_t id, tok_frags *frags,
                                 tok_frags *scratch)
{
    size_t slen;
    const char *s = tok_text(t, id, &slen);
    uint8_t attr = t->tokens[id].attr;
    scratch->n = 0;
    for (size_t i = 0; i < frags->n; i++) {
        tok_frag f = frags->v[i];
        if (f.id >= 0 || f.len < slen) {
            CHECK(frags_push(scratch, f.id, f.off, f.len));
            continue;
        }
        size_t pos = f.off, end = f.off + f.len;
        const char *m;
        while ((m = find_bytes(text + pos, end - pos, s, slen)) != NULL) {
            size_t at = (size_t)(m - text), left_end = at;
            if (attr & TOKEN_LSTRIP)
                while (left_end > pos && is_ascii_space(text[left_end - 1])) left_end--;
            if (left_end > pos) CHECK(frags_push(scratch, -1, pos, left_end - pos));
            CHECK(frags_push(scratch, id, at, slen));
            pos = at + slen;
            if (attr & TOKEN_RSTRIP)
                while (pos < end && is_ascii_space(text[pos])) pos++;
        }
        if (pos < end) CHECK(frags_push(scratch, -1, pos, end - pos));
    }
    tok_frags tmp = *frags;
    *frags = *scratch;
    *scratch = tmp;
    return IFN_OK;
}

/* Cuts the special tokens out of text, longest token first over the whole text (llama.cpp's
 * order). User-defined tokens are always cut; control and unknown ones only if asked. */
static ifn_status partition(const tokenizer *t, const char *text, size_t len, bool parse_special,
                            tok_frags *frags)
{
    tok_frags scratch = {0};
    ifn_status st = frags_push(frags, -1, 0, len);
    for (size_t k = 0; k < t->n_specials && st == IFN_OK; k++) {
        int32_t id = t->specials[k];
        if (!parse_special && t->tokens[id].type != TOKEN_USER_DEFINED) continue;
        st = split_on_token(t, text, id, frags, &scratch);
    }
    free(scratch.v);
    return st;
}

/* --- encoding --- */

/* One stretch of plain text through the model. */
static ifn_status encode_text(const tokenizer *t, bpe_work *w, const char *text, size_t len,
                              bool prefix, tok_ids *out)
{
    if (t->byte_level) {
        pretok_spans spans = {0};
        ifn_status st = pretokenize(t->pre, text, len, &spans);
        for (size_t i = 0; i < spans.n && st == IFN_OK; i++)
            st = bpe_encode_bytes(t, w, text + spans.v[i].off, spans.v[i].len, out);
        pretok_spans_free(&spans);
        return st;
    }

    /* Metaspace: optional "▁" in front, every space becomes "▁" (3 bytes). */
    static const char META[3] = {'\xE2', '\x96', '\x81'};
    if (len > (SIZE_MAX - 3) / 3) return ifn_error_set(IFN_ERR_RANGE, "tokenizer: text too long");
    char *buf = malloc(3 + 3 * len);
    if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for %zu bytes", len);
    size_t n = 0;
    if (prefix) {
        memcpy(buf, META, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, META, 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    ifn_status st = t->model == TOK_MODEL_SPM ? spm_encode(t, buf, n, out)
                                              : bpe_encode_chars(t, w, buf, n, out);
    free(buf);
    return st;
}

/* tokenizer_encode; space_prefix false: no "▁" prefix on the text at the start. */
static ifn_status encode(const tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                         bool space_prefix, int32_t **ids, size_t *n_ids)
{
    if (!t || !ids || !n_ids || (!text && len > 0))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    /* Symbols are indexed with int32 and "▁" triples a space: keep well clear of both. */
    if (len > MAX_ENCODE_BYTES)
        return ifn_error_set(IFN_ERR_RANGE, "tokenizer_encode: %zu bytes of text (at most %d)",
                             len, MAX_ENCODE_BYTES);
    tok_ids out = {0};
    tok_frags frags = {0};
    bpe_work w = {0};
    ifn_status st = IFN_OK;

    if (add_special && tokenizer_adds_bos(t)) CHECK_GOTO(tok_ids_push(&out, t->bos), st, fail);
    if (len > 0) CHECK_GOTO(partition(t, text, len, parse_special, &frags), st, fail);
    /* The "▁" prefix goes on the text at the start and, as llama.cpp and HF's Prepend
     * normalizer do, on text that follows a special token. */
    bool prev_special = true;
    for (size_t i = 0; i < frags.n; i++) {
        const tok_frag *f = &frags.v[i];
        if (f->id >= 0) {
            CHECK_GOTO(tok_ids_push(&out, f->id), st, fail);
            prev_special = true;
            continue;
        }
        bool prefix = t->add_space_prefix && (t->prefix_first_only ? f->off == 0 : prev_special) &&
                      (space_prefix || f->off > 0);
        CHECK_GOTO(encode_text(t, &w, text + f->off, f->len, prefix, &out), st, fail);
        prev_special = false;
    }
    if (add_special && t->add_eos && t->eos >= 0) CHECK_GOTO(tok_ids_push(&out, t->eos), st, fail);

    free(frags.v);
    bpe_work_free(&w);
    if (out.n == 0) {
        free(out.v);
        return IFN_OK;
    }
    *ids = out.v;
    *n_ids = out.n;
    return IFN_OK;

fail:
    free(frags.v);
    bpe_work_free(&w);
    free(out.v);
    return st;
}

ifn_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **ids, size_t *n_ids)
{
    return encode(t, text, len, add_special, parse_special, true, ids, n_ids);
}

ifn_status tokenizer_encode_continuation(const tokenizer *t, const char *text, size_t len, int32_t **ids,
                                         size_t *n_ids)
{
    return encode(t, text, len, false, false, false, ids, n_ids);
}

/* --- decoding --- */

static const char REPLACEMENT[3] = {'\xEF', '\xBF', '\xBD'}; /* U+FFFD */

void tok_render(const tokenizer *t, int32_t id, bool render_special, const char **p, size_t *n,
                bool *special)
{
    const tok_entry *e = &t->tokens[id];
    *special = false;
    switch (e->type) {
    case TOKEN_CONTROL:
        *special = true;
        *p = t->arena + e->text_off;
        *n = render_special ? e->text_len : 0;
        return;
    case TOKEN_UNKNOWN:
        *special = true;
        if (render_special) {
            *p = t->arena + e->text_off;
            *n = e->text_len;
        } else {
            *p = REPLACEMENT;
            *n = sizeof REPLACEMENT;
        }
        return;
    case TOKEN_UNUSED:
        *p = t->arena;
        *n = 0;
        return;
    default:
        *p = t->arena + e->piece_off;
        *n = e->piece_len;
        return;
    }
}

bool tok_strip_space(const tokenizer *t, bool *at_start, bool special, const char **p, size_t *n)
{
    if (!*at_start || *n == 0) return false;
    *at_start = false;
    if (special || !t->metaspace || !t->add_space_prefix || (*p)[0] != ' ') return false;
    (*p)++;
    (*n)--;
    return true;
}

ifn_status tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n_ids,
                            bool render_special, char **text, size_t *len)
{
    if (!t || !text || !len || (!ids && n_ids > 0))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "tokenizer_decode: NULL argument");
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return ifn_error_set(IFN_ERR_RANGE,
                                 "tokenizer_decode: ids[%zu] = %d is outside the vocabulary "
                                 "(%d tokens)", i, ids[i], t->n_vocab);
        const char *p;
        size_t n;
        bool special;
        tok_render(t, ids[i], render_special, &p, &n, &special);
        total += n;
    }
    char *out = malloc(total + 1);
    if (!out) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer_decode: out of memory");
    size_t k = 0;
    bool at_start = true;
    for (size_t i = 0; i < n_ids; i++) {
        const char *p;
        size_t n;
        bool special;
        tok_render(t, ids[i], render_special, &p, &n, &special);
        tok_strip_space(t, &at_start, special, &p, &n);
        if (n) memcpy(out + k, p, n);
        k += n;
    }
    out[k] = '\0';
    *text = out;
    *len = k;
    return IFN_OK;
}
