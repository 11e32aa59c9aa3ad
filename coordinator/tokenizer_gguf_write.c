/* A tokenizer written as the tokenizer.ggml.* keys of a GGUF file (llama.cpp's layout), so
 * that tokenizer_from_gguf reads back one that encodes the same way.
 *
 *   byte-level BPE  tokenizer.ggml.model "gpt2": tokens, token types, merges ("left right" in
 *                   rank order) and the pre-tokenizer's llama.cpp name (gpt-2, llama-bpe,
 *                   starcoder).
 *   metaspace BPE   (a Hugging Face tokenizer.json converted from SentencePiece, Llama 2 style)
 *                   tokenizer.ggml.model "llama": tokens, types and scores. SentencePiece
 *                   merges the adjacent pair whose merged piece scores best; a piece's score
 *                   here is minus the rank of the first merge that makes it, so that order is
 *                   the merge list's. Normal pieces no merge makes score below every merge.
 * A SentencePiece vocabulary read from GGUF keeps its scores. Then the special ids that are
 * set and add_bos / add_eos (and add_space_prefix for "llama"). Ids the vocabulary leaves
 * unassigned become "[PAD<id>]" of type unused, as llama.cpp pads.
 *
 * What the keys cannot say: lstrip/rstrip of added tokens; Metaspace's prepend_scheme "first"
 * ("llama" prepends after special tokens too); ignore_merges other than with llama-bpe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_gguf_write.h"
#include "tokenizer_internal.h"

/* A GGUF array value as gguf_writer_kv_raw takes it: element type, count, elements. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
    bool nomem;
} kv_buf;

static void put(kv_buf *b, const void *data, size_t n)
{
    if (b->nomem) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->nomem = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_array_head(kv_buf *b, gguf_type elem, uint64_t count)
{
    uint32_t t = (uint32_t)elem;
    put(b, &t, 4);
    put(b, &count, 8);
}

static void put_str(kv_buf *b, const char *s, size_t len)
{
    uint64_t n = len;
    put(b, &n, 8);
    put(b, s, len);
}

/* Writes b as key and frees it. */
static ifn_status flush(gguf_writer *w, const char *key, kv_buf *b)
{
    ifn_status s = b->nomem ? ifn_error_set(IFN_ERR_NOMEM, "no memory for the tokenizer metadata '%s'", key)
                            : gguf_writer_kv_raw(w, key, GGUF_TYPE_ARRAY, b->p, b->n);
    free(b->p);
    *b = (kv_buf){ 0 };
    return s;
}

static ifn_status write_tokens(const tokenizer *t, gguf_writer *w)
{
    kv_buf texts = { 0 }, types = { 0 };
    put_array_head(&texts, GGUF_TYPE_STRING, (uint64_t)t->n_vocab);
    put_array_head(&types, GGUF_TYPE_INT32, (uint64_t)t->n_vocab);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *text = tok_text(t, id, &len);
        int32_t type = t->tokens[id].type;
        char pad[32];
        if (len == 0 && type == TOKEN_UNUSED) {
            len = (size_t)snprintf(pad, sizeof pad, "[PAD%d]", id);
            text = pad;
        }
        put_str(&texts, text, len);
        put(&types, &type, 4);
    }
    ifn_status s = flush(w, "tokenizer.ggml.tokens", &texts);
    if (s == IFN_OK) s = flush(w, "tokenizer.ggml.token_type", &types);
    free(types.p);
    return s;
}

static int by_rank(const void *a, const void *b)
{
    const tok_merge_slot *x = *(const tok_merge_slot *const *)a, *y = *(const tok_merge_slot *const *)b;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* The merges [n_merges] in rank order (malloc'd), or NULL without memory. */
static const tok_merge_slot **sorted_merges(const tokenizer *t)
{
    const tok_merge_slot **m = malloc((t->n_merges ? t->n_merges : 1) * sizeof *m);
    if (!m) return NULL;
    size_t n = 0;
    for (size_t i = 0; t->merge_slots && i <= t->merge_mask; i++)
        if (t->merge_slots[i].key != UINT64_MAX) m[n++] = &t->merge_slots[i];
    qsort(m, n, sizeof *m, by_rank);
    return m;
}

static ifn_status write_merges(const tokenizer *t, gguf_writer *w, const tok_merge_slot **m)
{
    kv_buf b = { 0 };
    put_array_head(&b, GGUF_TYPE_STRING, (uint64_t)t->n_merges);
    char *joined = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < t->n_merges && !b.nomem; i++) {
        size_t llen, rlen;
        const char *l = tok_text(t, (int32_t)(m[i]->key >> 32), &llen);
        const char *r = tok_text(t, (int32_t)(m[i]->key & 0xffffffffu), &rlen);
        if (llen + rlen + 1 > cap) {
            cap = 2 * (llen + rlen + 1);
            char *j = realloc(joined, cap);
            if (!j) {
                b.nomem = true;
                break;
            }
            joined = j;
        }
        memcpy(joined, l, llen);
        joined[llen] = ' ';
        memcpy(joined + llen + 1, r, rlen);
        put_str(&b, joined, llen + 1 + rlen);
    }
    free(joined);
    return flush(w, "tokenizer.ggml.merges", &b);
}

static ifn_status write_scores(const tokenizer *t, gguf_writer *w, const tok_merge_slot **m)
{
    float *score = malloc((size_t)t->n_vocab * sizeof *score);
    if (!score) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %d token scores", t->n_vocab);
    const float unmerged = -(float)t->n_merges - 1.0f;
    for (int32_t id = 0; id < t->n_vocab; id++) score[id] = t->tokens[id].type == TOKEN_NORMAL ? unmerged : 0.0f;
    for (size_t i = t->n_merges; i-- > 0;) score[m[i]->result] = -(float)i; /* the first merge wins */
    kv_buf b = { 0 };
    put_array_head(&b, GGUF_TYPE_FLOAT32, (uint64_t)t->n_vocab);
    put(&b, score, (size_t)t->n_vocab * sizeof *score);
    free(score);
    return flush(w, "tokenizer.ggml.scores", &b);
}

static const char *pre_name(pretok_kind k)
{
    switch (k) {
    case PRETOK_LLAMA3: return "llama-bpe";
    case PRETOK_STARCODER: return "starcoder";
    default: return "gpt-2";
    }
}

ifn_status tokenizer_write_gguf(const tokenizer *t, gguf_writer *w)
{
    if (t->model == TOK_MODEL_BPE && !t->byte_level && !t->byte_fallback)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "a metaspace BPE tokenizer without byte_fallback has no GGUF form "
                             "(llama.cpp's SentencePiece falls back to byte tokens)");
    const bool spm = !t->byte_level;
    CHECK(gguf_writer_kv_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2"));
    if (!spm) CHECK(gguf_writer_kv_str(w, "tokenizer.ggml.pre", pre_name(t->pre)));
    CHECK(write_tokens(t, w));
    if (t->model == TOK_MODEL_BPE) {
        const tok_merge_slot **m = sorted_merges(t);
        if (!m) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %zu merges", t->n_merges);
        ifn_status s = spm ? write_scores(t, w, m) : write_merges(t, w, m);
        free(m);
        CHECK(s);
    } else {
        kv_buf b = { 0 };
        put_array_head(&b, GGUF_TYPE_FLOAT32, (uint64_t)t->n_vocab);
        for (int32_t id = 0; id < t->n_vocab; id++) put(&b, &t->tokens[id].score, 4);
        CHECK(flush(w, "tokenizer.ggml.scores", &b));
    }
    const struct {
        const char *key;
        int32_t id;
    } ids[] = {
        { "tokenizer.ggml.bos_token_id", t->bos },     { "tokenizer.ggml.eos_token_id", t->eos },
        { "tokenizer.ggml.unknown_token_id", t->unk }, { "tokenizer.ggml.padding_token_id", t->pad },
        { "tokenizer.ggml.eot_token_id", t->eot },     { "tokenizer.ggml.eom_token_id", t->eom },
    };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
        if (ids[i].id >= 0) CHECK(gguf_writer_kv_u32(w, ids[i].key, (uint32_t)ids[i].id));
    CHECK(gguf_writer_kv_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos));
    CHECK(gguf_writer_kv_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos));
    if (spm) CHECK(gguf_writer_kv_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix));
    return IFN_OK;
}
