/* Tokenizers: SentencePiece-style BPE with scores (Llama 1/2) and byte-level BPE with merges
 * (GPT-2, Llama-3, StarCoder pre-tokenizers), read from GGUF metadata or a Hugging Face
 * tokenizer.json, and a streaming detokenizer that never emits a broken UTF-8 sequence.
 *
 * A tokenizer is immutable after creation and may be used from many threads at once. */
#ifndef IFN_TOKENIZER_H
#define IFN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct tokenizer tokenizer;

/* From the tokenizer.ggml.* keys of a GGUF file. IFN_ERR_NOT_FOUND if the file has none.
 * Everything is copied: f may be closed once this returns. */
ifn_status tokenizer_from_gguf(const gguf_file *f, tokenizer **out);

/* From a Hugging Face tokenizer.json; config_path (tokenizer_config.json) may be NULL and
 * supplies add_bos_token / add_eos_token / bos_token / eos_token when present. */
ifn_status tokenizer_from_json(const char *path, const char *config_path, tokenizer **out);

void tokenizer_destroy(tokenizer *t);

int32_t tokenizer_vocab_size(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t); /* -1 if none */
int32_t tokenizer_eos(const tokenizer *t); /* -1 if none */
/* True if tokenizer_encode's add_special puts BOS in front (the vocabulary says so and has one). */
bool tokenizer_adds_bos(const tokenizer *t);
/* True for end-of-generation tokens (EOS, EOT, <|eot_id|>, ...). */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);
/* The id of the token whose text is exactly text[0..len) ("<|im_end|>", "\xC4\xA0the"), or -1. */
int32_t tokenizer_token_id(const tokenizer *t, const char *text, size_t len);

/* Encodes len bytes of text into *ids (malloc'd, caller frees; *n_ids may be 0).
 * add_special: add BOS/EOS as the file says. parse_special: text like "<s>" or
 * "<fim_prefix>" becomes the special token instead of being split as plain text
 * (user-defined tokens are matched either way, as llama.cpp and HF do).
 * Invalid UTF-8 in text is encoded as its bytes (never an error); a byte the vocabulary has
 * neither a token nor an unknown token for is dropped, as llama.cpp does. IFN_ERR_RANGE for
 * more than 512 MiB of text in one call. */
ifn_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **ids, size_t *n_ids);

/* Encodes plain text that continues earlier text (the suffix of a Code Llama
 * fill-in-the-middle prompt): as tokenizer_encode without add_special and parse_special, and
 * without the "▁" prefix at the start of the text. */
ifn_status tokenizer_encode_continuation(const tokenizer *t, const char *text, size_t len, int32_t **ids,
                                         size_t *n_ids);

/* Decodes ids into *text (malloc'd, NUL-terminated, caller frees). Special tokens are
 * rendered only if render_special (else the unknown token shows as U+FFFD, control tokens
 * as nothing). The text is the raw bytes, invalid UTF-8 included. For SentencePiece-style
 * vocabularies the space that the "▁" prefix added is dropped from the start, as llama.cpp
 * does. IFN_ERR_RANGE names an id outside the vocabulary. */
ifn_status tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n_ids,
                            bool render_special, char **text, size_t *len);

/* Streaming detokenizer: feed ids one at a time, get back only complete UTF-8 characters;
 * bytes of an incomplete sequence are held until the next id completes them (or flushed
 * as U+FFFD by detok_stream_finish if the sequence never completes). */
typedef struct detok_stream detok_stream;
ifn_status detok_stream_create(const tokenizer *t, bool render_special, detok_stream **out);
/* The text to come follows ids (a prompt), whose own text is not output: as in the text of
 * the whole sequence, the "▁" prefix's space is dropped only if ids render no text, so a
 * completion of "The cat" keeps the space of its first token ("▁sat" gives " sat"), as
 * llama.cpp's and vLLM's servers and Meta's Code Llama infilling return it. Call it before
 * the first push. IFN_ERR_RANGE names an id outside the vocabulary. */
ifn_status detok_stream_follow(detok_stream *s, const int32_t *ids, size_t n_ids);
void detok_stream_destroy(detok_stream *s);
/* Appends the text that id completes to out (cap bytes); *n_out = bytes written.
 * IFN_ERR_RANGE if cap is too small (nothing is consumed then). 64 bytes + the longest
 * token's length always suffice; that length, counting the U+FFFD that stray bytes become,
 * is tokenizer_max_token_bytes(). */
ifn_status detok_stream_push(detok_stream *s, int32_t id, char *out, size_t cap, size_t *n_out);
ifn_status detok_stream_finish(detok_stream *s, char *out, size_t cap, size_t *n_out);
size_t tokenizer_max_token_bytes(const tokenizer *t);

#endif
