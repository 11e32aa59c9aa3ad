/* Prints the distributions the sampler draws from, for test_sampler.py; or times it.
 *
 * stdin, one case per 3 lines:
 *   VOCAB TEMPERATURE TOP_K TOP_P MIN_P REPEAT_PENALTY REPEAT_LAST_N SEED
 *   the VOCAB logits
 *   N_HISTORY and the history's ids
 * stdout, per case: "full N id:p id:p ..." (sampler_distribution, p = weight / sum, %.9g),
 * then "draws" and 8 seeded draws of sampler_sample on the same logits; with top-k and no
 * penalty also "top N id:p ..." from sampler_distribution_top fed the 64 best logits sorted
 * (what the ranks return), which must equal the full one.
 *
 * sampler_dump --time VOCAB: microseconds per sampler_sample call over random logits for
 * pure temperature, top-k 40, top-p 0.9 and min-p 0.05, one line each. */
#define _GNU_SOURCE /* qsort_r */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "sampler.h"

#define TOP_N 64
#define DRAWS 8

static void print_dist(const char *label, const sampler_dist *d)
{
    printf("%s %d", label, d->n);
    for (int i = 0; i < d->n; i++) printf(" %d:%.9g", d->ids[i], d->p[i] / d->sum);
    putchar('\n');
}

static int by_logit_desc(const void *a, const void *b, void *logits)
{
    const float *l = logits;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (l[x] != l[y]) return l[x] < l[y] ? 1 : -1;
    return x - y;
}

/* The TOP_N best ids of logits, sorted as the ranks return them. */
static int top_ids(const float *logits, int vocab, int32_t *ids, float *vals)
{
    int32_t *all = malloc((size_t)vocab * sizeof *all);
    if (!all) return 0;
    for (int i = 0; i < vocab; i++) all[i] = i;
    qsort_r(all, (size_t)vocab, sizeof *all, by_logit_desc, (void *)logits);
    const int n = vocab < TOP_N ? vocab : TOP_N;
    for (int i = 0; i < n; i++) {
        ids[i] = all[i];
        vals[i] = logits[all[i]];
    }
    free(all);
    return n;
}

static int run_case(const sampler_params *p, int vocab, const float *logits, const int32_t *hist, int n_hist)
{
    sampler *s = NULL;
    float *work = malloc((size_t)vocab * sizeof *work);
    if (!work || sampler_create(p, vocab, &s) != IFN_OK) return 1;
    memcpy(work, logits, (size_t)vocab * sizeof *work);
    sampler_dist d = sampler_distribution(s, work, hist, (size_t)n_hist);
    print_dist("full", &d);
    printf("draws");
    for (int i = 0; i < DRAWS; i++) {
        memcpy(work, logits, (size_t)vocab * sizeof *work);
        printf(" %d", sampler_sample(s, work, hist, (size_t)n_hist));
    }
    putchar('\n');
    if (p->top_k > 0 && p->top_k <= TOP_N && p->repeat_penalty == 1.0f) {
        int32_t ids[TOP_N];
        float vals[TOP_N];
        const int n = top_ids(logits, vocab, ids, vals);
        d = sampler_distribution_top(s, ids, vals, n);
        print_dist("top", &d);
    }
    sampler_destroy(s);
    free(work);
    return 0;
}

static int time_sampler(int vocab)
{
    static const char *const names[] = { "temperature 0.8", "top-k 40", "top-p 0.9", "min-p 0.05" };
    float *logits = malloc((size_t)vocab * sizeof *logits), *work = malloc((size_t)vocab * sizeof *work);
    if (!logits || !work) return 1;
    srand(1);
    for (int i = 0; i < vocab; i++) /* a peaked distribution, like a trained model's */
        logits[i] = 8.0f * powf((float)rand() / (float)RAND_MAX, 6.0f) + (float)rand() / (float)RAND_MAX;
    for (int c = 0; c < 4; c++) {
        sampler_params p = sampler_params_default();
        p.temperature = 0.8f;
        p.top_k = c == 1 ? 40 : 0;
        p.top_p = c == 2 ? 0.9f : 1.0f;
        p.min_p = c == 3 ? 0.05f : 0.0f;
        sampler *s = NULL;
        if (sampler_create(&p, vocab, &s) != IFN_OK) return 1;
        const int calls = 2000;
        double best = INFINITY;
        for (int rep = 0; rep < 5; rep++) {
            const double t0 = ifn_seconds();
            for (int i = 0; i < calls; i++) {
                memcpy(work, logits, (size_t)vocab * sizeof *work);
                sampler_sample(s, work, NULL, 0);
            }
            const double us = (ifn_seconds() - t0) / calls * 1e6;
            if (us < best) best = us;
        }
        printf("%s: %.2f us per token (vocabulary %d)\n", names[c], best, vocab);
        sampler_destroy(s);
    }
    free(logits);
    free(work);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--time") == 0) return time_sampler(atoi(argv[2]));
    int vocab;
    sampler_params p = sampler_params_default();
    unsigned long long seed;
    while (scanf("%d %f %d %f %f %f %d %llu", &vocab, &p.temperature, &p.top_k, &p.top_p, &p.min_p, &p.repeat_penalty,
                 &p.repeat_last_n, &seed) == 8) {
        p.seed = seed;
        float *logits = malloc((size_t)vocab * sizeof *logits);
        int n_hist = 0;
        if (!logits) return 1;
        for (int i = 0; i < vocab; i++)
            if (scanf("%f", &logits[i]) != 1) return 2;
        if (scanf("%d", &n_hist) != 1 || n_hist < 0 || n_hist > 4096) return 2;
        int32_t hist[4096];
        for (int i = 0; i < n_hist; i++)
            if (scanf("%d", &hist[i]) != 1) return 2;
        if (run_case(&p, vocab, logits, hist, n_hist) != 0) return 1;
        free(logits);
    }
    return 0;
}
