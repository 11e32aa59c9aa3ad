/* BPE by merge rank (GPT-2 and Hugging Face's "BPE" model).
 *
 * A word starts as one token per byte (byte-level) or per character (metaspace, with byte
 * fallback). Every adjacent pair listed in the merges is a candidate with the pair's rank;
 * the lowest rank (the leftmost on ties) is merged into the pair's result token, the
 * candidates around it are renewed, and so on until no listed pair is left. A candidate made
 * stale by an earlier merge no longer sees its two tokens side by side and is dropped when it
 * surfaces. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "unicode.h"

struct bpe_candidate {
    int32_t rank;
    int32_t left, right;         /* symbol indices */
    int32_t left_id, right_id;   /* the tokens there when the candidate was made */
    int32_t result;
};

static bool candidate_before(const bpe_candidate *a, const bpe_candidate *b)
{
    if (a->rank != b->rank) return a->rank < b->rank;
    return a->left < b->left;
}

static ifn_status heap_push(bpe_work *w, bpe_candidate c)
{
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? 2 * w->heap_cap : 64;
        bpe_candidate *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!candidate_before(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
    return IFN_OK;
}

static bpe_candidate heap_pop(bpe_work *w)
{
    bpe_candidate top = w->heap[0];
    bpe_candidate last = w->heap[--w->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->heap_n) break;
        if (c + 1 < w->heap_n && candidate_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!candidate_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->heap_n > 0) w->heap[i] = last;
    return top;
}

static ifn_status work_reserve(bpe_work *w, size_t n)
{
    if (n <= w->cap) return IFN_OK;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *ids = realloc(w->ids, cap * sizeof *ids);
    if (ids) w->ids = ids;
    int32_t *prev = realloc(w->prev, cap * sizeof *prev);
    if (prev) w->prev = prev;
    int32_t *next = realloc(w->next, cap * sizeof *next);
    if (next) w->next = next;
    if (!ids || !prev || !next) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
    w->cap = cap;
    return IFN_OK;
}

void bpe_work_free(bpe_work *w)
{
    free(w->ids);
    free(w->prev);
    free(w->next);
    free(w->heap);
    free(w->mapped);
    memset(w, 0, sizeof *w);
}

static ifn_status try_pair(const tokenizer *t, bpe_work *w, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return IFN_OK;
    int32_t result;
    int32_t rank = tok_merge_find(t, w->ids[left], w->ids[right], &result);
    if (rank < 0) return IFN_OK;
    bpe_candidate c = {rank, left, right, w->ids[left], w->ids[right], result};
    return heap_push(w, c);
}

/* Merges the n symbols in w->ids and appends what is left to out. */
static ifn_status merge_and_emit(const tokenizer *t, bpe_work *w, int32_t n, tok_ids *out)
{
    if (n == 0) return IFN_OK;
    for (int32_t i = 0; i < n; i++) {
        w->prev[i] = i - 1;
        w->next[i] = i + 1;
    }
    w->next[n - 1] = -1;
    w->heap_n = 0;
    for (int32_t i = 1; i < n; i++) CHECK(try_pair(t, w, i - 1, i));
    while (w->heap_n > 0) {
        bpe_candidate c = heap_pop(w);
        if (w->ids[c.left] != c.left_id || w->ids[c.right] != c.right_id ||
            w->next[c.left] != c.right)
            continue;
        w->ids[c.left] = c.result;
        w->ids[c.right] = -1;
        w->next[c.left] = w->next[c.right];
        if (w->next[c.right] >= 0) w->prev[w->next[c.right]] = c.left;
        CHECK(try_pair(t, w, w->prev[c.left], c.left));
        CHECK(try_pair(t, w, c.left, w->next[c.left]));
    }
    for (int32_t i = 0; i >= 0; i = w->next[i]) CHECK(tok_ids_push(out, w->ids[i]));
    return IFN_OK;
}

ifn_status bpe_encode_bytes(const tokenizer *t, bpe_work *w, const char *word, size_t len,
                            tok_ids *out)
{
    if (len == 0) return IFN_OK;
    if (len > INT32_MAX) return ifn_error_set(IFN_ERR_RANGE, "tokenizer: word of %zu bytes", len);
    if (t->ignore_merges) {
        /* Each byte becomes a stand-in character of at most 2 UTF-8 bytes. */
        if (2 * len > w->mapped_cap) {
            char *m = realloc(w->mapped, 2 * len);
            if (!m) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
            w->mapped = m;
            w->mapped_cap = 2 * len;
        }
        size_t n = 0;
        for (size_t i = 0; i < len; i++)
            n += unicode_utf8_encode(unicode_byte_to_cp((uint8_t)word[i]),
                                     (unsigned char *)w->mapped + n);
        int32_t id = tok_find(t, w->mapped, n);
        if (id >= 0) return tok_ids_push(out, id);
    }
    CHECK(work_reserve(w, len));
    int32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        /* Vocabularies trained on text may lack bytes that valid UTF-8 never or hardly uses
         * (StarCoder has no 0xC0, 0xC1, 0xF1, 0xF5..0xFF). Such a byte becomes the unknown
         * token if there is a real one, else it is dropped, as llama.cpp does. */
        int32_t id = t->byte_tokens[(unsigned char)word[i]];
        if (id < 0) id = t->unk_fallback;
        if (id >= 0) w->ids[n++] = id;
    }
    return merge_and_emit(t, w, n, out);
}

ifn_status bpe_encode_chars(const tokenizer *t, bpe_work *w, const char *text, size_t len,
                            tok_ids *out)
{
    if (len == 0) return IFN_OK;
    if (len > INT32_MAX) return ifn_error_set(IFN_ERR_RANGE, "tokenizer: text of %zu bytes", len);
    if (t->ignore_merges) {
        int32_t id = tok_find(t, text, len);
        if (id >= 0) return tok_ids_push(out, id);
    }
    CHECK(work_reserve(w, len)); /* at most one symbol per byte */
    int32_t n = 0;
    bool prev_unk = false;
    for (size_t off = 0; off < len;) {
        uint32_t cp;
        size_t l = unicode_utf8_next((const unsigned char *)text + off, len - off, &cp);
        int32_t id = tok_find(t, text + off, l);
        if (id >= 0) {
            w->ids[n++] = id;
            prev_unk = false;
        } else {
            bool have_bytes = t->byte_fallback;
            for (size_t i = 0; i < l && have_bytes; i++)
                if (t->byte_tokens[(unsigned char)text[off + i]] < 0) have_bytes = false;
            if (have_bytes) {
                for (size_t i = 0; i < l; i++) w->ids[n++] = t->byte_tokens[(unsigned char)text[off + i]];
                prev_unk = false;
            } else if (t->unk_fallback >= 0) {
                if (!(t->fuse_unk && prev_unk)) w->ids[n++] = t->unk_fallback;
                prev_unk = true;
            } /* else nothing can stand for it: dropped (see tokenizer_encode) */
        }
        off += l;
    }
    return merge_and_emit(t, w, n, out);
}
