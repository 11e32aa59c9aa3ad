/* Pre-tokenizers of byte-level BPE: split text into the pieces that BPE then encodes one by
 * one, exactly as the published regexes would, but hand-written over the Unicode classes of
 * unicode.h (no regex library):
 *
 *   GPT-2     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   Llama-3   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *              ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   StarCoder every \p{N} on its own first, then GPT-2 on the text between the digits.
 *
 * A byte that is not part of valid UTF-8 counts as one character of class "other", so any
 * byte string splits and the pieces always cover the text exactly. */
#ifndef IFN_PRETOKENIZE_H
#define IFN_PRETOKENIZE_H

#include <stddef.h>

#include "status.h"

typedef enum {
    PRETOK_NONE,      /* the whole text is one piece */
    PRETOK_GPT2,
    PRETOK_LLAMA3,
    PRETOK_STARCODER,
} pretok_kind;

typedef struct {
    size_t off, len; /* bytes of the text */
} pretok_span;

typedef struct {
    pretok_span *v;
    size_t n, cap;
} pretok_spans;

/* Appends the pieces of text[0..len) to *out (which may hold earlier pieces). On failure
 * (IFN_ERR_NOMEM) *out keeps what it held before. */
ifn_status pretokenize(pretok_kind kind, const char *text, size_t len, pretok_spans *out);

/* Frees the pieces' storage and empties *s. */
void pretok_spans_free(pretok_spans *s);

const char *pretok_kind_name(pretok_kind kind);

#endif
