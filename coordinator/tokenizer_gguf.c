/* A tokenizer from the tokenizer.ggml.* keys of a GGUF file (llama.cpp's layout). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"

static bool str_is(gguf_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* Pre-tokenizer names of llama.cpp whose regexes are the ones we implement. A byte-level
 * vocabulary without the key, or with "default", gets GPT-2's rules: that is what byte-level
 * BPE means without further word (llama.cpp falls back to a regex of its own there). */
static const struct {
    const char *name;
    pretok_kind kind;
    bool ignore_merges;
} PRE_NAMES[] = {
    {"default", PRETOK_GPT2, false},
    {"gpt-2", PRETOK_GPT2, false},
    {"phi-2", PRETOK_GPT2, false},
    {"llama-bpe", PRETOK_LLAMA3, true},
    {"llama3", PRETOK_LLAMA3, true},
    {"starcoder", PRETOK_STARCODER, false},
};

static ifn_status read_pre(const gguf_file *f, tokenizer *t)
{
    t->pre = PRETOK_GPT2;
    if (!gguf_has_key(f, KEY_PRE)) return IFN_OK;
    gguf_str pre;
    CHECK(gguf_get_str(f, KEY_PRE, &pre));
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof PRE_NAMES[0]; i++) {
        if (str_is(pre, PRE_NAMES[i].name)) {
            t->pre = PRE_NAMES[i].kind;
            t->ignore_merges = PRE_NAMES[i].ignore_merges;
            return IFN_OK;
        }
    }
    return ifn_error_set(IFN_ERR_UNSUPPORTED,
                         "%s: %s = \"%.*s\" is not a supported pre-tokenizer (supported: default, "
                         "gpt-2, phi-2, llama-bpe, llama3, starcoder)",
                         gguf_file_path(f), KEY_PRE, (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
}

static const char *type_name(gguf_type type)
{
    static const char *const NAMES[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32",
                                        "float32", "bool", "string", "array", "uint64", "int64",
                                        "float64"};
    return (unsigned)type < sizeof NAMES / sizeof NAMES[0] ? NAMES[type] : "unknown";
}

/* Element i of an integer array, or false if the array's type is not an integer type. */
static bool arr_int(const gguf_arr *a, size_t i, int64_t *v)
{
    const unsigned char *p = a->data;
    switch (a->type) {
    case GGUF_TYPE_INT8: *v = (int8_t)p[i]; return true;
    case GGUF_TYPE_UINT8: *v = p[i]; return true;
    case GGUF_TYPE_INT16: { int16_t x; memcpy(&x, p + 2 * i, 2); *v = x; return true; }
    case GGUF_TYPE_UINT16: { uint16_t x; memcpy(&x, p + 2 * i, 2); *v = x; return true; }
    case GGUF_TYPE_INT32: { int32_t x; memcpy(&x, p + 4 * i, 4); *v = x; return true; }
    case GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, p + 4 * i, 4); *v = x; return true; }
    case GGUF_TYPE_INT64: { int64_t x; memcpy(&x, p + 8 * i, 8); *v = x; return true; }
    case GGUF_TYPE_UINT64: {
        uint64_t x;
        memcpy(&x, p + 8 * i, 8);
        *v = x > INT64_MAX ? INT64_MAX : (int64_t)x;
        return true;
    }
    default: return false;
    }
}

static ifn_status read_tokens(const gguf_file *f, tokenizer **out)
{
    const char *path = gguf_file_path(f);
    gguf_arr toks, scores = {0}, types = {0};
    /* The file has a tokenizer (tokenizer.ggml.model): a missing part is a broken file. */
    if (!gguf_has_key(f, KEY_TOKENS))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s is set but %s is missing", path, KEY_MODEL,
                             KEY_TOKENS);
    CHECK(gguf_get_arr(f, KEY_TOKENS, &toks));
    if (toks.type != GGUF_TYPE_STRING)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s must be an array of strings, not of %s",
                             path, KEY_TOKENS, type_name(toks.type));
    if (toks.n == 0 || toks.n > INT32_MAX)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s has %zu tokens", path, KEY_TOKENS, toks.n);
    bool have_scores = gguf_has_key(f, KEY_SCORES), have_types = gguf_has_key(f, KEY_TYPES);
    if (have_scores) {
        CHECK(gguf_get_arr(f, KEY_SCORES, &scores));
        if (scores.type != GGUF_TYPE_FLOAT32)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s must be an array of float32, not of %s",
                                 path, KEY_SCORES, type_name(scores.type));
        if (scores.n != toks.n)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s has %zu entries but %s has %zu", path,
                                 KEY_SCORES, scores.n, KEY_TOKENS, toks.n);
    }
    if (have_types) {
        CHECK(gguf_get_arr(f, KEY_TYPES, &types));
        int64_t probe;
        if (types.n > 0 && !arr_int(&types, 0, &probe))
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s must be an array of integers, not of %s",
                                 path, KEY_TYPES, type_name(types.type));
        if (types.n != toks.n)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s has %zu entries but %s has %zu", path,
                                 KEY_TYPES, types.n, KEY_TOKENS, toks.n);
    }

    tokenizer *t = NULL;
    CHECK(tok_alloc((int32_t)toks.n, &t));
    ifn_status st = IFN_OK;
    for (size_t i = 0; i < toks.n; i++) {
        gguf_str s = gguf_arr_str(&toks, i);
        float score = 0.0f;
        if (have_scores) memcpy(&score, (const unsigned char *)scores.data + 4 * i, 4);
        int64_t type = TOKEN_NORMAL;
        if (have_types) {
            arr_int(&types, i, &type);
            if (type == 0) type = TOKEN_NORMAL; /* llama.cpp's "undefined" */
            if (type < TOKEN_NORMAL || type > TOKEN_BYTE) {
                st = ifn_error_set(IFN_ERR_FORMAT, "%s: %s[%zu] = %lld is not a token type (1..6)",
                                   path, KEY_TYPES, i, (long long)type);
                goto fail;
            }
        }
        CHECK_GOTO(tok_set(t, (int32_t)i, s.ptr, s.len, score, (uint8_t)type), st, fail);
    }
    CHECK_GOTO(tok_index(t), st, fail);
    *out = t;
    return IFN_OK;
fail:
    tokenizer_destroy(t);
    return st;
}

static ifn_status read_merges(const gguf_file *f, tokenizer *t)
{
    const char *path = gguf_file_path(f);
    gguf_arr m;
    if (!gguf_has_key(f, KEY_MERGES))
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s is \"gpt2\" but %s is missing", path,
                             KEY_MODEL, KEY_MERGES);
    CHECK(gguf_get_arr(f, KEY_MERGES, &m));
    if (m.type != GGUF_TYPE_STRING)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s must be an array of strings, not of %s",
                             path, KEY_MERGES, type_name(m.type));
    if (m.n > INT32_MAX)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s has %zu entries", path, KEY_MERGES, m.n);
    CHECK(tok_merges_reserve(t, m.n));
    for (size_t i = 0; i < m.n; i++) {
        gguf_str s = gguf_arr_str(&m, i);
        int shown = (int)(s.len > 64 ? 64 : s.len);
        /* "left right": the separator is the first space after the first character. */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s[%zu] = \"%.*s\" is not two tokens "
                                 "separated by a space", path, KEY_MERGES, i, shown, s.ptr);
        size_t llen = (size_t)(sp - s.ptr), rlen = s.len - llen - 1;
        int32_t left = tok_find(t, s.ptr, llen), right = tok_find(t, sp + 1, rlen);
        char *joined = malloc(llen + rlen + 1);
        if (!joined) return ifn_error_set(IFN_ERR_NOMEM, "%s: out of memory", path);
        memcpy(joined, s.ptr, llen);
        memcpy(joined + llen, sp + 1, rlen);
        int32_t result = tok_find(t, joined, llen + rlen);
        free(joined);
        if (left < 0 || right < 0 || result < 0)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s[%zu] = \"%.*s\": %s is not in %s", path,
                                 KEY_MERGES, i, shown, s.ptr,
                                 left < 0 ? "the left token" : right < 0 ? "the right token"
                                                                         : "the merged token",
                                 KEY_TOKENS);
        tok_merge_add(t, left, right, (int32_t)i, result);
    }
    return IFN_OK;
}

/* Optional special ids; each must lie in the vocabulary. */
static ifn_status read_special_ids(const gguf_file *f, tokenizer *t)
{
    const struct {
        const char *key;
        int32_t *dst;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos},
        {"tokenizer.ggml.eos_token_id", &t->eos},
        {"tokenizer.ggml.unknown_token_id", &t->unk},
        {"tokenizer.ggml.padding_token_id", &t->pad},
        {"tokenizer.ggml.eot_token_id", &t->eot},
        {"tokenizer.ggml.eom_token_id", &t->eom},
        {"tokenizer.ggml.seperator_token_id", NULL}, /* sic: llama.cpp's spelling */
        {"tokenizer.ggml.separator_token_id", NULL},
        {"tokenizer.ggml.cls_token_id", NULL},
        {"tokenizer.ggml.mask_token_id", NULL},
        {"tokenizer.ggml.fim_pre_token_id", NULL},
        {"tokenizer.ggml.fim_suf_token_id", NULL},
        {"tokenizer.ggml.fim_mid_token_id", NULL},
        {"tokenizer.ggml.fim_pad_token_id", NULL},
        {"tokenizer.ggml.fim_rep_token_id", NULL},
        {"tokenizer.ggml.fim_sep_token_id", NULL},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!gguf_has_key(f, keys[i].key)) continue;
        int32_t id;
        CHECK(gguf_get_i32(f, keys[i].key, &id));
        CHECK(tok_check_id(t, gguf_file_path(f), keys[i].key, id));
        if (keys[i].dst) *keys[i].dst = id;
    }
    return IFN_OK;
}

static ifn_status read_bool(const gguf_file *f, const char *key, bool *v)
{
    if (!gguf_has_key(f, key)) return IFN_OK;
    return gguf_get_bool(f, key, v);
}

ifn_status tokenizer_from_gguf(const gguf_file *f, tokenizer **out)
{
    if (!f || !out) return ifn_error_set(IFN_ERR_INVALID_ARG, "tokenizer_from_gguf: NULL argument");
    *out = NULL;
    const char *path = gguf_file_path(f);
    if (!gguf_has_key(f, KEY_MODEL))
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: no tokenizer (%s is absent)", path, KEY_MODEL);
    gguf_str model;
    CHECK(gguf_get_str(f, KEY_MODEL, &model));
    bool spm = str_is(model, "llama"), bpe = str_is(model, "gpt2");
    if (!spm && !bpe)
        return ifn_error_set(IFN_ERR_UNSUPPORTED,
                             "%s: %s = \"%.*s\" is not supported (supported: \"llama\" for "
                             "SentencePiece BPE, \"gpt2\" for byte-level BPE)",
                             path, KEY_MODEL, (int)(model.len > 64 ? 64 : model.len), model.ptr);

    tokenizer *t = NULL;
    CHECK(read_tokens(f, &t));
    ifn_status st = IFN_OK;
    if (spm) {
        /* llama.cpp ignores tokenizer.ggml.pre for SentencePiece vocabularies; so do we. */
        t->model = TOK_MODEL_SPM;
        t->metaspace = true;
        t->add_space_prefix = true;
        t->add_bos = true;
        /* llama.cpp's defaults for Llama vocabularies, where the ids exist. */
        t->unk = t->n_vocab > 0 ? 0 : -1;
        t->bos = t->n_vocab > 1 ? 1 : -1;
        t->eos = t->n_vocab > 2 ? 2 : -1;
    } else {
        t->model = TOK_MODEL_BPE;
        t->byte_level = true;
        CHECK_GOTO(read_pre(f, t), st, fail);
        CHECK_GOTO(read_merges(f, t), st, fail);
    }
    CHECK_GOTO(read_special_ids(f, t), st, fail);
    if (t->unk >= 0 && t->tokens[t->unk].type == TOKEN_UNKNOWN) t->unk_fallback = t->unk;
    CHECK_GOTO(read_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos), st, fail);
    CHECK_GOTO(read_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos), st, fail);
    if (spm) CHECK_GOTO(read_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix), st, fail);
    CHECK_GOTO(tok_finish(t), st, fail);
    *out = t;
    return IFN_OK;
fail:
    tokenizer_destroy(t);
    return st;
}
