/* The vocabulary: token entries, the text -> id and (left, right) -> merge tables, and what
 * the loaders share once the tokens are in (pieces for decoding, byte tokens, special tokens,
 * end-of-generation ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "unicode.h"

#define MERGE_EMPTY UINT64_MAX

ifn_status tok_ids_push(tok_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return IFN_OK;
}

ifn_status tok_alloc(int32_t n_vocab, tokenizer **out)
{
    *out = NULL;
    if (n_vocab <= 0) return ifn_error_set(IFN_ERR_INVALID_ARG, "tokenizer: empty vocabulary");
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
    t->tokens = calloc((size_t)n_vocab, sizeof *t->tokens);
    t->arena_cap = 4096; /* never NULL, so that empty texts still point somewhere */
    t->arena = malloc(t->arena_cap);
    if (!t->tokens || !t->arena) {
        free(t->tokens);
        free(t->arena);
        free(t);
        return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n_vocab);
    }
    t->n_vocab = n_vocab;
    for (int32_t i = 0; i < n_vocab; i++) t->tokens[i].type = TOKEN_UNUSED;
    for (int i = 0; i < 256; i++) t->byte_tokens[i] = -1;
    t->bos = t->eos = t->unk = t->pad = t->eot = t->eom = t->unk_fallback = -1;
    *out = t;
    return IFN_OK;
}

void tokenizer_destroy(tokenizer *t)
{
    if (!t) return;
    free(t->tokens);
    free(t->arena);
    free(t->map_slots);
    free(t->merge_slots);
    free(t->eog);
    free(t->specials);
    free(t->chat_template);
    free(t);
}

/* Appends bytes to the arena; *off receives where they start. */
static ifn_status arena_append(tokenizer *t, const void *p, size_t len, uint32_t *off)
{
    if (len > UINT32_MAX - t->arena_len)
        return ifn_error_set(IFN_ERR_RANGE, "tokenizer: token texts exceed 4 GiB");
    if (t->arena_len + len > t->arena_cap) {
        size_t cap = t->arena_cap;
        while (cap < t->arena_len + len) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for token texts");
        t->arena = a;
        t->arena_cap = cap;
    }
    if (len) memcpy(t->arena + t->arena_len, p, len);
    *off = (uint32_t)t->arena_len;
    t->arena_len += len;
    return IFN_OK;
}

ifn_status tok_set(tokenizer *t, int32_t id, const char *text, size_t len, float score,
                   uint8_t type)
{
    tok_entry *e = &t->tokens[id];
    if (len > UINT32_MAX) return ifn_error_set(IFN_ERR_RANGE, "tokenizer: token %d too long", id);
    CHECK(arena_append(t, text, len, &e->text_off));
    e->text_len = (uint32_t)len;
    e->score = score;
    e->type = type;
    return IFN_OK;
}

/* FNV-1a: token texts are short and this is not exposed to untrusted table sizes. */
static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

ifn_status tok_index(tokenizer *t)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_vocab) cap *= 2;
    free(t->map_slots);
    t->map_slots = malloc(cap * sizeof *t->map_slots);
    if (!t->map_slots) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for index");
    memset(t->map_slots, 0xFF, cap * sizeof *t->map_slots); /* -1 everywhere */
    t->map_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = tok_text(t, id, &len);
        if (len == 0) continue;
        size_t i = hash_bytes(s, len) & t->map_mask;
        for (;; i = (i + 1) & t->map_mask) {
            int32_t other = t->map_slots[i];
            if (other < 0) break;
            size_t olen;
            const char *o = tok_text(t, other, &olen);
            if (olen == len && memcmp(o, s, len) == 0) break;
        }
        t->map_slots[i] = id;
    }
    return IFN_OK;
}

int32_t tok_find(const tokenizer *t, const char *text, size_t len)
{
    if (len == 0 || !t->map_slots) return -1;
    for (size_t i = hash_bytes(text, len) & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t id = t->map_slots[i];
        if (id < 0) return -1;
        size_t olen;
        const char *o = tok_text(t, id, &olen);
        if (olen == len && memcmp(o, text, len) == 0) return id;
    }
}

static uint64_t pair_hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key;
}

ifn_status tok_merges_reserve(tokenizer *t, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    free(t->merge_slots);
    t->merge_slots = malloc(cap * sizeof *t->merge_slots);
    if (!t->merge_slots)
        return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory for %zu merges", n);
    for (size_t i = 0; i < cap; i++) t->merge_slots[i].key = MERGE_EMPTY;
    t->merge_mask = cap - 1;
    t->n_merges = 0;
    return IFN_OK;
}

void tok_merge_add(tokenizer *t, int32_t left, int32_t right, int32_t rank, int32_t result)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = pair_hash(key) & t->merge_mask;
    while (t->merge_slots[i].key != MERGE_EMPTY) {
        if (t->merge_slots[i].key == key) return; /* the earlier, better rank stays */
        i = (i + 1) & t->merge_mask;
    }
    t->merge_slots[i].key = key;
    t->merge_slots[i].rank = rank;
    t->merge_slots[i].result = result;
    t->n_merges++;
}

int32_t tok_merge_find(const tokenizer *t, int32_t left, int32_t right, int32_t *result)
{
    if (!t->merge_slots) return -1;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = pair_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge_slot *s = &t->merge_slots[i];
        if (s->key == MERGE_EMPTY) return -1;
        if (s->key == key) {
            *result = s->result;
            return s->rank;
        }
    }
}

ifn_status tok_check_id(const tokenizer *t, const char *what, const char *key, int64_t id)
{
    if (id == -1 || (id >= 0 && id < t->n_vocab)) return IFN_OK;
    return ifn_error_set(IFN_ERR_FORMAT, "%s: %s = %lld is outside the vocabulary (%d tokens)",
                         what, key, (long long)id, t->n_vocab);
}

/* "<0xXX>" -> XX, or -1. */
static int parse_byte_token(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The bytes a normal token decodes to: GPT-2 stand-ins back to bytes, or "▁" back to spaces.
 * buf has room for len bytes (decoding never grows a text). Returns the piece's length. */
static size_t render_normal(const tokenizer *t, const char *s, size_t len, char *buf)
{
    size_t n = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = unicode_utf8_next(u + i, len - i, &cp);
        if (t->byte_level && cp != UNICODE_BAD && unicode_cp_to_byte(cp) >= 0) {
            buf[n++] = (char)unicode_cp_to_byte(cp);
        } else if (t->metaspace && cp == 0x2581) {
            buf[n++] = ' ';
        } else {
            memcpy(buf + n, s + i, l);
            n += l;
        }
        i += l;
    }
    return n;
}

typedef struct {
    uint32_t len;
    int32_t id;
} special_key;

static int cmp_special(const void *a, const void *b)
{
    const special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static ifn_status eog_add(tokenizer *t, int32_t id)
{
    if (id < 0) return IFN_OK;
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return IFN_OK;
    int32_t *v = realloc(t->eog, (t->n_eog + 1) * sizeof *v);
    if (!v) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
    t->eog = v;
    t->eog[t->n_eog++] = id;
    return IFN_OK;
}

/* Texts that end a turn in the chat templates of common models, when they are special. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<EOT>", "<|end_of_text|>", "\xE2\x96\x81<EOT>",
};

/* Code Llama's fill-in-the-middle markers. Its vocabulary stores them as normal pieces; they
 * become control tokens here (as llama.cpp does) so that user text never encodes to one and
 * output never shows one, and "▁<EOT>", which ends an infilled middle, ends generation. */
static const char *const CODE_LLAMA_MARKERS[] = { "\xE2\x96\x81<PRE>", "\xE2\x96\x81<SUF>", "\xE2\x96\x81<MID>",
                                                  "\xE2\x96\x81<EOT>" };

ifn_status tok_finish(tokenizer *t)
{
    for (size_t i = 0; i < sizeof CODE_LLAMA_MARKERS / sizeof CODE_LLAMA_MARKERS[0]; i++) {
        int32_t id = tok_find(t, CODE_LLAMA_MARKERS[i], strlen(CODE_LLAMA_MARKERS[i]));
        if (id >= 0) t->tokens[id].type = TOKEN_CONTROL;
    }

    /* Pieces. A scratch buffer as long as the longest text suffices. */
    size_t longest = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->tokens[id].text_len > longest) longest = t->tokens[id].text_len;
    char *buf = malloc(longest + 1);
    if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
    ifn_status st = IFN_OK;
    /* Rendering yields a token's text, its piece (never longer) or U+FFFD (3 bytes). */
    t->max_piece_len = longest > 3 ? longest : 3;
    for (int32_t id = 0; id < t->n_vocab && st == IFN_OK; id++) {
        tok_entry *e = &t->tokens[id];
        const char *s = t->arena + e->text_off;
        size_t n = 0;
        bool same_as_text = false;
        int byte = t->metaspace ? parse_byte_token(s, e->text_len) : -1;
        switch (e->type) {
        case TOKEN_BYTE:
            if (byte >= 0) {
                buf[0] = (char)byte;
                n = 1;
                break;
            }
            n = render_normal(t, s, e->text_len, buf);
            break;
        case TOKEN_NORMAL: n = render_normal(t, s, e->text_len, buf); break;
        case TOKEN_USER_DEFINED: same_as_text = true; break;
        default: break; /* control, unknown, unused: rendered from the text or not at all */
        }
        if (same_as_text) {
            e->piece_off = e->text_off;
            e->piece_len = e->text_len;
        } else if (n == e->text_len && memcmp(buf, s, n) == 0) {
            e->piece_off = e->text_off;
            e->piece_len = e->text_len;
        } else {
            /* s may move when the arena grows: copy the piece from buf only. */
            st = arena_append(t, buf, n, &e->piece_off);
            e->piece_len = (uint32_t)n;
        }
    }
    free(buf);
    CHECK(st);

    /* Byte tokens. */
    for (int b = 0; b < 256; b++) {
        if (t->byte_level) {
            unsigned char u[4];
            size_t l = unicode_utf8_encode(unicode_byte_to_cp((uint8_t)b), u);
            t->byte_tokens[b] = tok_find(t, (const char *)u, l);
        } else {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_tokens[b] = tok_find(t, name, 6);
        }
    }

    /* Special tokens, longest first so that "<|im_start|>" wins over "<|im". */
    size_t n_sp = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->tokens[id].type;
        if ((ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED || ty == TOKEN_UNKNOWN) &&
            t->tokens[id].text_len > 0)
            n_sp++;
    }
    special_key *keys = malloc((n_sp ? n_sp : 1) * sizeof *keys);
    free(t->specials);
    t->specials = malloc((n_sp ? n_sp : 1) * sizeof *t->specials);
    if (!keys || !t->specials) {
        free(keys);
        return ifn_error_set(IFN_ERR_NOMEM, "tokenizer: out of memory");
    }
    size_t k = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->tokens[id].type;
        if ((ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED || ty == TOKEN_UNKNOWN) &&
            t->tokens[id].text_len > 0)
            keys[k++] = (special_key){t->tokens[id].text_len, id};
    }
    qsort(keys, k, sizeof *keys, cmp_special);
    for (size_t i = 0; i < k; i++) t->specials[i] = keys[i].id;
    t->n_specials = k;
    free(keys);

    /* End of generation. */
    CHECK(eog_add(t, t->eos));
    CHECK(eog_add(t, t->eot));
    CHECK(eog_add(t, t->eom));
    for (size_t i = 0; i < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; i++) {
        int32_t id = tok_find(t, EOG_TEXTS[i], strlen(EOG_TEXTS[i]));
        if (id >= 0 && (t->tokens[id].type == TOKEN_CONTROL ||
                        t->tokens[id].type == TOKEN_USER_DEFINED))
            CHECK(eog_add(t, id));
    }
    return IFN_OK;
}
