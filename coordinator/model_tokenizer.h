/* The tokenizer that belongs to a model file (GGUF metadata, or tokenizer.json beside a
 * Hugging Face model; llama2.c checkpoints carry none), and the prompt formats that depend on
 * the model's special tokens. */
#ifndef IFN_MODEL_TOKENIZER_H
#define IFN_MODEL_TOKENIZER_H

#include "chat_template.h"
#include "model_file.h"
#include "tokenizer.h"

/* IFN_ERR_NOT_FOUND (with a message saying so) if the model has no tokenizer; any other
 * error if it has one that cannot be read (a chat template key that is not a string
 * included). The vocabulary must not be larger than the model's embedding. */
ifn_status model_tokenizer_load(const model_file *mf, tokenizer **out);

/* The chat template source the model file carries, read by model_tokenizer_load, or NULL:
 * GGUF's tokenizer.chat_template; for a Hugging Face directory, tokenizer_config.json's
 * chat_template (a string, or from a list of {name, template} the one named "default"), else
 * the file chat_template.jinja. Valid as long as t. Give it to chat_template_create. */
const char *model_tokenizer_chat_template(const tokenizer *t);

/* chat_template_create for the model: its chat template source (above) with the vocabulary's
 * BOS and EOS texts ("" where it has none). */
ifn_status model_tokenizer_chat_template_create(const tokenizer *t, bool strict, chat_template **out);

/* True if the vocabulary has the three fill-in-the-middle markers of StarCoder or of Code Llama. */
bool model_tokenizer_fim_supported(const tokenizer *t);

/* The fill-in-the-middle prompt, in the PSM order of the model's convention:
 *     StarCoder (as Hugging Face's StarCoder and llama.cpp's infill build it):
 *         [BOS] <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
 *     Code Llama (as Meta's infilling_prompt_tokens builds it):
 *         [BOS] ▁<PRE> prefix ▁<SUF> suffix ▁<MID>
 *     with the suffix encoded without the "▁" prefix (tokenizer_encode_continuation) and
 *     "▁<EOT>" ending the middle (an end-of-generation token, see tokenizer_vocab.c).
 * The model then generates the middle; its text continues the prompt's
 * (detok_stream_follow), so a leading space is kept. prefix and suffix are plain text:
 * special tokens typed in them ("<fim_middle>" in the user's code) stay text (user-defined
 * tokens are matched, as tokenizer_encode does). BOS only if add_special and the vocabulary
 * adds one; no EOS. IFN_ERR_UNSUPPORTED naming the first marker the vocabulary lacks; the
 * errors of tokenizer_encode otherwise. *ids is malloc'd (caller frees); nothing is allocated
 * on failure. */
ifn_status model_tokenizer_encode_fim(const tokenizer *t, const char *prefix, size_t prefix_len, const char *suffix,
                                      size_t suffix_len, bool add_special, int32_t **ids, size_t *n_ids);

#endif
