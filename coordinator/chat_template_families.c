/* The text of each chat template family, written to match what the family's reference Jinja
 * template renders (Hugging Face's environment: trim_blocks, lstrip_blocks), minus the
 * leading BOS that the tokenizer adds (chat_template.h). "strip" below is Python's
 * str.strip() / Jinja's trim for ASCII whitespace; the templates that strip are noted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template_internal.h"

static void buf_put_n(chat_buf *b, const char *s, size_t n)
{
    if (b->nomem) return;
    if (n > SIZE_MAX / 4 - b->len) {
        b->nomem = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->nomem = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_put(chat_buf *b, const char *s) { buf_put_n(b, s, strlen(s)); }

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Strips whitespace from both ends of the text appended since off. */
static void buf_strip_from(chat_buf *b, size_t off)
{
    if (b->nomem) return;
    size_t start = off, end = b->len;
    while (start < end && is_space(b->p[start])) start++;
    while (end > start && is_space(b->p[end - 1])) end--;
    memmove(b->p + off, b->p + start, end - start);
    b->len = off + (end - start);
    b->p[b->len] = '\0';
}

static void buf_put_stripped(chat_buf *b, const char *s)
{
    size_t off = b->len;
    buf_put(b, s);
    buf_strip_from(b, off);
}

/* Index of the first message after a leading system message. */
static size_t first_turn(const chat_turns *c) { return c->n > 0 && c->role[0] == CHAT_ROLE_SYSTEM ? 1 : 0; }

/* Llama 2 chat (meta-llama/Llama-2-7b-chat-hf; Code Llama 7B-34B Instruct alike): every user
 * turn opens with BOS, the system message sits in <<SYS>> inside the first [INST], the first
 * turn's content (system block included) and every other content stripped. */
static void render_llama2(const chat_template *t, const chat_turns *c, chat_buf *b)
{
    size_t start = first_turn(c);
    for (size_t i = start; i < c->n; i++) {
        if (c->role[i] == CHAT_ROLE_USER) {
            if (i > start) buf_put(b, t->bos);
            buf_put(b, "[INST] ");
            size_t off = b->len;
            if (i == start && start == 1) {
                buf_put(b, "<<SYS>>\n");
                buf_put(b, c->msgs[0].content);
                buf_put(b, "\n<</SYS>>\n\n");
            }
            buf_put(b, c->msgs[i].content);
            buf_strip_from(b, off);
            buf_put(b, " [/INST]");
        } else {
            buf_put(b, " ");
            buf_put_stripped(b, c->msgs[i].content);
            buf_put(b, " ");
            buf_put(b, t->eos);
        }
    }
}

/* Mistral 7B Instruct v0.1/v0.2: nothing stripped; no system role, so the system message is
 * prepended to the first user message with "\n\n". */
static void render_mistral(const chat_template *t, const chat_turns *c, chat_buf *b)
{
    size_t start = first_turn(c);
    for (size_t i = start; i < c->n; i++) {
        if (c->role[i] == CHAT_ROLE_USER) {
            buf_put(b, "[INST] ");
            if (i == start && start == 1) {
                buf_put(b, c->msgs[0].content);
                buf_put(b, "\n\n");
            }
            buf_put(b, c->msgs[i].content);
            buf_put(b, " [/INST]");
        } else {
            buf_put(b, c->msgs[i].content);
            buf_put(b, t->eos);
            if (t->eos_space) buf_put(b, " ");
        }
    }
}

/* Meta Llama 3 Instruct: contents stripped. */
static void render_llama3(const chat_turns *c, chat_buf *b)
{
    for (size_t i = 0; i < c->n; i++) {
        buf_put(b, "<|start_header_id|>");
        buf_put(b, CHAT_ROLE_NAMES[c->role[i]]);
        buf_put(b, "<|end_header_id|>\n\n");
        buf_put_stripped(b, c->msgs[i].content);
        buf_put(b, "<|eot_id|>");
    }
    if (c->add_generation_prompt) buf_put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* ChatML (teknium/OpenHermes-2.5-Mistral-7B, Qwen): nothing stripped. */
static void render_chatml(const chat_turns *c, chat_buf *b)
{
    for (size_t i = 0; i < c->n; i++) {
        buf_put(b, "<|im_start|>");
        buf_put(b, CHAT_ROLE_NAMES[c->role[i]]);
        buf_put(b, "\n");
        buf_put(b, c->msgs[i].content);
        buf_put(b, "<|im_end|>\n");
    }
    if (c->add_generation_prompt) buf_put(b, "<|im_start|>assistant\n");
}

/* Code Llama 70B Instruct: contents stripped; its template always ends with the generation
 * prompt, here only when asked. */
static void render_codellama(const chat_turns *c, chat_buf *b)
{
    for (size_t i = 0; i < c->n; i++) {
        buf_put(b, "Source: ");
        buf_put(b, CHAT_ROLE_NAMES[c->role[i]]);
        buf_put(b, "\n\n ");
        buf_put_stripped(b, c->msgs[i].content);
        buf_put(b, " <step> ");
    }
    if (c->add_generation_prompt) buf_put(b, "Source: assistant\nDestination: user\n\n ");
}

/* Zephyr (HuggingFaceH4/zephyr-7b-beta): nothing stripped; every message ends with EOS. */
static void render_zephyr(const chat_template *t, const chat_turns *c, chat_buf *b)
{
    for (size_t i = 0; i < c->n; i++) {
        buf_put(b, "<|");
        buf_put(b, CHAT_ROLE_NAMES[c->role[i]]);
        buf_put(b, "|>\n");
        buf_put(b, c->msgs[i].content);
        buf_put(b, t->eos);
        buf_put(b, "\n");
    }
    if (c->add_generation_prompt) buf_put(b, "<|assistant|>\n");
}

/* Alpaca: the system message (Stanford Alpaca's "Below is an instruction ..." preamble) as a
 * paragraph, then ### Instruction / ### Response blocks; contents stripped. */
static void render_alpaca(const chat_template *t, const chat_turns *c, chat_buf *b)
{
    size_t start = first_turn(c);
    if (start == 1) {
        buf_put_stripped(b, c->msgs[0].content);
        buf_put(b, "\n\n");
    }
    for (size_t i = start; i < c->n; i++) {
        bool user = c->role[i] == CHAT_ROLE_USER;
        buf_put(b, user ? "### Instruction:\n" : "### Response:\n");
        buf_put_stripped(b, c->msgs[i].content);
        if (!user) buf_put(b, t->eos);
        buf_put(b, "\n\n");
    }
    if (c->add_generation_prompt) buf_put(b, "### Response:\n");
}

/* The fallback: "Role: content\n" per message, "Assistant:" to prompt; no special tokens. */
static void render_plain(const chat_turns *c, chat_buf *b)
{
    static const char *const LABELS[] = {"System: ", "User: ", "Assistant: "};
    for (size_t i = 0; i < c->n; i++) {
        buf_put(b, LABELS[c->role[i]]);
        buf_put(b, c->msgs[i].content);
        buf_put(b, "\n");
    }
    if (c->add_generation_prompt) buf_put(b, "Assistant:");
}

void chat_render_family(const chat_template *t, const chat_turns *c, chat_buf *b)
{
    buf_put(b, ""); /* an empty rendering is still a string */
    switch (t->family) {
    case CHAT_LLAMA2: render_llama2(t, c, b); break;
    case CHAT_LLAMA3: render_llama3(c, b); break;
    case CHAT_CHATML: render_chatml(c, b); break;
    case CHAT_CODELLAMA: render_codellama(c, b); break;
    case CHAT_MISTRAL: render_mistral(t, c, b); break;
    case CHAT_ZEPHYR: render_zephyr(t, c, b); break;
    case CHAT_ALPACA: render_alpaca(t, c, b); break;
    case CHAT_PLAIN: render_plain(c, b); break;
    }
}
