/* The one set of defaults for what a generation request leaves unset, shared by every front:
 * `infernode generate`, the gRPC service (service.c) and the HTTP API (http_*.c), so that the
 * same prompt and options give the same tokens through each. docs/defaults.md lists them for
 * users.
 *
 * Sampling: sampler_params_default() (sampler.h): greedy (temperature 0; top-k, top-p, min-p
 * and the repetition penalty off), as infernode.proto's SamplingParams documents. Greedy
 * because a default should reproduce: an unset option gives the same answer every time on
 * every front, and speculative decoding keeps it exactly. Sampling is asked for with a
 * temperature (and a seed to repeat it). */
#ifndef IFN_REQUEST_DEFAULTS_H
#define IFN_REQUEST_DEFAULTS_H

#include <stdbool.h>

#include "ops.h"

/* BOS in front of a text or FIM prompt, as the model's tokenizer says (Generate, Tokenize, the
 * HTTP API, generate -p). */
#define IFN_DEFAULT_ADD_SPECIAL true
/* Special tokens typed in a prompt ("<s>", "<|endoftext|>") stay text: a user's text cannot
 * forge control tokens. Tokenize's parse_special and generate's --parse-special turn it on. */
#define IFN_DEFAULT_PARSE_SPECIAL false
/* How the KV cache stores K and V (serve and generate --kv-type; f32 is the exact reference). */
#define IFN_DEFAULT_KV_TYPE IFN_KV_F16
/* Tokens to generate when a client does not say (generate -n, infernode client -n). */
#define IFN_DEFAULT_MAX_NEW_TOKENS 64

#endif
