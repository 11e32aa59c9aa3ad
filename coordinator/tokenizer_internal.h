/* What the tokenizer's files share: the vocabulary with its lookup tables, the merge table,
 * and the two encoding engines. Not part of the public API.
 *
 * Two models cover the vocabularies we read:
 *   TOK_MODEL_SPM  SentencePiece-style BPE (Llama 1/2 GGUF): merge the adjacent pair whose
 *                  merged piece has the best score; pieces not in the vocabulary fall back to
 *                  <0xXX> byte tokens.
 *   TOK_MODEL_BPE  BPE by merge rank (GPT-2 style, and Hugging Face's "BPE" model): merge the
 *                  adjacent pair with the lowest rank in the merges list.
 * and two ways of preparing text for them:
 *   metaspace      spaces become U+2581 "▁", optionally with one prepended (SPM, HF Llama);
 *                  the whole fragment is one word.
 *   byte_level     a pre-tokenizer splits the text into words, each byte of a word becomes
 *                  GPT-2's printable stand-in character (so every byte has a token). */
#ifndef IFN_TOKENIZER_INTERNAL_H
#define IFN_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pretokenize.h"
#include "status.h"
#include "tokenizer.h"

/* Token types, with the values of GGUF's tokenizer.ggml.token_type. */
enum {
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6,
};

/* Attributes of added tokens (tokenizer.json): swallow whitespace on that side when matched. */
enum { TOKEN_LSTRIP = 1, TOKEN_RSTRIP = 2 };

typedef enum { TOK_MODEL_SPM, TOK_MODEL_BPE } tok_model;

typedef struct {
    uint32_t text_off, text_len;   /* the token's text in the arena */
    uint32_t piece_off, piece_len; /* what decoding a normal/byte/user token yields */
    float score;                   /* SPM merge priority */
    uint8_t type;                  /* TOKEN_* */
    uint8_t attr;                  /* TOKEN_LSTRIP | TOKEN_RSTRIP */
} tok_entry;

typedef struct {
    uint64_t key; /* left << 32 | right; UINT64_MAX when empty */
    int32_t rank;
    int32_t result;
} tok_merge_slot;

struct tokenizer {
    tok_model model;
    pretok_kind pre;       /* byte-level only */
    bool byte_level;
    bool metaspace;
    bool add_space_prefix; /* metaspace: prepend "▁" to a text fragment ... */
    bool prefix_first_only; /* ... only to the one at the start of the text (else after every
                             * special token too, as llama.cpp and HF's Prepend do) */
    bool byte_fallback;    /* BPE metaspace: characters not in the vocabulary become bytes */
    bool fuse_unk;         /* BPE metaspace without byte fallback: one unk per run */
    bool ignore_merges;    /* BPE: a word that is itself a token is not split (Llama-3) */
    bool add_bos, add_eos;

    int32_t n_vocab;
    tok_entry *tokens; /* [n_vocab] */
    char *arena;       /* texts and pieces */
    size_t arena_len, arena_cap;

    int32_t *map_slots; /* text -> id, open addressing; -1 empty */
    size_t map_mask;

    tok_merge_slot *merge_slots; /* (left, right) -> rank, result */
    size_t merge_mask, n_merges;

    int32_t byte_tokens[256]; /* byte -> token (<0xXX>, or GPT-2's stand-in char); -1 none */

    int32_t bos, eos, unk, pad, eot, eom; /* -1 if none */
    int32_t unk_fallback; /* what stands for text the vocabulary cannot represent: the unknown
                           * token when it really is one (StarCoder's GGUF names
                           * <|endoftext|>, which must not be injected); -1 if none */
    int32_t *eog;      /* end-of-generation ids */
    size_t n_eog;
    int32_t *specials; /* control / user-defined / unknown tokens, longest text first */
    size_t n_specials;
    size_t max_piece_len; /* most bytes one token renders to (at least 3, for U+FFFD) */
    char *chat_template;  /* the model file's chat template source (model_tokenizer.c), or NULL */
};

/* Growable list of ids. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ids;

ifn_status tok_ids_push(tok_ids *ids, int32_t id);

/* --- vocabulary (tokenizer_vocab.c) --- */

/* A tokenizer with n_vocab empty TOKEN_UNUSED entries and no special ids. */
ifn_status tok_alloc(int32_t n_vocab, tokenizer **out);
/* Sets entry id (copies the text). */
ifn_status tok_set(tokenizer *t, int32_t id, const char *text, size_t len, float score,
                   uint8_t type);
static inline const char *tok_text(const tokenizer *t, int32_t id, size_t *len)
{
    *len = t->tokens[id].text_len;
    return t->arena + t->tokens[id].text_off;
}
/* Builds the text -> id table after all tok_set calls; when texts repeat, the last id wins
 * (as in llama.cpp). */
ifn_status tok_index(tokenizer *t);
/* The id whose text is text[0..len), or -1. */
int32_t tok_find(const tokenizer *t, const char *text, size_t len);

/* Merges: reserve room for n, then add them in rank order (a repeated pair keeps its first
 * rank). result is the id of the merged text. */
ifn_status tok_merges_reserve(tokenizer *t, size_t n);
void tok_merge_add(tokenizer *t, int32_t left, int32_t right, int32_t rank, int32_t result);
/* Rank of the pair (or -1) and the merged id in *result. */
int32_t tok_merge_find(const tokenizer *t, int32_t left, int32_t right, int32_t *result);

/* Checks a special id read from key: -1 passes, anything else must be a token. */
ifn_status tok_check_id(const tokenizer *t, const char *what, const char *key, int64_t id);

/* After the loader has set the model flags, tokens and special ids: computes pieces, byte
 * tokens, the special-token list and end-of-generation ids. */
ifn_status tok_finish(tokenizer *t);

/* --- decoding (tokenizer.c) --- */

/* What token id renders to: *p[0..*n), and whether that is a special token's text. */
void tok_render(const tokenizer *t, int32_t id, bool render_special, const char **p, size_t *n,
                bool *special);
/* The space that the "▁" prefix added is dropped from the first text a decode yields (as
 * llama.cpp does), unless that text is a special token's. *at_start tracks whether text was
 * yielded yet; returns true if a space was dropped. */
bool tok_strip_space(const tokenizer *t, bool *at_start, bool special, const char **p, size_t *n);

/* --- engines --- */

/* SPM (tokenizer_spm.c): appends the ids of text, which is already metaspace-escaped. */
ifn_status spm_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out);

/* BPE by rank (tokenizer_bpe.c). A workspace reused across the words of one call. */
typedef struct bpe_candidate bpe_candidate;
typedef struct {
    int32_t *ids, *prev, *next; /* [cap] symbols of the current word */
    size_t cap;
    bpe_candidate *heap;
    size_t heap_n, heap_cap;
    char *mapped; /* byte-level: the word in GPT-2 stand-in characters */
    size_t mapped_cap;
} bpe_work;

void bpe_work_free(bpe_work *w);
/* Byte-level: appends the ids of one pre-tokenized word. */
ifn_status bpe_encode_bytes(const tokenizer *t, bpe_work *w, const char *word, size_t len,
                            tok_ids *out);
/* Metaspace: appends the ids of text (already escaped), characters looked up one by one with
 * byte fallback or unk, then merged. */
ifn_status bpe_encode_chars(const tokenizer *t, bpe_work *w, const char *text, size_t len,
                            tok_ids *out);

#endif
