#include "model_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "tokenizer_internal.h"

#define KEY_CHAT_TEMPLATE "tokenizer.chat_template"
#define MAX_JINJA_FILE (1 << 20)

/* A copy of s[0..len), or NULL (IFN_ERR_NOMEM set). */
static ifn_status copy_text(const char *what, const char *s, size_t len, char **out)
{
    *out = strndup(s, len);
    return *out ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for the chat template", what);
}

/* tokenizer_config.json's chat_template: a string, or a list of {"name", "template"} of which
 * the one named "default" is taken (none: *out stays NULL). */
static ifn_status config_chat_template(const char *path, char **out)
{
    json_value *cfg = NULL;
    CHECK(json_parse_file(path, &cfg));
    ifn_status st = IFN_OK;
    const json_value *ct = json_get(cfg, "chat_template");
    if (!ct || ct->kind == JSON_NULL) goto done;
    if (ct->kind == JSON_STRING) {
        st = copy_text(path, ct->u.string.ptr, ct->u.string.len, out);
        goto done;
    }
    if (ct->kind != JSON_ARRAY) {
        st = ifn_error_set(IFN_ERR_FORMAT, "%s: chat_template is %s, not a string or a list of {name, template}",
                           path, json_kind_name(ct->kind));
        goto done;
    }
    for (size_t i = 0; i < ct->u.array.n; i++) {
        const json_value *e = &ct->u.array.items[i];
        const char *name = json_get_string(e, "name");
        const json_value *tmpl = json_get(e, "template");
        if (!name || strcmp(name, "default") != 0) continue;
        if (!tmpl || tmpl->kind != JSON_STRING) {
            st = ifn_error_set(IFN_ERR_FORMAT, "%s: chat_template[%zu].template is not a string", path, i);
            goto done;
        }
        st = copy_text(path, tmpl->u.string.ptr, tmpl->u.string.len, out);
        goto done;
    }
done:
    json_free(cfg);
    return st;
}

/* A whole chat_template.jinja (newer Hugging Face models keep the template there). */
static ifn_status jinja_file(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ifn_error_set(IFN_ERR_IO, "%s: cannot open", path);
    char *text = malloc(MAX_JINJA_FILE + 1);
    size_t n = text ? fread(text, 1, MAX_JINJA_FILE + 1, f) : 0;
    bool bad = text && (ferror(f) || n > MAX_JINJA_FILE);
    fclose(f);
    if (!text) return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory for the chat template", path);
    if (bad) {
        free(text);
        return ifn_error_set(IFN_ERR_IO, "%s: cannot be read, or is over %d bytes", path, MAX_JINJA_FILE);
    }
    text[n] = '\0';
    *out = text;
    return IFN_OK;
}

/* The model file's chat template source into *out (NULL if it has none). */
static ifn_status read_chat_template(const model_file *mf, char **out)
{
    *out = NULL;
    char path[4096];
    switch (model_file_format(mf)) {
    case MODEL_FORMAT_GGUF: {
        const gguf_file *f = model_file_gguf(mf);
        if (!gguf_has_key(f, KEY_CHAT_TEMPLATE)) return IFN_OK;
        gguf_str s;
        CHECK(gguf_get_str(f, KEY_CHAT_TEMPLATE, &s));
        return copy_text(model_file_path(mf), s.ptr, s.len, out);
    }
    case MODEL_FORMAT_HF:
        snprintf(path, sizeof path, "%s/tokenizer_config.json", model_file_path(mf));
        if (access(path, F_OK) == 0) CHECK(config_chat_template(path, out));
        if (*out) return IFN_OK;
        snprintf(path, sizeof path, "%s/chat_template.jinja", model_file_path(mf));
        return access(path, F_OK) == 0 ? jinja_file(path, out) : IFN_OK;
    case MODEL_FORMAT_LLAMA2C: break;
    }
    return IFN_OK;
}

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
    ifn_status st = read_chat_template(mf, &t->chat_template);
    if (st != IFN_OK) {
        tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return IFN_OK;
}

const char *model_tokenizer_chat_template(const tokenizer *t) { return t->chat_template; }

/* A copy of the text of token id ("" for -1), or NULL when out of memory. */
static char *token_text_dup(const tokenizer *t, int32_t id)
{
    size_t len = 0;
    const char *p = id >= 0 ? tok_text(t, id, &len) : "";
    return strndup(p, len);
}

ifn_status model_tokenizer_chat_template_create(const tokenizer *t, bool strict, chat_template **out)
{
    *out = NULL;
    char *bos = token_text_dup(t, t->bos), *eos = token_text_dup(t, t->eos);
    ifn_status st = bos && eos ? chat_template_create(t->chat_template, bos, eos, strict, out)
                               : ifn_error_set(IFN_ERR_NOMEM, "no memory for the BOS and EOS texts");
    free(bos);
    free(eos);
    return st;
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
