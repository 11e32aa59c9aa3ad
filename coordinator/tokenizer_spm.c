/* SentencePiece-style BPE by scores (Llama 1/2).
 *
 * The text starts as one symbol per UTF-8 character. Every adjacent pair whose concatenation
 * is a token is a candidate, with that token's score. The best candidate (highest score, the
 * leftmost on ties) is merged, the candidates around it are renewed, and so on until none is
 * left. A candidate made stale by an earlier merge is recognised by its length no longer
 * matching its two symbols and dropped when it surfaces. Symbols whose text is not a token
 * (single characters the vocabulary lacks) fall back to <0xXX> byte tokens, or to unk, or are
 * dropped if the vocabulary has neither. */
#include <stdlib.h>

#include "tokenizer_internal.h"
#include "unicode.h"

typedef struct {
    int32_t left, right; /* symbol indices */
    float score;
    size_t size; /* bytes of the merged text when the candidate was made */
} spm_bigram;

typedef struct {
    const tokenizer *t;
    const char *text;
    size_t *off, *len;      /* [n_symbols]; len 0 once merged away */
    int32_t *prev, *next;   /* -1 at the ends */
    spm_bigram *heap;
    size_t heap_n, heap_cap;
} spm_state;

/* a comes out of the heap before b */
static bool bigram_before(const spm_bigram *a, const spm_bigram *b)
{
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static ifn_status heap_push(spm_state *s, spm_bigram b)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? 2 * s->heap_cap : 64;
        spm_bigram *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_before(&b, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = b;
    return IFN_OK;
}

static spm_bigram heap_pop(spm_state *s)
{
    spm_bigram top = s->heap[0];
    spm_bigram last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n) break;
        if (c + 1 < s->heap_n && bigram_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!bigram_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n > 0) s->heap[i] = last;
    return top;
}

static ifn_status try_bigram(spm_state *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return IFN_OK;
    /* Adjacent symbols are adjacent in the text, so their concatenation is a slice of it. */
    size_t size = s->len[left] + s->len[right];
    int32_t id = tok_find(s->t, s->text + s->off[left], size);
    /* Only normal pieces are made by merging, as in SentencePiece: plain text must never
     * turn into a control token such as "<s>", whatever pieces the vocabulary holds. */
    if (id < 0 || s->t->tokens[id].type != TOKEN_NORMAL) return IFN_OK;
    spm_bigram b = {left, right, s->t->tokens[id].score, size};
    return heap_push(s, b);
}

/* Appends the tokens of a symbol whose text is not in the vocabulary. */
static ifn_status push_fallback(const tokenizer *t, const char *s, size_t len, tok_ids *out)
{
    bool have_bytes = true;
    for (size_t i = 0; i < len; i++)
        if (t->byte_tokens[(unsigned char)s[i]] < 0) have_bytes = false;
    if (have_bytes) {
        for (size_t i = 0; i < len; i++) CHECK(tok_ids_push(out, t->byte_tokens[(unsigned char)s[i]]));
        return IFN_OK;
    }
    if (t->unk_fallback >= 0) return tok_ids_push(out, t->unk_fallback);
    return IFN_OK; /* nothing can stand for it: dropped (see tokenizer_encode) */
}

ifn_status spm_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out)
{
    if (len == 0) return IFN_OK;
    spm_state s = {.t = t, .text = text};
    s.off = malloc(len * sizeof *s.off);
    s.len = malloc(len * sizeof *s.len);
    s.prev = malloc(len * sizeof *s.prev);
    s.next = malloc(len * sizeof *s.next);
    ifn_status st = IFN_OK;
    if (!s.off || !s.len || !s.prev || !s.next) {
        st = ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for %zu bytes", len);
        goto cleanup;
    }

    int32_t n = 0;
    for (size_t off = 0; off < len; n++) {
        uint32_t cp;
        size_t l = unicode_utf8_next((const unsigned char *)text + off, len - off, &cp);
        s.off[n] = off;
        s.len[n] = l;
        s.prev[n] = n - 1;
        s.next[n] = n + 1;
        off += l;
    }
    s.next[n - 1] = -1;

    for (int32_t i = 1; i < n; i++) CHECK_GOTO(try_bigram(&s, i - 1, i), st, cleanup);

    while (s.heap_n > 0) {
        spm_bigram b = heap_pop(&s);
        if (s.len[b.left] == 0 || s.len[b.right] == 0 || s.len[b.left] + s.len[b.right] != b.size)
            continue;
        s.len[b.left] += s.len[b.right];
        s.len[b.right] = 0;
        s.next[b.left] = s.next[b.right];
        if (s.next[b.right] >= 0) s.prev[s.next[b.right]] = b.left;
        CHECK_GOTO(try_bigram(&s, s.prev[b.left], b.left), st, cleanup);
        CHECK_GOTO(try_bigram(&s, b.left, s.next[b.left]), st, cleanup);
    }

    for (int32_t i = 0; i >= 0; i = s.next[i]) {
        int32_t id = tok_find(t, text + s.off[i], s.len[i]);
        if (id >= 0 && t->tokens[id].type == TOKEN_NORMAL)
            CHECK_GOTO(tok_ids_push(out, id), st, cleanup);
        else
            CHECK_GOTO(push_fallback(t, text + s.off[i], s.len[i], out), st, cleanup);
    }

cleanup:
    free(s.off);
    free(s.len);
    free(s.prev);
    free(s.next);
    free(s.heap);
    return st;
}
