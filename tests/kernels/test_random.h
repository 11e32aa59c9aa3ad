/* Deterministic random numbers for the kernel tests: xorshift64 and Box-Muller normals. Each
 * test keeps its own state, seeded differently, so its cases do not depend on another's. */
#ifndef IFN_TEST_RANDOM_H
#define IFN_TEST_RANDOM_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t state; /* nonzero */
} test_rng;

/* Uniform in [0, 1). */
static inline double test_uniform(test_rng *r)
{
    r->state ^= r->state << 13;
    r->state ^= r->state >> 7;
    r->state ^= r->state << 17;
    return (double)(r->state >> 11) / 9007199254740992.0;
}

/* Standard normal. */
static inline float test_gauss(test_rng *r)
{
    double u1 = test_uniform(r) + 1e-12, u2 = test_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
