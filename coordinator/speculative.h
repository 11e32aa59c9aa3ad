/* The parts of speculative decoding that need no engine: prompt-lookup proposals, the
 * acceptance rule that keeps the target's distribution, how many tokens to propose, and the
 * check that a draft model speaks the target's vocabulary. The scheduler drives them. */
#ifndef IFN_SPECULATIVE_H
#define IFN_SPECULATIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "sampler.h"
#include "status.h"
#include "tokenizer.h"

/* Most tokens proposed in one step. */
#define SPEC_MAX_DRAFT 16
/* Prompt lookup matches the last SPEC_NGRAM_MAX .. 1 tokens, longest first. */
#define SPEC_NGRAM_MAX 4

/* Prompt lookup: finds the most recent earlier occurrence of the last n tokens of hist[n_hist]
 * (n from SPEC_NGRAM_MAX down to 1, the first n that matches) and copies the up to k tokens
 * that followed it into out. Returns how many (0: no match). */
int spec_ngram_propose(const int32_t *hist, int n_hist, int k, int32_t *out);

/* Verifies one proposed token t against p, the target's distribution at t's position; the
 * token returned is distributed exactly as p either way, and *accepted says whether it is t.
 * q is the draft's distribution as a dense [vocab] array of probabilities: rejection sampling
 * (Leviathan et al. 2023; Chen et al. 2023) accepts t with probability min(1, p(t) / q(t)),
 * else draws a replacement from max(0, p - q) renormalized (one or two uniform numbers of s's
 * generator). q NULL is a certain proposal (prompt lookup's): one draw from p, as plain
 * sampling makes it, accepted if it is t. That accepts with the same probability p(t) as
 * rejection sampling would, and spends exactly one uniform number per token, so a seeded
 * request gets the very tokens plain decoding gives it, whatever K is. */
int32_t spec_verify_token(sampler *s, const sampler_dist *p, int32_t t, const float *q, bool *accepted);

/* The number of tokens to propose, 0..k_max: the k that maximizes the expected tokens per
 * unit of time, (1 - a^(k+1)) / (1 - a) tokens for step_cost[k] time, where a is the chance
 * that a proposal is accepted and step_cost[k] the time of a step that proposes k tokens
 * (drafting them and verifying 1 + k) relative to a plain decode step (step_cost[0] = 1). */
int spec_choose_k(double a, const double *step_cost, int k_max);

/* The draft model must share the target's vocabulary: the same size and, when both files
 * carry a tokenizer, the same bytes for every token and the same BOS and EOS. A mismatch is
 * IFN_ERR_INVALID_ARG naming the first difference. */
ifn_status spec_check_vocab(const engine *target, const tokenizer *target_tok, const engine *draft);

#endif
