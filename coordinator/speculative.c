#include "speculative.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_tokenizer.h"

int spec_ngram_propose(const int32_t *hist, int n_hist, int k, int32_t *out)
{
    for (int n = SPEC_NGRAM_MAX; n >= 1; n--) {
        if (n >= n_hist) continue;
        const int32_t *tail = hist + n_hist - n;
        /* the most recent occurrence that ends before the tail does and has a continuation */
        for (int at = n_hist - n - 1; at >= 0; at--) {
            if (memcmp(hist + at, tail, (size_t)n * sizeof *hist) != 0) continue;
            int from = at + n, m = n_hist - from < k ? n_hist - from : k;
            memcpy(out, hist + from, (size_t)m * sizeof *out);
            return m;
        }
    }
    return 0;
}

/* p(t) of a sampler_dist (0 outside its candidates). */
static double prob_of(const sampler_dist *p, int32_t t)
{
    for (int i = 0; i < p->n; i++)
        if (p->ids[i] == t) return p->p[i] / p->sum;
    return 0.0;
}

/* The residual max(0, p - q) at p's i-th candidate. */
static double residual(const sampler_dist *p, int i, const float *q)
{
    const double r = p->p[i] / p->sum - q[p->ids[i]];
    return r > 0.0 ? r : 0.0;
}

int32_t spec_verify_token(sampler *s, const sampler_dist *p, int32_t t, const float *q, bool *accepted)
{
    if (!q) { /* a certain proposal: draw as plain sampling does, and compare */
        const int32_t x = sampler_pick(s, p);
        *accepted = x == t;
        return x;
    }
    const double pt = prob_of(p, t), qt = q[t];
    *accepted = qt > 0.0 && sampler_uniform(s) * qt < pt;
    if (*accepted) return t;
    /* the residual max(0, p - q); only p's candidates can have mass there */
    double total = 0.0;
    for (int i = 0; i < p->n; i++) total += residual(p, i, q);
    if (!(total > 0.0)) return sampler_pick(s, p); /* p == q up to rounding: any draw from p */
    const double u = sampler_uniform(s) * total;
    double acc = 0.0;
    int32_t last = p->ids[0];
    for (int i = 0; i < p->n; i++) {
        const double r = residual(p, i, q);
        if (r == 0.0) continue;
        acc += r;
        last = p->ids[i];
        if (u < acc) return last;
    }
    return last;
}

int spec_choose_k(double a, const double *step_cost, int k_max)
{
    if (a > 0.999) a = 0.999;
    if (a < 0.0) a = 0.0;
    int best = 0;
    double best_rate = 1.0; /* k = 0: one token per decode step */
    for (int k = 1; k <= k_max; k++) {
        const double tokens = (1.0 - pow(a, k + 1)) / (1.0 - a), rate = tokens / step_cost[k];
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

/* Token id's text (special tokens rendered), malloc'd; NULL if it does not decode. */
static char *token_text(const tokenizer *t, int32_t id, size_t *len)
{
    char *text = NULL;
    if (tokenizer_decode(t, &id, 1, true, &text, len) != IFN_OK) {
        ifn_error_clear();
        return NULL;
    }
    return text;
}

ifn_status spec_check_vocab(const engine *target, const tokenizer *target_tok, const engine *draft)
{
    const int32_t nv = engine_config(target)->vocab_size, nd = engine_config(draft)->vocab_size;
    if (nv != nd)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "its vocabulary has %d tokens, the target's %d: a draft "
                             "must share the target's tokenizer", nd, nv);
    if (!target_tok || !engine_model_file(draft)) return IFN_OK;
    tokenizer *dt = NULL;
    ifn_status st = model_tokenizer_load(engine_model_file(draft), &dt);
    if (st == IFN_ERR_NOT_FOUND) {
        ifn_error_clear(); /* a draft without a tokenizer: the sizes agree, ids are all it sees */
        return IFN_OK;
    }
    CHECK(st);
    if (tokenizer_bos(dt) != tokenizer_bos(target_tok) || tokenizer_eos(dt) != tokenizer_eos(target_tok)) {
        st = ifn_error_set(IFN_ERR_INVALID_ARG, "its BOS/EOS ids are %d/%d, the target's %d/%d",
                           tokenizer_bos(dt), tokenizer_eos(dt), tokenizer_bos(target_tok), tokenizer_eos(target_tok));
        tokenizer_destroy(dt);
        return st;
    }
    for (int32_t id = 0; st == IFN_OK && id < nv; id++) {
        size_t lt = 0, ld = 0;
        char *tt = token_text(target_tok, id, &lt), *td = token_text(dt, id, &ld);
        if (!tt != !td || (tt && (lt != ld || memcmp(tt, td, lt) != 0)))
            st = ifn_error_set(IFN_ERR_INVALID_ARG, "token %d is '%.*s' in the draft, '%.*s' in the "
                               "target: a draft must share the target's tokenizer", (int)id, td ? (int)(ld > 40 ? 40 : ld) : 0,
                               td ? td : "", tt ? (int)(lt > 40 ? 40 : lt) : 0, tt ? tt : "");
        free(tt);
        free(td);
    }
    tokenizer_destroy(dt);
    return st;
}
