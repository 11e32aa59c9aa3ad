/* RoPE scaling metadata, the one rule of the GGUF and Hugging Face loaders (docs/formats.md,
 * "RoPE scaling"): what each key means, what is implemented, and the refusal of the rest. */
#include "model_file_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Every key name either loader may pass; anything else changes the math in a way infernode does
 * not know, and is refused. */
static const char *const known_keys[] = {
    "type", "rope_type", "factor", "original_max_position_embeddings", "original_context_length",
    "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "yarn_beta_fast", "yarn_beta_slow",
    "attention_factor", "attn_factor", "mscale", "mscale_all_dim", "truncate", "finetuned", "yarn_ext_factor",
    "yarn_log_multiplier", "yarn_attn_factor",
};

static const rope_scaling_key *find(const rope_scaling_key *keys, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

/* The first of two aliases present (HF and GGUF spell some keys differently). */
static const rope_scaling_key *find2(const rope_scaling_key *keys, size_t n, const char *a, const char *b)
{
    const rope_scaling_key *k = find(keys, n, a);
    return k ? k : find(keys, n, b);
}

static ifn_status refuse(const model_file *mf, const rope_scaling_key *k, const char *why)
{
    char val[96];
    if (k->str) snprintf(val, sizeof val, "\"%.64s\"", k->str);
    else snprintf(val, sizeof val, "%g", k->num);
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: RoPE scaling key '%s' = %s is not implemented (%s)", mf->path,
                         k->file_key, val, why);
}

/* A numeric key's value, or dflt when absent; refused unless lo < value (finite). */
static ifn_status number(const model_file *mf, const rope_scaling_key *k, double dflt, double lo, double *out)
{
    *out = dflt;
    if (!k) return IFN_OK;
    if (k->str || !isfinite(k->num) || !(k->num > lo)) return refuse(mf, k, "expected a number above the minimum");
    *out = k->num;
    return IFN_OK;
}

/* YaRN's default magnitude: 0.1 m ln(factor) + 1 (1 for factor <= 1). */
static double yarn_mscale(double factor, double m)
{
    return factor <= 1.0 ? 1.0 : 0.1 * m * log(factor) + 1.0;
}

static ifn_status scaling_kind(model_file *mf, const rope_scaling_key *keys, size_t n, bool gguf,
                               ifn_rope_scaling_kind *kind)
{
    const rope_scaling_key *t = find2(keys, n, "rope_type", "type"), *f = find(keys, n, "factor");
    if (!t) {
        /* llama.cpp reads a factor without a type as linear */
        *kind = gguf && f && !f->str && f->num != 0.0 && f->num != 1.0 ? IFN_ROPE_SCALING_LINEAR
                                                                           : IFN_ROPE_SCALING_NONE;
        return IFN_OK;
    }
    if (!t->str) return refuse(mf, t, "expected a string");
    static const struct { const char *name; ifn_rope_scaling_kind kind; } types[] = {
        { "none", IFN_ROPE_SCALING_NONE },     { "default", IFN_ROPE_SCALING_NONE },
        { "linear", IFN_ROPE_SCALING_LINEAR }, { "llama3", IFN_ROPE_SCALING_LLAMA3 },
        { "yarn", IFN_ROPE_SCALING_YARN },
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(t->str, types[i].name) == 0) {
            *kind = types[i].kind;
            return IFN_OK;
        }
    return refuse(mf, t, "implemented: none, default, linear, llama3, yarn");
}

/* YaRN's ramp and magnitude; refuses the variants of the published formula it does not run. */
static ifn_status yarn_params(model_file *mf, const rope_scaling_key *keys, size_t n, bool gguf, ifn_rope_scaling *sc)
{
    const rope_scaling_key *k;
    if ((k = find(keys, n, "truncate")) && (k->str || k->num == 0.0)) return refuse(mf, k, "only truncate = true");
    if ((k = find(keys, n, "yarn_ext_factor")) && (k->str || k->num != 1.0)) return refuse(mf, k, "only 1");
    if ((k = find(keys, n, "yarn_attn_factor")) && (k->str || k->num != 1.0)) return refuse(mf, k, "only 1");
    if ((k = find(keys, n, "yarn_log_multiplier")) && (k->str || k->num != 0.0)) return refuse(mf, k, "only 0");
    double fast, slow, attn, ms, ms_all;
    CHECK(number(mf, find2(keys, n, "beta_fast", "yarn_beta_fast"), 32.0, 0.0, &fast));
    CHECK(number(mf, find2(keys, n, "beta_slow", "yarn_beta_slow"), 1.0, 0.0, &slow));
    sc->beta_fast = (float)fast;
    sc->beta_slow = (float)slow;
    if (gguf) { /* ggml: attn_factor times the default magnitude */
        CHECK(number(mf, find(keys, n, "attn_factor"), 1.0, 0.0, &attn));
        sc->attn_factor = (float)(attn * yarn_mscale(sc->factor, 1.0));
        return IFN_OK;
    }
    /* transformers 4.48+ take factor = max_position_embeddings / original_max_position_embeddings
     * when the latter is given, older ones the "factor" key: run only files where both agree */
    if ((k = find(keys, n, "original_max_position_embeddings")) && fabs((double)mf->cfg.ctx_len / k->num - sc->factor) > 1e-6)
        return refuse(mf, k, "max_position_embeddings / original_max_position_embeddings must equal factor");
    CHECK(number(mf, find(keys, n, "mscale"), 0.0, -INFINITY, &ms));
    CHECK(number(mf, find(keys, n, "mscale_all_dim"), 0.0, -INFINITY, &ms_all));
    attn = ms != 0.0 && ms_all != 0.0 ? yarn_mscale(sc->factor, ms) / yarn_mscale(sc->factor, ms_all)
                                      : yarn_mscale(sc->factor, 1.0);
    CHECK(number(mf, find(keys, n, "attention_factor"), attn, 0.0, &attn));
    sc->attn_factor = (float)attn;
    return IFN_OK;
}

ifn_status model_file_rope_scaling(model_file *mf, const rope_scaling_key *keys, size_t n, bool gguf)
{
    ifn_rope_scaling *sc = &mf->cfg.rope_scaling;
    *sc = (ifn_rope_scaling){ .kind = IFN_ROPE_SCALING_NONE, .factor = 1.0f, .attn_factor = 1.0f };
    CHECK(scaling_kind(mf, keys, n, gguf, &sc->kind));
    for (size_t i = 0; i < n; i++) {
        bool known = false;
        for (size_t j = 0; j < sizeof known_keys / sizeof known_keys[0] && !known; j++)
            known = strcmp(keys[i].name, known_keys[j]) == 0;
        if (!known) return refuse(mf, &keys[i], "an unknown RoPE scaling key");
    }
    const rope_scaling_key *f = find(keys, n, "factor");
    double factor, orig, attn;
    CHECK(number(mf, f && gguf && !f->str && f->num == 0.0 ? NULL : f, 1.0, 0.0, &factor)); /* GGUF: 0 means 1 */
    if (sc->kind == IFN_ROPE_SCALING_NONE && factor != 1.0) return refuse(mf, f, "a factor without a scaling type");
    if (sc->kind != IFN_ROPE_SCALING_NONE && !f && !gguf) return ifn_error_set(IFN_ERR_FORMAT,
        "%s: RoPE scaling type %s needs the key 'factor'", mf->path, ifn_rope_scaling_name(sc->kind));
    sc->factor = (float)factor;
    CHECK(number(mf, find2(keys, n, "original_max_position_embeddings", "original_context_length"), mf->cfg.ctx_len,
                 0.0, &orig));
    if (orig > (1 << 30)) return refuse(mf, find2(keys, n, "original_max_position_embeddings",
                                                  "original_context_length"), "implausible context");
    sc->orig_ctx = (int)orig;
    if (gguf && sc->kind != IFN_ROPE_SCALING_YARN) { /* ggml scales cos and sin by attn_factor whatever the type */
        CHECK(number(mf, find(keys, n, "attn_factor"), 1.0, 0.0, &attn));
        sc->attn_factor = (float)attn;
    }
    if (sc->kind == IFN_ROPE_SCALING_LLAMA3) {
        double lo, hi;
        CHECK(number(mf, find(keys, n, "low_freq_factor"), 1.0, 0.0, &lo));
        CHECK(number(mf, find(keys, n, "high_freq_factor"), 4.0, lo, &hi));
        sc->low_freq_factor = (float)lo;
        sc->high_freq_factor = (float)hi;
    }
    if (sc->kind == IFN_ROPE_SCALING_YARN) CHECK(yarn_params(mf, keys, n, gguf, sc));
    return IFN_OK;
}
