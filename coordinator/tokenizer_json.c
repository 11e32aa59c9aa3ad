/* A tokenizer from a Hugging Face tokenizer.json (+ tokenizer_config.json).
 *
 * Only model.type "BPE" is read, and only in the two shapes our engines implement:
 *   byte-level  normalizer null; pre_tokenizer ByteLevel (GPT-2 regex), or a Sequence of
 *               Split(regex) / Digits + ByteLevel whose regexes are GPT-2's, Llama-3's or
 *               StarCoder's (digits, then GPT-2's); decoder ByteLevel.
 *   metaspace   normalizer Prepend("▁") + Replace(" " -> "▁") with no pre-tokenizer (Llama 2),
 *               or a Metaspace pre-tokenizer that does not split; byte_fallback as given.
 * Anything else is refused with IFN_ERR_UNSUPPORTED naming the part that did not fit, rather
 * than silently tokenizing differently from the model's own tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "tokenizer_internal.h"

#define META "\xE2\x96\x81" /* U+2581 */
#define MAX_VOCAB (1 << 24)

static const char REGEX_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char REGEX_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char REGEX_DIGIT[] = "\\p{N}";

typedef struct {
    const char *path;
    const json_value *root;
} json_ctx;

static bool json_bool(const json_value *v, const char *key, bool dflt)
{
    const json_value *b = json_get(v, key);
    return b && b->kind == JSON_BOOL ? b->u.boolean : dflt;
}

static bool is_null(const json_value *v) { return !v || v->kind == JSON_NULL; }

/* A JSON number that must be an integer id in [0, MAX_VOCAB). */
static ifn_status json_id(const json_ctx *c, const json_value *v, const char *what, size_t index,
                          int32_t *id)
{
    int64_t i;
    if (!json_integer(v, 0, MAX_VOCAB - 1, &i)) {
        if (v && v->kind == JSON_NUMBER)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: %s[%zu] is not a token id in [0, %d) (got %g)",
                                 c->path, what, index, MAX_VOCAB, v->u.number);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s[%zu] is not a token id in [0, %d)", c->path,
                             what, index, MAX_VOCAB);
    }
    *id = (int32_t)i;
    return IFN_OK;
}

/* --- the pre-tokenizer, normalizer and decoder shapes --- */

typedef enum { STEP_DIGITS, STEP_GPT2, STEP_LLAMA3 } split_step;

typedef struct {
    split_step steps[4]; /* the regex splits, in order */
    int n_steps;
    int n_byte_level;
    bool metaspace, meta_prefix, meta_first;
    bool norm_prepend, norm_replace;
} shape;

static ifn_status add_step(const json_ctx *c, shape *s, split_step step)
{
    if (s->n_steps == 4)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: pre_tokenizer has too many splits", c->path);
    s->steps[s->n_steps++] = step;
    return IFN_OK;
}

static ifn_status read_pre(const json_ctx *c, const json_value *p, shape *s)
{
    if (is_null(p)) return IFN_OK;
    const char *type = json_get_string(p, "type");
    if (!type) return ifn_error_set(IFN_ERR_FORMAT, "%s: a pre_tokenizer has no type", c->path);
    if (strcmp(type, "Sequence") == 0) {
        const json_value *list = json_get(p, "pretokenizers");
        if (!list || list->kind != JSON_ARRAY)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: pre_tokenizer Sequence has no pretokenizers",
                                 c->path);
        for (size_t i = 0; i < list->u.array.n; i++) CHECK(read_pre(c, &list->u.array.items[i], s));
        return IFN_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if (json_bool(p, "add_prefix_space", true))
            return ifn_error_set(IFN_ERR_UNSUPPORTED,
                                 "%s: pre_tokenizer ByteLevel with add_prefix_space is not "
                                 "supported", c->path);
        if (json_bool(p, "use_regex", true)) CHECK(add_step(c, s, STEP_GPT2));
        s->n_byte_level++;
        return IFN_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const json_value *pat = json_get(p, "pattern");
        const char *re = json_get_string(pat, "Regex");
        const char *str = json_get_string(pat, "String");
        const char *behavior = json_get_string(p, "behavior");
        if (!behavior || strcmp(behavior, "Isolated") != 0 || json_bool(p, "invert", false))
            return ifn_error_set(IFN_ERR_UNSUPPORTED,
                                 "%s: pre_tokenizer Split with behavior %s%s is not supported "
                                 "(only Isolated, not inverted)", c->path,
                                 behavior ? behavior : "(none)",
                                 json_bool(p, "invert", false) ? ", inverted" : "");
        if (re && strcmp(re, REGEX_GPT2) == 0) return add_step(c, s, STEP_GPT2);
        if (re && strcmp(re, REGEX_LLAMA3) == 0) return add_step(c, s, STEP_LLAMA3);
        if (re && strcmp(re, REGEX_DIGIT) == 0) return add_step(c, s, STEP_DIGITS);
        return ifn_error_set(IFN_ERR_UNSUPPORTED,
                             "%s: pre_tokenizer Split pattern \"%.80s\" is not one we implement "
                             "(the GPT-2, Llama-3 and StarCoder regexes)", c->path,
                             re ? re : str ? str : "(none)");
    }
    if (strcmp(type, "Digits") == 0) {
        if (!json_bool(p, "individual_digits", false))
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: pre_tokenizer Digits without "
                                 "individual_digits is not supported", c->path);
        return add_step(c, s, STEP_DIGITS);
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep = json_get_string(p, "replacement");
        if (rep && strcmp(rep, META) != 0)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: pre_tokenizer Metaspace replacement "
                                 "\"%s\" is not supported (only U+2581)", c->path, rep);
        if (json_bool(p, "split", true))
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: pre_tokenizer Metaspace with split is "
                                 "not supported", c->path);
        const char *scheme = json_get_string(p, "prepend_scheme");
        s->metaspace = true;
        if (scheme) {
            if (strcmp(scheme, "always") != 0 && strcmp(scheme, "first") != 0 &&
                strcmp(scheme, "never") != 0)
                return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: Metaspace prepend_scheme \"%s\" "
                                     "is not supported", c->path, scheme);
            s->meta_prefix = strcmp(scheme, "never") != 0;
            s->meta_first = strcmp(scheme, "first") == 0;
        } else {
            s->meta_prefix = json_bool(p, "add_prefix_space", true);
        }
        return IFN_OK;
    }
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported",
                         c->path, type);
}

static ifn_status read_normalizer(const json_ctx *c, const json_value *n, shape *s)
{
    if (is_null(n)) return IFN_OK;
    const char *type = json_get_string(n, "type");
    if (!type) return ifn_error_set(IFN_ERR_FORMAT, "%s: a normalizer has no type", c->path);
    if (strcmp(type, "Sequence") == 0) {
        const json_value *list = json_get(n, "normalizers");
        if (!list || list->kind != JSON_ARRAY)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: normalizer Sequence has no normalizers",
                                 c->path);
        for (size_t i = 0; i < list->u.array.n; i++)
            CHECK(read_normalizer(c, &list->u.array.items[i], s));
        return IFN_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *pre = json_get_string(n, "prepend");
        if (!pre || strcmp(pre, META) != 0)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: normalizer Prepend of \"%s\" is not "
                                 "supported (only U+2581)", c->path, pre ? pre : "(none)");
        s->norm_prepend = true;
        return IFN_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const char *from = json_get_string(json_get(n, "pattern"), "String");
        const char *to = json_get_string(n, "content");
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, META) != 0)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: normalizer Replace is supported only "
                                 "as \" \" -> U+2581", c->path);
        s->norm_replace = true;
        return IFN_OK;
    }
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported",
                         c->path, type);
}

static ifn_status check_decoder(const json_ctx *c, const json_value *d)
{
    if (is_null(d)) return IFN_OK;
    const char *type = json_get_string(d, "type");
    if (!type) return ifn_error_set(IFN_ERR_FORMAT, "%s: a decoder has no type", c->path);
    if (strcmp(type, "Sequence") == 0) {
        const json_value *list = json_get(d, "decoders");
        if (!list || list->kind != JSON_ARRAY)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: decoder Sequence has no decoders", c->path);
        for (size_t i = 0; i < list->u.array.n; i++) CHECK(check_decoder(c, &list->u.array.items[i]));
        return IFN_OK;
    }
    static const char *const KNOWN[] = {"ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip",
                                        "Metaspace"};
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++)
        if (strcmp(type, KNOWN[i]) == 0) return IFN_OK;
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: decoder type \"%s\" is not supported", c->path,
                         type);
}

/* Sets the tokenizer's mode from the shape; refuses combinations we do not implement. */
static ifn_status apply_shape(const json_ctx *c, const shape *s, tokenizer *t)
{
    if (s->n_byte_level > 0) {
        if (s->n_byte_level > 1 || s->metaspace || s->norm_prepend || s->norm_replace)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: ByteLevel mixed with Metaspace, a "
                                 "normalizer or another ByteLevel is not supported", c->path);
        t->byte_level = true;
        if (s->n_steps == 1 && s->steps[0] == STEP_GPT2) t->pre = PRETOK_GPT2;
        else if (s->n_steps == 1 && s->steps[0] == STEP_LLAMA3) t->pre = PRETOK_LLAMA3;
        else if (s->n_steps == 2 && s->steps[0] == STEP_DIGITS && s->steps[1] == STEP_GPT2)
            t->pre = PRETOK_STARCODER;
        else
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: this sequence of %d pre-tokenizer "
                                 "splits is not GPT-2's, Llama-3's or StarCoder's", c->path,
                                 s->n_steps);
        return IFN_OK;
    }
    if (s->n_steps > 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: regex splits without ByteLevel are not "
                             "supported", c->path);
    if (s->metaspace && !s->norm_prepend && !s->norm_replace) {
        t->metaspace = true;
        t->add_space_prefix = s->meta_prefix;
        t->prefix_first_only = s->meta_first;
        return IFN_OK;
    }
    if (!s->metaspace && s->norm_replace) {
        t->metaspace = true;
        t->add_space_prefix = s->norm_prepend;
        return IFN_OK;
    }
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: neither a ByteLevel nor a Metaspace "
                         "tokenizer (normalizer and pre_tokenizer do not fit either)", c->path);
}

/* --- vocabulary --- */

static ifn_status set_entry(const json_ctx *c, tokenizer *t, bool *seen, int32_t id,
                            const char *text, size_t len, uint8_t type)
{
    if (seen[id]) {
        size_t olen;
        const char *o = tok_text(t, id, &olen);
        if (olen != len || memcmp(o, text, len) != 0)
            return ifn_error_set(IFN_ERR_FORMAT, "%s: id %d is given to both \"%.40s\" and "
                                 "\"%.*s\"", c->path, id, text, (int)(olen > 40 ? 40 : olen), o);
        t->tokens[id].type = type;
        return IFN_OK;
    }
    seen[id] = true;
    return tok_set(t, id, text, len, 0.0f, type);
}

static bool is_byte_token(const char *s, size_t len)
{
    return len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>';
}

static ifn_status read_vocab(const json_ctx *c, const json_value *model, bool byte_fallback,
                             tokenizer **out)
{
    const json_value *vocab = json_get(model, "vocab");
    if (!vocab || vocab->kind != JSON_OBJECT)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: model.vocab is missing or not an object", c->path);
    const json_value *added = json_get(c->root, "added_tokens");
    if (!is_null(added) && added->kind != JSON_ARRAY)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: added_tokens is not an array", c->path);
    size_t n_added = is_null(added) ? 0 : added->u.array.n;

    int32_t max_id = -1, id = -1;
    for (size_t i = 0; i < vocab->u.object.n; i++) {
        CHECK(json_id(c, &vocab->u.object.members[i].value, "model.vocab", i, &id));
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; i < n_added; i++) {
        const json_value *a = &added->u.array.items[i];
        CHECK(json_id(c, json_get(a, "id"), "added_tokens", i, &id));
        if (!json_get_string(a, "content"))
            return ifn_error_set(IFN_ERR_FORMAT, "%s: added_tokens[%zu] has no content", c->path, i);
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return ifn_error_set(IFN_ERR_FORMAT, "%s: the vocabulary is empty", c->path);

    tokenizer *t = NULL;
    CHECK(tok_alloc(max_id + 1, &t));
    bool *seen = calloc((size_t)max_id + 1, sizeof *seen);
    ifn_status st = seen ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "%s: out of memory", c->path);
    for (size_t i = 0; i < vocab->u.object.n && st == IFN_OK; i++) {
        const json_member *m = &vocab->u.object.members[i];
        uint8_t type = byte_fallback && is_byte_token(m->key, m->key_len) ? TOKEN_BYTE : TOKEN_NORMAL;
        st = json_id(c, &m->value, "model.vocab", i, &id);
        if (st == IFN_OK) st = set_entry(c, t, seen, id, m->key, m->key_len, type);
    }
    for (size_t i = 0; i < n_added && st == IFN_OK; i++) {
        const json_value *a = &added->u.array.items[i];
        const json_value *content = json_get(a, "content");
        int32_t aid = -1;
        st = json_id(c, json_get(a, "id"), "added_tokens", i, &aid);
        if (st != IFN_OK) break;
        uint8_t type = json_bool(a, "special", false) ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
        st = set_entry(c, t, seen, aid, content->u.string.ptr, content->u.string.len, type);
        if (st == IFN_OK)
            t->tokens[aid].attr = (json_bool(a, "lstrip", false) ? TOKEN_LSTRIP : 0) |
                                  (json_bool(a, "rstrip", false) ? TOKEN_RSTRIP : 0);
    }
    free(seen);
    if (st == IFN_OK) st = tok_index(t);
    if (st != IFN_OK) {
        tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return IFN_OK;
}

static ifn_status read_merges(const json_ctx *c, const json_value *model, tokenizer *t)
{
    const json_value *merges = json_get(model, "merges");
    if (is_null(merges)) return tok_merges_reserve(t, 0);
    if (merges->kind != JSON_ARRAY)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: model.merges is not an array", c->path);
    size_t n = merges->u.array.n;
    if (n > INT32_MAX) return ifn_error_set(IFN_ERR_FORMAT, "%s: too many merges", c->path);
    CHECK(tok_merges_reserve(t, n));
    char *joined = NULL;
    size_t joined_cap = 0;
    ifn_status st = IFN_OK;
    for (size_t i = 0; i < n && st == IFN_OK; i++) {
        const json_value *m = &merges->u.array.items[i];
        const char *l, *r;
        size_t llen, rlen;
        if (m->kind == JSON_STRING) {
            /* "left right": the separator is the first space after the first character. */
            const char *sp = m->u.string.len > 1 ? memchr(m->u.string.ptr + 1, ' ', m->u.string.len - 1) : NULL;
            if (!sp) {
                st = ifn_error_set(IFN_ERR_FORMAT, "%s: model.merges[%zu] = \"%.60s\" is not two "
                                   "tokens separated by a space", c->path, i, m->u.string.ptr);
                break;
            }
            l = m->u.string.ptr;
            llen = (size_t)(sp - l);
            r = sp + 1;
            rlen = m->u.string.len - llen - 1;
        } else if (m->kind == JSON_ARRAY && m->u.array.n == 2 &&
                   m->u.array.items[0].kind == JSON_STRING && m->u.array.items[1].kind == JSON_STRING) {
            l = m->u.array.items[0].u.string.ptr;
            llen = m->u.array.items[0].u.string.len;
            r = m->u.array.items[1].u.string.ptr;
            rlen = m->u.array.items[1].u.string.len;
        } else {
            st = ifn_error_set(IFN_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor "
                               "[\"a\", \"b\"]", c->path, i);
            break;
        }
        if (llen + rlen > joined_cap) {
            joined_cap = 2 * (llen + rlen);
            char *j = realloc(joined, joined_cap);
            if (!j) {
                st = ifn_error_set(IFN_ERR_NOMEM, "%s: out of memory", c->path);
                break;
            }
            joined = j;
        }
        memcpy(joined, l, llen);
        memcpy(joined + llen, r, rlen);
        int32_t left = tok_find(t, l, llen), right = tok_find(t, r, rlen);
        int32_t result = tok_find(t, joined, llen + rlen);
        if (left < 0 || right < 0 || result < 0) {
            st = ifn_error_set(IFN_ERR_FORMAT, "%s: model.merges[%zu] (\"%.*s\", \"%.*s\"): %s is "
                               "not in the vocabulary", c->path, i, (int)(llen > 40 ? 40 : llen),
                               l, (int)(rlen > 40 ? 40 : rlen), r,
                               left < 0 ? "the left token" : right < 0 ? "the right token"
                                                                       : "the merged token");
            break;
        }
        tok_merge_add(t, left, right, (int32_t)i, result);
    }
    free(joined);
    return st;
}

/* --- special tokens --- */

/* The id of a token named in a config: a string or an AddedToken object {"content": ...}. */
static ifn_status named_token(const char *path, const tokenizer *t, const json_value *v,
                             const char *key, int32_t *id)
{
    const json_value *s = v;
    if (s && s->kind == JSON_OBJECT) s = json_get(s, "content");
    if (is_null(s)) return IFN_OK;
    if (s->kind != JSON_STRING)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s is neither a string nor a token object",
                             path, key);
    int32_t found = tok_find(t, s->u.string.ptr, s->u.string.len);
    if (found < 0)
        return ifn_error_set(IFN_ERR_FORMAT, "%s: %s \"%.60s\" is not in the vocabulary", path, key,
                             s->u.string.ptr);
    *id = found;
    return IFN_OK;
}

/* TemplateProcessing's "single" template says which tokens go around a lone text: a special
 * token before the sequence is a BOS that gets added, one after it an EOS. */
static ifn_status read_post_processor(const json_ctx *c, const json_value *p, tokenizer *t)
{
    if (is_null(p)) return IFN_OK;
    const char *type = json_get_string(p, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const json_value *list = json_get(p, "processors");
        if (list && list->kind == JSON_ARRAY)
            for (size_t i = 0; i < list->u.array.n; i++)
                CHECK(read_post_processor(c, &list->u.array.items[i], t));
        return IFN_OK;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return IFN_OK; /* adds nothing we use */
    const json_value *single = json_get(p, "single");
    if (!single || single->kind != JSON_ARRAY) return IFN_OK;
    bool after_text = false;
    for (size_t i = 0; i < single->u.array.n; i++) {
        const json_value *piece = &single->u.array.items[i];
        if (json_get(piece, "Sequence")) {
            after_text = true;
            continue;
        }
        const json_value *sp = json_get(piece, "SpecialToken");
        if (!sp) continue;
        int32_t id = -1;
        CHECK(named_token(c->path, t, json_get(sp, "id"), "post_processor special token", &id));
        if (id < 0) continue;
        if (after_text) {
            t->eos = id;
            t->add_eos = true;
        } else {
            t->bos = id;
            t->add_bos = true;
        }
    }
    return IFN_OK;
}

static ifn_status read_config(const char *path, tokenizer *t)
{
    json_value *cfg = NULL;
    CHECK(json_parse_file(path, &cfg));
    ifn_status st = IFN_OK;
    if (cfg->kind != JSON_OBJECT) {
        st = ifn_error_set(IFN_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    const json_value *b = json_get(cfg, "add_bos_token");
    if (b && b->kind == JSON_BOOL) t->add_bos = b->u.boolean;
    b = json_get(cfg, "add_eos_token");
    if (b && b->kind == JSON_BOOL) t->add_eos = b->u.boolean;
    CHECK_GOTO(named_token(path, t, json_get(cfg, "bos_token"), "bos_token", &t->bos), st, done);
    CHECK_GOTO(named_token(path, t, json_get(cfg, "eos_token"), "eos_token", &t->eos), st, done);
done:
    json_free(cfg);
    return st;
}

ifn_status tokenizer_from_json(const char *path, const char *config_path, tokenizer **out)
{
    if (!path || !out) return ifn_error_set(IFN_ERR_INVALID_ARG, "tokenizer_from_json: NULL argument");
    *out = NULL;
    json_value *root = NULL;
    CHECK(json_parse_file(path, &root));
    json_ctx c = {path, root};
    tokenizer *t = NULL;
    ifn_status st = IFN_OK;

    const json_value *model = json_get(root, "model");
    if (!model || model->kind != JSON_OBJECT) {
        st = ifn_error_set(IFN_ERR_FORMAT, "%s: \"model\" is missing or not an object", path);
        goto fail;
    }
    const char *type = json_get_string(model, "type");
    if (type ? strcmp(type, "BPE") != 0 : !json_get(model, "merges")) {
        st = ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)",
                           path, type ? type : "(none)");
        goto fail;
    }
    static const char *const AFFIXES[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const char *a = json_get_string(model, AFFIXES[i]);
        if (a && a[0]) {
            st = ifn_error_set(IFN_ERR_UNSUPPORTED, "%s: model.%s is not supported", path, AFFIXES[i]);
            goto fail;
        }
    }

    shape s = {0};
    CHECK_GOTO(read_normalizer(&c, json_get(root, "normalizer"), &s), st, fail);
    CHECK_GOTO(read_pre(&c, json_get(root, "pre_tokenizer"), &s), st, fail);
    CHECK_GOTO(check_decoder(&c, json_get(root, "decoder")), st, fail);

    bool byte_fallback = json_bool(model, "byte_fallback", false);
    CHECK_GOTO(read_vocab(&c, model, byte_fallback, &t), st, fail);
    t->model = TOK_MODEL_BPE;
    t->byte_fallback = byte_fallback;
    t->ignore_merges = json_bool(model, "ignore_merges", false);
    t->fuse_unk = json_bool(model, "fuse_unk", false);
    CHECK_GOTO(apply_shape(&c, &s, t), st, fail);
    CHECK_GOTO(read_merges(&c, model, t), st, fail);

    CHECK_GOTO(named_token(path, t, json_get(model, "unk_token"), "model.unk_token", &t->unk), st, fail);
    /* The model declares its unknown token: it stands for what the vocabulary lacks, and a
     * special one is an unknown token rather than a control token (HF Llama's <unk>). */
    t->unk_fallback = t->unk;
    if (t->unk >= 0 && t->tokens[t->unk].type == TOKEN_CONTROL) t->tokens[t->unk].type = TOKEN_UNKNOWN;
    CHECK_GOTO(read_post_processor(&c, json_get(root, "post_processor"), t), st, fail);
    if (config_path) CHECK_GOTO(read_config(config_path, t), st, fail);
    if (t->eos < 0) {
        /* Without a config, the usual end-of-sequence texts, if they are special. */
        static const char *const EOS_TEXTS[] = {"</s>", "<|endoftext|>", "<|end_of_text|>"};
        for (size_t i = 0; i < 3 && t->eos < 0; i++) {
            int32_t id = tok_find(t, EOS_TEXTS[i], strlen(EOS_TEXTS[i]));
            if (id >= 0 && t->tokens[id].type == TOKEN_CONTROL) t->eos = id;
        }
    }
    CHECK_GOTO(tok_finish(t), st, fail);
    json_free(root);
    *out = t;
    return IFN_OK;

fail:
    tokenizer_destroy(t);
    json_free(root);
    return st;
}
