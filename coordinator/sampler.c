#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct {
    int32_t id;
    float p; /* logit, then probability */
} candidate;

struct sampler {
    sampler_params p;
    int vocab;
    uint64_t rng;
    candidate *cand; /* [vocab] */
    int32_t *dist_ids; /* [vocab] the last distribution (sampler_dist) */
    float *dist_p;     /* [vocab] */
};

sampler_params sampler_params_default(void)
{
    return (sampler_params){ .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                             .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0 };
}

ifn_status sampler_params_validate(const sampler_params *p)
{
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "temperature must be a finite number >= 0 (got %g)", p->temperature);
    if (p->top_k < 0) return ifn_error_set(IFN_ERR_INVALID_ARG, "top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "top_p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p < 1.0f))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "min_p must be in [0, 1) (got %g)", p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "repeat_penalty must be a finite number > 0 (got %g)", p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "repeat_last_n must be >= 0 (got %d)", p->repeat_last_n);
    return IFN_OK;
}

ifn_status sampler_create(const sampler_params *p, int vocab_size, sampler **out)
{
    *out = NULL;
    CHECK(sampler_params_validate(p));
    sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
        s->dist_ids = malloc((size_t)vocab_size * sizeof *s->dist_ids);
        s->dist_p = malloc((size_t)vocab_size * sizeof *s->dist_p);
    }
    if (!s || !s->cand || !s->dist_ids || !s->dist_p) {
        sampler_destroy(s);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for a sampler");
    }
    s->p = *p;
    s->vocab = vocab_size;
    s->rng = p->seed;
    *out = s;
    return IFN_OK;
}

void sampler_destroy(sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s->dist_ids);
    free(s->dist_p);
    free(s);
}

/* splitmix64: small state, good statistics, and a stream fully determined by the seed. */
double sampler_uniform(sampler *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_p_desc(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

static int32_t argmax(const float *logits, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* The candidates s->cand[0..n) hold logits sorted descending: temperature, top-k, softmax,
 * top-p, min-p. Returns how many candidates are kept; *sum is their weights' sum. */
static int truncate(sampler *s, int n, double *sum_out)
{
    const sampler_params *p = &s->p;
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    double sum = 0.0;
    float max = s->cand[0].p / p->temperature;
    for (int i = 0; i < n; i++) {
        s->cand[i].p = expf(s->cand[i].p / p->temperature - max);
        sum += s->cand[i].p;
    }
    for (int i = 0; i < n; i++) s->cand[i].p = (float)(s->cand[i].p / sum);

    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += s->cand[i].p;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float floor_p = p->min_p * s->cand[0].p;
        int keep = 1;
        while (keep < n && s->cand[keep].p >= floor_p) keep++;
        n = keep;
    }

    sum = 0.0;
    for (int i = 0; i < n; i++) sum += s->cand[i].p;
    *sum_out = sum;
    return n;
}

/* The repetition penalty on logits. */
static void penalize(sampler *s, float *logits, const int32_t *history, size_t n_history)
{
    const sampler_params *p = &s->p;
    if (p->repeat_penalty != 1.0f) {
        size_t from = n_history > (size_t)p->repeat_last_n ? n_history - (size_t)p->repeat_last_n : 0;
        /* Each distinct token is penalised once, however often it occurs. */
        for (size_t i = from; i < n_history; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= s->vocab) continue;
            bool seen = false;
            for (size_t j = from; j < i && !seen; j++) seen = history[j] == t;
            if (seen) continue;
            logits[t] = logits[t] > 0 ? logits[t] / p->repeat_penalty : logits[t] * p->repeat_penalty;
        }
    }
}

/* Every logit into s->cand, sorted descending (lowest id first on ties). */
static void sort_all(sampler *s, const float *logits)
{
    for (int i = 0; i < s->vocab; i++) s->cand[i] = (candidate){ .id = i, .p = logits[i] };
    qsort(s->cand, (size_t)s->vocab, sizeof *s->cand, by_p_desc);
}

/* The first n candidates as a sampler_dist. */
static sampler_dist export_dist(sampler *s, int n, double sum)
{
    for (int i = 0; i < n; i++) {
        s->dist_ids[i] = s->cand[i].id;
        s->dist_p[i] = s->cand[i].p;
    }
    return (sampler_dist){ .n = n, .ids = s->dist_ids, .p = s->dist_p, .sum = sum };
}

int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, size_t n_history)
{
    if (s->p.temperature != 0.0f) {
        sampler_dist d = sampler_distribution(s, logits, history, n_history);
        return sampler_pick(s, &d);
    }
    penalize(s, logits, history, n_history);
    return argmax(logits, s->vocab);
}

bool sampler_needs_full_logits(const sampler_params *p)
{
    return p->repeat_penalty != 1.0f || (p->temperature != 0.0f && p->top_k == 0);
}

/* The top candidates into s->cand (at most vocab). */
static int take_top(sampler *s, const int32_t *ids, const float *logits, int n)
{
    if (n > s->vocab) n = s->vocab;
    for (int i = 0; i < n; i++) s->cand[i] = (candidate){ .id = ids[i], .p = logits[i] };
    return n;
}

int32_t sampler_sample_top(sampler *s, const int32_t *ids, const float *logits, int n)
{
    if (s->p.temperature == 0.0f) return ids[0];
    sampler_dist d = sampler_distribution_top(s, ids, logits, n);
    return sampler_pick(s, &d);
}

sampler_dist sampler_distribution(sampler *s, float *logits, const int32_t *history, size_t n_history)
{
    penalize(s, logits, history, n_history);
    sort_all(s, logits);
    double sum;
    int n = truncate(s, s->vocab, &sum);
    return export_dist(s, n, sum);
}

sampler_dist sampler_distribution_top(sampler *s, const int32_t *ids, const float *logits, int n)
{
    double sum;
    n = truncate(s, take_top(s, ids, logits, n), &sum);
    return export_dist(s, n, sum);
}

int32_t sampler_pick(sampler *s, const sampler_dist *d)
{
    double r = sampler_uniform(s) * d->sum, acc = 0.0;
    for (int i = 0; i < d->n; i++) {
        acc += d->p[i];
        if (r < acc) return d->ids[i];
    }
    return d->ids[d->n - 1];
}
