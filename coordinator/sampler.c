#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* The candidates' order: more likely first, the lower id first on ties (a total order, so any
 * selection by it keeps exactly the candidates a full sort would put first). */
static bool before(candidate a, candidate b)
{
    return a.p > b.p || (a.p == b.p && a.id < b.id);
}

static int32_t argmax(const float *logits, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* Restores heap order below node i of h[0..n): `top_first` puts the first candidate in the
 * order at the root (popping gives them in order), else the last (the worst of a kept set). */
static void sift_down(candidate *h, int n, int i, bool top_first)
{
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && before(h[c + 1], h[c]) == top_first) c++;
        if (before(h[c], h[i]) != top_first) return;
        const candidate t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

/* Moves the k first candidates of c[0..n) in the order to c[0..k), sorted: a heap of the k
 * best seen so far with the worst at its root, O(n log k) instead of sorting all n. */
static void select_top(candidate *c, int n, int k)
{
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i, false);
    for (int i = k; i < n; i++)
        if (before(c[i], c[0])) {
            c[0] = c[i];
            sift_down(c, k, 0, false);
        }
    qsort(c, (size_t)k, sizeof *c, by_p_desc);
}

/* Temperature and softmax over c[0..n): logits in, probabilities out; max is the largest logit. */
static void softmax(candidate *c, int n, float max, float temperature)
{
    double sum = 0.0;
    const float m = max / temperature;
    for (int i = 0; i < n; i++) {
        c[i].p = expf(c[i].p / temperature - m);
        sum += c[i].p;
    }
    for (int i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

/* Top-p, then min-p, on n probabilities sorted in the order. Returns how many are kept. */
static int truncate_sorted(const sampler_params *p, const candidate *c, int n)
{
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        const float floor_p = p->min_p * c[0].p;
        int keep = 1;
        while (keep < n && c[keep].p >= floor_p) keep++;
        n = keep;
    }
    return n;
}

/* The first n candidates as a sampler_dist. */
static sampler_dist export_dist(sampler *s, int n)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        s->dist_ids[i] = s->cand[i].id;
        s->dist_p[i] = s->cand[i].p;
        sum += s->cand[i].p;
    }
    return (sampler_dist){ .n = n, .ids = s->dist_ids, .p = s->dist_p, .sum = sum };
}

/* The distribution from c[0..n) (logits, sorted in the order): temperature, softmax, top-p,
 * min-p. */
static sampler_dist from_sorted(sampler *s, int n)
{
    softmax(s->cand, n, s->cand[0].p, s->p.temperature);
    n = truncate_sorted(&s->p, s->cand, n);
    return export_dist(s, n);
}

/* The first n probabilities of s->cand[0..vocab) in the order into s->cand[0..n), sorted: top-p
 * pops them from a heap of all until their mass reaches top_p (O(vocab + n log vocab)); else
 * min-p's floor selects them in one pass and only they are sorted. */
static int order_head(sampler *s)
{
    candidate *c = s->cand;
    const int v = s->vocab;
    if (s->p.top_p < 1.0f) {
        for (int i = v / 2 - 1; i >= 0; i--) sift_down(c, v, i, true);
        double cum = 0.0;
        int n = 0;
        while (n < v && cum < s->p.top_p) { /* c[v - n - 1 ..] collects the popped, best last */
            const candidate t = c[0];
            c[0] = c[v - n - 1];
            c[v - n - 1] = t;
            cum += t.p;
            n++;
            sift_down(c, v - n, 0, true);
        }
        for (int i = v - n, j = v - 1; i < j; i++, j--) { /* best first, then to the front */
            const candidate t = c[i];
            c[i] = c[j];
            c[j] = t;
        }
        memmove(c, c + v - n, (size_t)n * sizeof *c);
        return n;
    }
    float top = c[0].p;
    for (int i = 1; i < v; i++)
        if (c[i].p > top) top = c[i].p;
    const float floor_p = s->p.min_p * top;
    int n = 0;
    for (int i = 0; i < v; i++)
        if (c[i].p >= floor_p) c[n++] = c[i];
    qsort(c, (size_t)n, sizeof *c, by_p_desc);
    return n;
}

/* Without top-k: the softmax over the whole vocabulary, then only the candidates that top-p
 * and min-p can keep are put in order. Without any truncation nothing is sorted: the
 * distribution is the whole vocabulary in id order. */
static sampler_dist from_all(sampler *s, const float *logits)
{
    const int v = s->vocab;
    float max = logits[0];
    for (int i = 0; i < v; i++) {
        s->cand[i] = (candidate){ .id = i, .p = logits[i] };
        if (logits[i] > max) max = logits[i];
    }
    softmax(s->cand, v, max, s->p.temperature);
    int n = v;
    if (s->p.top_p < 1.0f || s->p.min_p > 0.0f) n = truncate_sorted(&s->p, s->cand, order_head(s));
    return export_dist(s, n);
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
    if (s->p.top_k == 0) return from_all(s, logits);
    const int k = s->p.top_k < s->vocab ? s->p.top_k : s->vocab;
    for (int i = 0; i < s->vocab; i++) s->cand[i] = (candidate){ .id = i, .p = logits[i] };
    select_top(s->cand, s->vocab, k);
    return from_sorted(s, k);
}

sampler_dist sampler_distribution_top(sampler *s, const int32_t *ids, const float *logits, int n)
{
    n = take_top(s, ids, logits, n);
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
    return from_sorted(s, n);
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
