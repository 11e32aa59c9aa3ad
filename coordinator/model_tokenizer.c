#include "model_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ifn_status model_tokenizer_load(const model_file *mf, tokenizer **out)
{
    *out = NULL;
    tokenizer *t = NULL;
    switch (model_file_format(mf)) {
    case MODEL_FORMAT_GGUF:
        if (!gguf_has_key(model_file_gguf(mf), "tokenizer.ggml.model"))
            return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: the GGUF file has no tokenizer metadata", model_file_path(mf));
        CHECK(tokenizer_from_gguf(model_file_gguf(mf), &t));
        break;
    case MODEL_FORMAT_HF: {
        char json[4096], config[4096];
        snprintf(json, sizeof json, "%s/tokenizer.json", model_file_path(mf));
        snprintf(config, sizeof config, "%s/tokenizer_config.json", model_file_path(mf));
        if (access(json, F_OK) != 0)
            return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: the model directory has no tokenizer.json", model_file_path(mf));
        CHECK(tokenizer_from_json(json, access(config, F_OK) == 0 ? config : NULL, &t));
        break;
    }
    case MODEL_FORMAT_LLAMA2C:
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: llama2.c checkpoints carry no tokenizer", model_file_path(mf));
    }
    int vocab = model_file_config(mf)->vocab_size;
    if (tokenizer_vocab_size(t) > vocab) {
        int n = tokenizer_vocab_size(t);
        tokenizer_destroy(t);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model's embedding only %d",
                             model_file_path(mf), n, vocab);
    }
    *out = t;
    return IFN_OK;
}

/* The fill-in-the-middle conventions known, each as its three markers; a vocabulary that has
 * all three of one uses it. */
typedef struct {
    const char *marker[3]; /* prefix, suffix, middle */
    bool suffix_continues; /* the suffix is encoded without the "▁" prefix (Code Llama) */
} fim_style;

static const fim_style FIM_STYLES[] = {
    { { "<fim_prefix>", "<fim_suffix>", "<fim_middle>" }, false },                           /* StarCoder */
    { { "\xE2\x96\x81<PRE>", "\xE2\x96\x81<SUF>", "\xE2\x96\x81<MID>" }, true }, /* Code Llama */
};
enum { N_FIM_STYLES = sizeof FIM_STYLES / sizeof FIM_STYLES[0] };

/* The style the vocabulary has all three markers of, and their ids; else IFN_ERR_UNSUPPORTED
 * naming the first marker missing from the style it has most of (StarCoder's on a tie). */
static ifn_status fim_ids(const tokenizer *t, const fim_style **style, int32_t out[3])
{
    int best = 0, best_found = -1;
    for (int k = 0; k < N_FIM_STYLES; k++) {
        int found = 0;
        for (int i = 0; i < 3; i++) {
            out[i] = tokenizer_token_id(t, FIM_STYLES[k].marker[i], strlen(FIM_STYLES[k].marker[i]));
            found += out[i] >= 0;
        }
        if (found == 3) {
            *style = &FIM_STYLES[k];
            return IFN_OK;
        }
        if (found > best_found) {
            best = k;
            best_found = found;
        }
    }
    const fim_style *s = &FIM_STYLES[best];
    int missing = 0;
    while (tokenizer_token_id(t, s->marker[missing], strlen(s->marker[missing])) >= 0) missing++;
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "the vocabulary has no %s token, so the model cannot fill in the middle "
                         "(StarCoder-style models have <fim_prefix>, <fim_suffix> and <fim_middle>; Code Llama has "
                         "\xE2\x96\x81<PRE>, \xE2\x96\x81<SUF> and \xE2\x96\x81<MID>)", s->marker[missing]);
}

bool model_tokenizer_fim_supported(const tokenizer *t)
{
    const fim_style *style;
    int32_t ids[3];
    if (fim_ids(t, &style, ids) == IFN_OK) return true;
    ifn_error_clear();
    return false;
}

ifn_status model_tokenizer_encode_fim(const tokenizer *t, const char *prefix, size_t prefix_len, const char *suffix,
                                      size_t suffix_len, bool add_special, int32_t **ids, size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    const fim_style *style;
    int32_t fim[3];
    CHECK(fim_ids(t, &style, fim));
    int32_t *pre = NULL, *suf = NULL, *out = NULL;
    size_t n_pre = 0, n_suf = 0, n = 0;
    ifn_status st = IFN_OK;
    CHECK_GOTO(tokenizer_encode(t, prefix, prefix_len, false, false, &pre, &n_pre), st, done);
    if (style->suffix_continues) CHECK_GOTO(tokenizer_encode_continuation(t, suffix, suffix_len, &suf, &n_suf), st, done);
    else CHECK_GOTO(tokenizer_encode(t, suffix, suffix_len, false, false, &suf, &n_suf), st, done);
    out = malloc((n_pre + n_suf + 4) * sizeof *out);
    if (!out) {
        st = ifn_error_set(IFN_ERR_NOMEM, "no memory for a fill-in-the-middle prompt of %zu tokens", n_pre + n_suf + 4);
        goto done;
    }
    if (add_special && tokenizer_adds_bos(t)) out[n++] = tokenizer_bos(t);
    out[n++] = fim[0];
    if (n_pre) memcpy(out + n, pre, n_pre * sizeof *out);
    n += n_pre;
    out[n++] = fim[1];
    if (n_suf) memcpy(out + n, suf, n_suf * sizeof *out);
    n += n_suf;
    out[n++] = fim[2];
    *ids = out;
    *n_ids = n;
done:
    free(pre);
    free(suf);
    return st;
}
