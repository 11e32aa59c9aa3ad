/* Chat templates: a conversation (system / user / assistant messages) rendered as the prompt
 * text a chat model was trained on.
 *
 * Models carry their format as a Jinja template (GGUF tokenizer.chat_template, Hugging Face
 * tokenizer_config.json chat_template). There is no Jinja engine here: the template source is
 * recognised by distinctive substrings as one of the common families, each rendered by hand
 * exactly as its reference template renders it (docs/chat-templates.md lists the families,
 * the detection rules and the reference models):
 *
 *   llama3     <|start_header_id|>role<|end_header_id|>\n\n content<|eot_id|> ...
 *   chatml     <|im_start|>role\n content<|im_end|>\n ...
 *   codellama  Code Llama 70B Instruct: Source: role\n\n content <step> ... (Code Llama
 *              7B-34B Instruct use the Llama 2 format and are detected as llama2)
 *   llama2     [INST] <<SYS>>\n system\n<</SYS>>\n\n user [/INST] assistant </s><s>[INST] ...
 *   mistral    [INST] user [/INST]assistant</s>[INST] ... (no system role: see below)
 *   zephyr     <|system|>\n ...</s>\n<|user|>\n ...</s>\n<|assistant|>\n
 *   alpaca     system\n\n### Instruction:\n user\n\n### Response:\n assistant</s>\n\n ...
 *   plain      the documented fallback for a model without a recognised template:
 *                  System: ...\nUser: ...\nAssistant: ...\nUser: ...\nAssistant:
 *              one line per message ("Role: content\n"), "Assistant:" as the generation
 *              prompt, no special tokens.
 *
 * BOS contract: the rendered text never begins with BOS, even where the model's template
 * starts with bos_token (llama2, llama3, mistral, codellama, alpaca). The caller encodes the
 * text with tokenizer_encode(add_special = true, parse_special = true): the tokenizer adds
 * the one leading BOS if its vocabulary says so, and the special texts inside the prompt
 * (<|im_end|>, later turns' </s><s> of llama2, ...) become their tokens. So BOS is never
 * doubled.
 *
 * Roles are exactly "system", "user" and "assistant". Families without a system role of
 * their own fold it in: llama2 puts it in <<SYS>> inside the first [INST]; mistral prepends
 * it to the first user message, separated by "\n\n" (as Mistral's later templates do); for
 * llama2, mistral, codellama and alpaca the system message may only come first, and the
 * others must alternate user, assistant, user, ... starting with user. llama3, chatml,
 * zephyr and plain take any order.
 *
 * A chat_template is immutable after creation and may be used from many threads at once. */
#ifndef IFN_CHAT_TEMPLATE_H
#define IFN_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct {
    const char *role;    /* system, user, assistant */
    const char *content; /* NUL-terminated UTF-8 */
} chat_message;

typedef struct chat_template chat_template;

/* From the model's template source (GGUF tokenizer.chat_template / tokenizer_config.json
 * chat_template). source may also be a family's name ("chatml", ...) to choose it outright.
 * NULL or unrecognised: the plain fallback, unless strict, which refuses both with
 * IFN_ERR_UNSUPPORTED. bos and eos are the vocabulary's texts ("<s>", "</s>"); NULL is taken
 * as "" (they are copied). *out is NULL on failure. */
ifn_status chat_template_create(const char *source, const char *bos, const char *eos, bool strict,
                                chat_template **out);

/* "llama2", "llama3", "chatml", "codellama", "mistral", "zephyr", "alpaca" or "plain". */
const char *chat_template_name(const chat_template *t);

/* The prompt text of msgs[0..n); add_generation_prompt appends the assistant's opening (for
 * llama2 and mistral the closing [/INST] already is). *out is malloc'd, NUL-terminated
 * (caller frees); NULL on failure. IFN_ERR_INVALID_ARG names the message index and field:
 * "messages[2].role: ..." for a role that is not one of the three, a system message the
 * family cannot place or a broken user/assistant alternation; "messages[1].content: ..."
 * for a missing content; "messages: ..." for an empty conversation or one with no user
 * message where the family needs one. */
ifn_status chat_template_render(const chat_template *t, const chat_message *msgs, size_t n,
                                bool add_generation_prompt, char **out);

void chat_template_destroy(chat_template *t);

#endif
