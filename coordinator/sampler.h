/* Token sampling on rank 0: greedy, or repetition penalty → temperature → top-k → top-p →
 * min-p → a draw from a per-sequence seeded generator, so that a given seed reproduces the
 * same tokens whatever else runs beside it. */
#ifndef IFN_SAMPLER_H
#define IFN_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    float temperature;    /* 0 = greedy (argmax, lowest id on ties) */
    int top_k;            /* 0 = off */
    float top_p;          /* in (0, 1]; 1 = off */
    float min_p;          /* in [0, 1); 0 = off */
    float repeat_penalty; /* > 0; 1 = off. Positive logits are divided by it, negative multiplied */
    int repeat_last_n;    /* how many recent tokens the penalty looks at */
    uint64_t seed;
} sampler_params;

/* The defaults: greedy, no penalty. */
sampler_params sampler_params_default(void);

/* IFN_ERR_INVALID_ARG naming the first bad field ("temperature", "top_p", ...). */
ifn_status sampler_params_validate(const sampler_params *p);

typedef struct sampler sampler;

ifn_status sampler_create(const sampler_params *p, int vocab_size, sampler **out);
void sampler_destroy(sampler *s);

/* Picks the next token from logits [vocab] (which it modifies), given the tokens so far. */
int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, size_t n_history);

/* True if the sampler needs every logit: without a repetition penalty, greedy needs only the
 * argmax and top-k sampling only the top_k candidates. */
bool sampler_needs_full_logits(const sampler_params *p);

/* Picks the next token from the top_k candidates: ids[n] and their logits, sorted by logit
 * descending (lowest id first on ties). Gives exactly what sampler_sample gives on the full
 * logits when repeat_penalty is 1 and n >= top_k. */
int32_t sampler_sample_top(sampler *s, const int32_t *ids, const float *logits, int n);

/* The distribution a sampled draw comes from, for speculative decoding's rejection sampling:
 * n candidates, token ids[i] with probability p[i] / sum (the weights are left unnormalized so
 * that sampler_pick draws exactly what sampler_sample would). With top-k, top-p or min-p set,
 * the candidates come most likely first (lower id first on ties); with none of them they are
 * the whole vocabulary in id order, since a draw's distribution does not depend on the order
 * and sorting the vocabulary would cost more than the rest of sampling.
 * Only the candidates a truncation keeps are ever put in order (a heap selection), never the
 * vocabulary. Valid until the sampler's next call. */
typedef struct {
    int n;
    const int32_t *ids;
    const float *p;
    double sum;
} sampler_dist;

/* The distribution sampler_sample (temperature > 0) would draw from: repetition penalty,
 * temperature, top-k, top-p, min-p. Modifies logits. */
sampler_dist sampler_distribution(sampler *s, float *logits, const int32_t *history, size_t n_history);
/* The same from the top candidates (as sampler_sample_top). */
sampler_dist sampler_distribution_top(sampler *s, const int32_t *ids, const float *logits, int n);
/* One draw from d (one uniform number from the sequence's generator). */
int32_t sampler_pick(sampler *s, const sampler_dist *d);
/* The next uniform number in [0, 1) from the sequence's generator. */
double sampler_uniform(sampler *s);

#endif
