#include "http_openai_logprobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool oa_logprobs_append(oa_logprobs *l, int k, const int32_t *ids, const float *lp, const int32_t *top,
                        const float *top_lp, int n)
{
    if (n <= 0) return true;
    const size_t total = (size_t)l->n + (size_t)n, kk = (size_t)k;
    int32_t *i = realloc(l->ids, total * sizeof *i);
    if (i) l->ids = i;
    float *p = i ? realloc(l->lp, total * sizeof *p) : NULL;
    if (p) l->lp = p;
    int32_t *t = p ? realloc(l->top, total * kk * sizeof *t + 1) : NULL;
    if (t) l->top = t;
    float *tp = t ? realloc(l->top_lp, total * kk * sizeof *tp + 1) : NULL;
    if (!tp) return false;
    l->top_lp = tp;
    memcpy(l->ids + l->n, ids, (size_t)n * sizeof *ids);
    memcpy(l->lp + l->n, lp, (size_t)n * sizeof *lp);
    memcpy(l->top + (size_t)l->n * kk, top, (size_t)n * kk * sizeof *top);
    memcpy(l->top_lp + (size_t)l->n * kk, top_lp, (size_t)n * kk * sizeof *top_lp);
    l->n = (int)total;
    return true;
}

void oa_logprobs_free(oa_logprobs *l)
{
    free(l->ids);
    free(l->lp);
    free(l->top);
    free(l->top_lp);
    *l = (oa_logprobs){ 0 };
}

oa_logprobs_format oa_logprobs_format_of(const tokenizer *tok, int k, int shown, bool chat)
{
    return (oa_logprobs_format){ .tok = tok, .anchor = tok ? tokenizer_token_id(tok, "a", 1) : -1, .k = k,
                                 .shown = shown < k ? shown : k, .chat = chat };
}

/* A token's text (malloc'd, *len bytes, possibly an incomplete UTF-8 sequence): decoded after
 * the anchor and cut after the anchor's text, so that a SentencePiece piece keeps the space its
 * "▁" stands for, which decoding it alone would drop. */
static char *token_text(const oa_logprobs_format *f, int32_t id, size_t *len)
{
    char *text = NULL, *anchor = NULL;
    size_t n = 0, na = 0;
    if (!f->tok) {
        char buf[16];
        *len = (size_t)snprintf(buf, sizeof buf, "%d", id);
        return strdup(buf);
    }
    const int32_t pair[2] = { f->anchor, id };
    bool anchored = f->anchor >= 0 && tokenizer_decode(f->tok, pair, 2, true, &text, &n) == IFN_OK &&
                    tokenizer_decode(f->tok, pair, 1, true, &anchor, &na) == IFN_OK && na <= n &&
                    memcmp(text, anchor, na) == 0;
    free(anchor);
    ifn_error_clear();
    if (anchored) {
        memmove(text, text + na, n - na + 1);
        *len = n - na;
        return text;
    }
    free(text);
    text = NULL;
    if (tokenizer_decode(f->tok, &id, 1, true, &text, &n) != IFN_OK) {
        ifn_error_clear();
        return NULL;
    }
    *len = n;
    return text;
}

/* Chat's {"token", "logprob", "bytes"} members of one token. */
static void write_chat_token(json_writer *w, const char *text, size_t len, float lp)
{
    json_key(w, "token");
    json_string_n(w, text, len);
    json_key(w, "logprob");
    json_float(w, lp);
    json_key(w, "bytes");
    json_array_begin(w);
    for (size_t i = 0; i < len; i++) json_int(w, (unsigned char)text[i]);
    json_array_end(w);
}

static void write_chat(json_writer *w, const oa_logprobs_format *f, const oa_logprobs *l)
{
    json_object_begin(w);
    json_key(w, "content");
    json_array_begin(w);
    for (int t = 0; t < l->n; t++) {
        size_t len = 0;
        char *text = token_text(f, l->ids[t], &len);
        json_object_begin(w);
        write_chat_token(w, text ? text : "", len, l->lp[t]);
        free(text);
        json_key(w, "top_logprobs");
        json_array_begin(w);
        for (int i = 0; i < f->shown; i++) {
            const size_t at = (size_t)t * (size_t)f->k + (size_t)i;
            char *alt = token_text(f, l->top[at], &len);
            json_object_begin(w);
            write_chat_token(w, alt ? alt : "", alt ? len : 0, l->top_lp[at]);
            json_object_end(w);
            free(alt);
        }
        json_array_end(w);
        json_object_end(w);
    }
    json_array_end(w);
    json_object_end(w);
}

/* Completions' parallel arrays. */
static void write_completion(json_writer *w, const oa_logprobs_format *f, const oa_logprobs *l, size_t offset)
{
    json_object_begin(w);
    json_key(w, "tokens");
    json_array_begin(w);
    size_t *offsets = calloc((size_t)l->n + 1, sizeof *offsets);
    if (!offsets) w->failed = true;
    for (int t = 0; offsets && t < l->n; t++) {
        size_t len = 0;
        char *text = token_text(f, l->ids[t], &len);
        json_string_n(w, text ? text : "", text ? len : 0);
        offsets[t] = offset;
        offset += text ? len : 0;
        free(text);
    }
    json_array_end(w);
    json_key(w, "token_logprobs");
    json_array_begin(w);
    for (int t = 0; t < l->n; t++) json_float(w, l->lp[t]);
    json_array_end(w);
    json_key(w, "top_logprobs");
    json_array_begin(w);
    for (int t = 0; t < l->n; t++) {
        json_object_begin(w);
        for (int i = 0; i < f->shown; i++) {
            const size_t at = (size_t)t * (size_t)f->k + (size_t)i;
            size_t len = 0;
            char *alt = token_text(f, l->top[at], &len);
            char *key = alt ? realloc(alt, len + 1) : NULL; /* a key is a C string: up to a NUL */
            if (key) key[len] = '\0';
            json_key(w, key ? key : "");
            json_float(w, l->top_lp[at]);
            free(key ? key : alt);
        }
        json_object_end(w);
    }
    json_array_end(w);
    json_key(w, "text_offset");
    json_array_begin(w);
    for (int t = 0; offsets && t < l->n; t++) json_int(w, (int64_t)offsets[t]);
    json_array_end(w);
    json_object_end(w);
    free(offsets);
}

void oa_logprobs_write(json_writer *w, const oa_logprobs_format *f, const oa_logprobs *l, size_t offset)
{
    if (f->k == 0) json_null(w);
    else if (f->chat) write_chat(w, f, l);
    else write_completion(w, f, l, offset);
}
