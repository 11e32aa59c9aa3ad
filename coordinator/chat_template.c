/* Recognising a model's chat template and checking a conversation against its family's rules;
 * the families' texts are in chat_template_families.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template_internal.h"

static const char *const FAMILY_NAMES[] = {
    [CHAT_LLAMA2] = "llama2", [CHAT_LLAMA3] = "llama3", [CHAT_CHATML] = "chatml", [CHAT_CODELLAMA] = "codellama",
    [CHAT_MISTRAL] = "mistral", [CHAT_ZEPHYR] = "zephyr", [CHAT_ALPACA] = "alpaca", [CHAT_PLAIN] = "plain",
};
enum { N_FAMILIES = sizeof FAMILY_NAMES / sizeof FAMILY_NAMES[0] };

const char *const CHAT_ROLE_NAMES[3] = {"system", "user", "assistant"};

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* How many bytes of s to quote in an error message: at most max, not splitting a UTF-8
 * sequence (the message may end up in a JSON response). */
static int excerpt_len(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n <= max) return (int)n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return (int)n;
}

/* The family of a Jinja source, by substrings only its family's templates contain; the more
 * specific markers are tried first. False if none fits. */
static bool detect(const char *src, chat_family *family, bool *eos_space)
{
    *eos_space = false;
    if (has(src, "<|start_header_id|>")) *family = CHAT_LLAMA3;
    else if (has(src, "<|im_start|>")) *family = CHAT_CHATML;
    else if (has(src, "Source: ") && has(src, "<step>")) *family = CHAT_CODELLAMA;
    else if (has(src, "[INST]") && has(src, "<<SYS>>")) *family = CHAT_LLAMA2;
    else if (has(src, "[INST]")) {
        *family = CHAT_MISTRAL;
        *eos_space = has(src, "eos_token + ' '"); /* Mistral 7B Instruct v0.1 */
    } else if (has(src, "<|user|>") && !has(src, "<|end|>") && !has(src, "[gMASK]")) {
        *family = CHAT_ZEPHYR; /* Phi-3 (<|end|>) and ChatGLM ([gMASK]) also have <|user|> */
    } else if (has(src, "### Instruction:") && has(src, "### Response:") && !has(src, "<|EOT|>")) {
        *family = CHAT_ALPACA; /* DeepSeek Coder (<|EOT|>) has these headings in another layout */
    } else return false;
    return true;
}

static ifn_status choose_family(const char *source, bool strict, chat_family *family, bool *eos_space)
{
    *family = CHAT_PLAIN;
    *eos_space = false;
    if (!source) {
        if (strict)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "the model has no chat template (and the plain fallback "
                                 "was not allowed)");
        return IFN_OK;
    }
    for (int f = 0; f < N_FAMILIES; f++) {
        if (strcmp(source, FAMILY_NAMES[f]) == 0) {
            *family = (chat_family)f;
            return IFN_OK;
        }
    }
    if (detect(source, family, eos_space) || !strict) return IFN_OK;
    int shown = excerpt_len(source, 60);
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "the model's chat template (\"%.*s%s\") is not one of the "
                         "recognised families (llama2, llama3, chatml, codellama, mistral, zephyr, alpaca) "
                         "and the plain fallback was not allowed", shown, source, source[shown] ? "..." : "");
}

ifn_status chat_template_create(const char *source, const char *bos, const char *eos, bool strict,
                                chat_template **out)
{
    if (!out) return ifn_error_set(IFN_ERR_INVALID_ARG, "chat_template_create: NULL out");
    *out = NULL;
    chat_family family;
    bool eos_space;
    CHECK(choose_family(source, strict, &family, &eos_space));
    chat_template *t = calloc(1, sizeof *t);
    if (t) {
        t->family = family;
        t->eos_space = eos_space;
        t->bos = strdup(bos ? bos : "");
        t->eos = strdup(eos ? eos : "");
    }
    if (!t || !t->bos || !t->eos) {
        chat_template_destroy(t);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for a chat template");
    }
    *out = t;
    return IFN_OK;
}

const char *chat_template_name(const chat_template *t) { return FAMILY_NAMES[t->family]; }

void chat_template_destroy(chat_template *t)
{
    if (!t) return;
    free(t->bos);
    free(t->eos);
    free(t);
}

/* Parses every role and checks that role and content are there. */
static ifn_status parse_roles(const chat_message *msgs, size_t n, chat_role *role)
{
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role) return ifn_error_set(IFN_ERR_INVALID_ARG, "messages[%zu].role: missing", i);
        size_t r = 0;
        while (r < 3 && strcmp(msgs[i].role, CHAT_ROLE_NAMES[r]) != 0) r++;
        if (r == 3) {
            int shown = excerpt_len(msgs[i].role, 40);
            return ifn_error_set(IFN_ERR_INVALID_ARG, "messages[%zu].role: \"%.*s%s\" is not a role (system, "
                                 "user or assistant)", i, shown, msgs[i].role, msgs[i].role[shown] ? "..." : "");
        }
        role[i] = (chat_role)r;
        if (!msgs[i].content) return ifn_error_set(IFN_ERR_INVALID_ARG, "messages[%zu].content: missing", i);
    }
    return IFN_OK;
}

/* llama2, mistral, codellama and alpaca: an optional system message first, then user and
 * assistant alternating from user; llama2 and mistral need a user message to put a system
 * message in. The other families take any order. */
static ifn_status check_order(const chat_template *t, const chat_role *role, size_t n)
{
    chat_family f = t->family;
    if (f != CHAT_LLAMA2 && f != CHAT_MISTRAL && f != CHAT_CODELLAMA && f != CHAT_ALPACA) return IFN_OK;
    const char *name = FAMILY_NAMES[f];
    size_t start = role[0] == CHAT_ROLE_SYSTEM ? 1 : 0;
    for (size_t i = start; i < n; i++) {
        chat_role want = (i - start) % 2 == 0 ? CHAT_ROLE_USER : CHAT_ROLE_ASSISTANT;
        if (role[i] == CHAT_ROLE_SYSTEM)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "messages[%zu].role: \"system\" can only be the first "
                                 "message with the %s chat template", i, name);
        if (role[i] != want)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "messages[%zu].role: \"%s\" where \"%s\" was expected: the %s "
                                 "chat template needs user and assistant messages to alternate, starting with user",
                                 i, CHAT_ROLE_NAMES[role[i]], CHAT_ROLE_NAMES[want], name);
    }
    if (start == n && (f == CHAT_LLAMA2 || f == CHAT_MISTRAL))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "messages: the %s chat template needs a user message after the "
                             "system message", name);
    return IFN_OK;
}

ifn_status chat_template_render(const chat_template *t, const chat_message *msgs, size_t n,
                                bool add_generation_prompt, char **out)
{
    if (!t || !out) return ifn_error_set(IFN_ERR_INVALID_ARG, "chat_template_render: NULL argument");
    *out = NULL;
    if (n == 0 || !msgs) return ifn_error_set(IFN_ERR_INVALID_ARG, "messages: empty (at least one message is needed)");
    chat_role *role = malloc(n * sizeof *role);
    if (!role) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the roles of %zu messages", n);
    ifn_status st = IFN_OK;
    chat_buf b = {0};
    CHECK_GOTO(parse_roles(msgs, n, role), st, done);
    CHECK_GOTO(check_order(t, role, n), st, done);
    chat_turns c = {msgs, role, n, add_generation_prompt};
    chat_render_family(t, &c, &b);
    if (b.nomem) {
        st = ifn_error_set(IFN_ERR_NOMEM, "no memory for a prompt of %zu messages", n);
        goto done;
    }
    *out = b.p;
    b.p = NULL;
done:
    free(b.p);
    free(role);
    return st;
}
