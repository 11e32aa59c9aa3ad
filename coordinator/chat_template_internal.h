/* What chat_template.c (detection, validation) and chat_template_families.c (the text of each
 * family) share. Not part of the public API. */
#ifndef IFN_CHAT_TEMPLATE_INTERNAL_H
#define IFN_CHAT_TEMPLATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "chat_template.h"

typedef enum {
    CHAT_LLAMA2,
    CHAT_LLAMA3,
    CHAT_CHATML,
    CHAT_CODELLAMA,
    CHAT_MISTRAL,
    CHAT_ZEPHYR,
    CHAT_ALPACA,
    CHAT_PLAIN,
} chat_family;

typedef enum { CHAT_ROLE_SYSTEM, CHAT_ROLE_USER, CHAT_ROLE_ASSISTANT } chat_role;
extern const char *const CHAT_ROLE_NAMES[3]; /* by chat_role */

struct chat_template {
    chat_family family;
    bool eos_space; /* mistral: a space after each assistant turn's EOS (Mistral 7B Instruct v0.1) */
    char *bos, *eos;
};

/* A validated conversation: role[i] is msgs[i].role parsed. */
typedef struct {
    const chat_message *msgs;
    const chat_role *role;
    size_t n;
    bool add_generation_prompt;
} chat_turns;

/* A growing NUL-terminated text; a failed allocation sets nomem and later appends do nothing. */
typedef struct {
    char *p;
    size_t len, cap;
    bool nomem;
} chat_buf;

/* Appends the text of family t->family for c to b. c has passed the family's rules. */
void chat_render_family(const chat_template *t, const chat_turns *c, chat_buf *b);

#endif
