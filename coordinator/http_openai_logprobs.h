/* Log-probabilities in OpenAI's two shapes (internal to http_openai*.c): completions'
 * {"tokens", "token_logprobs", "top_logprobs", "text_offset"} and chat's
 * {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}, from the scheduler's per-token
 * values (sched_event.logprobs). */
#ifndef IFN_HTTP_OPENAI_LOGPROBS_H
#define IFN_HTTP_OPENAI_LOGPROBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json_writer.h"
#include "tokenizer.h"

/* Generated tokens with their values: k alternatives per token. */
typedef struct {
    int n;
    int32_t *ids;   /* [n] */
    float *lp;      /* [n] */
    int32_t *top;   /* [n][k] */
    float *top_lp;  /* [n][k] */
} oa_logprobs;

/* Appends n tokens; false when out of memory (l unchanged but possibly with more room). */
bool oa_logprobs_append(oa_logprobs *l, int k, const int32_t *ids, const float *lp, const int32_t *top,
                        const float *top_lp, int n);
void oa_logprobs_free(oa_logprobs *l);

/* What writing needs: the tokenizer for the tokens' texts (NULL: ids as text), the stored
 * alternatives per token k, and how many of them to show. */
typedef struct {
    const tokenizer *tok;
    int32_t anchor; /* a token that renders text, decoded before each one (-1: none) */
    int k, shown;
    bool chat;
} oa_logprobs_format;

oa_logprobs_format oa_logprobs_format_of(const tokenizer *tok, int k, int shown, bool chat);
/* The "logprobs" member's value for l; offset is where the tokens' text starts in the
 * choice's text (completions' text_offset). */
void oa_logprobs_write(json_writer *w, const oa_logprobs_format *f, const oa_logprobs *l, size_t offset);

#endif
