/* The cost model that chooses how many tokens to propose: a forward step's time from the
 * model's shapes and the machine's profile, with no timing of the models themselves, so that
 * the same model, options and machine give the same K at every start.
 *
 * A step of n tokens on one rank costs
 *     regions x region_us  +  max(W / bandwidth(W),  n x F / gflops)
 * W the rank's weight bytes (each step streams them once: the kernels read a weight block
 * once for every row of a step of up to 8 rows), bandwidth(W) the machine's read bandwidth for
 * a working set of W (so a model that fits the caches reads at cache speed), F the rank's
 * FLOPs per token (2 per weight, the output head included: verification needs a row per
 * token), gflops the f16 kernel's rate at verification's row counts, and the fixed part the
 * forward pass's parallel regions (about SPEC_COST_REGIONS_PER_LAYER per layer) each paying a
 * fork and join. Attention over the cache (contexts of a few hundred positions cost well under
 * a percent of the weights' FLOPs here) and the all-reduces of several ranks are left out. */
#ifndef IFN_SPEC_COST_H
#define IFN_SPEC_COST_H

#include "engine.h"
#include "machine_profile.h"

/* Parallel regions a layer's forward pass opens: 7 matrix products, 2 norms, RoPE on Q and K,
 * attention, the activation and the 2 residual adds, with some spare for activation
 * preparation. */
#define SPEC_COST_REGIONS_PER_LAYER 16

typedef struct {
    double weight_bytes;    /* one rank's, streamed by every step */
    double flops_per_token; /* one rank's */
    int regions;            /* parallel regions per step */
} spec_cost_shape;

/* The shape of engine e's step on one rank, from its configuration and packed weights. */
spec_cost_shape spec_cost_shape_of(const engine *e);

/* Seconds of a step of n tokens of a model of shape m on machine p. */
double spec_cost_step(const machine_profile *p, const spec_cost_shape *m, int n);

#endif
