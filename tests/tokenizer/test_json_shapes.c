/* tokenizer.json shapes beyond the converted published vocabularies: Metaspace with each
 * prepend scheme, unk fusing, Llama-3's Split + ByteLevel with ignore_merges, StarCoder's
 * Digits + ByteLevel, GPT-2's bare ByteLevel, TemplateProcessing and config overrides, and
 * added tokens that strip whitespace.
 *
 *   test_json_shapes WORK_DIR */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_test_util.h"
#include "tokenizer.h"
#include "unicode.h"

static const char *work_dir;

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)need + 1 > b->cap) {
        b->cap = 2 * (b->n + (size_t)need + 1);
        b->s = realloc(b->s, b->cap);
        if (!b->s) abort();
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)need + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

static tokenizer *load(const char *name, const char *json, const char *config)
{
    char path[4096], cpath[4096 + 16];
    snprintf(path, sizeof path, "%s/%s.json", work_dir, name);
    snprintf(cpath, sizeof cpath, "%s.config", path);
    FILE *f = fopen(path, "w");
    if (!f || fputs(json, f) < 0 || fclose(f) != 0) exit(1);
    if (config) {
        f = fopen(cpath, "w");
        if (!f || fputs(config, f) < 0 || fclose(f) != 0) exit(1);
    }
    tokenizer *tok = NULL;
    ifn_error_clear();
    if (tokenizer_from_json(path, config ? cpath : NULL, &tok) != IFN_OK) {
        fprintf(stderr, "FAIL: loading %s: %s\n", name, ifn_error_detail());
        tt_failures++;
    }
    return tok;
}

static void check_encode(const tokenizer *tok, const char *text, bool add_special,
                         bool parse_special, const int32_t *want, size_t n_want, const char *what)
{
    if (!tok) return;
    int32_t *ids = NULL;
    size_t n = 0;
    EXPECT_OK(tokenizer_encode(tok, text, strlen(text), add_special, parse_special, &ids, &n));
    bool same = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    EXPECT(same, "%s: encode(\"%s\")", what, text);
    if (!same) {
        fprintf(stderr, "  want:");
        tt_print_ids(stderr, want, n_want);
        fprintf(stderr, "\n  got: ");
        tt_print_ids(stderr, ids, n);
        fputc('\n', stderr);
    }
    free(ids);
}

static void check_decode(const tokenizer *tok, const int32_t *ids, size_t n, const char *want,
                         const char *what)
{
    if (!tok) return;
    char *text = NULL;
    size_t len = 0;
    EXPECT_OK(tokenizer_decode(tok, ids, n, false, &text, &len));
    EXPECT(text && len == strlen(want) && memcmp(text, want, len) == 0, "%s: decode gave \"%s\"",
           what, text ? text : "(null)");
    free(text);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

/* Metaspace vocabulary: <unk> <s> </s> ▁ a b ▁a ab ▁ab, merges ▁+a, a+b, ▁a+b. */
static const char META_MODEL[] =
    "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    " \"byte_fallback\": false, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"\\u2581\": 3,"
    " \"a\": 4, \"b\": 5, \"\\u2581a\": 6, \"ab\": 7, \"\\u2581ab\": 8},"
    " \"merges\": [\"\\u2581 a\", \"a b\", \"\\u2581a b\"]},"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
    " {\"id\": 1, \"content\": \"<s>\", \"special\": true},"
    " {\"id\": 2, \"content\": \"</s>\", \"special\": true}]";

static void metaspace_shapes(void)
{
    char json[4096];
    snprintf(json, sizeof json, "{%s, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\":"
             " \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": false}, \"decoder\": "
             "{\"type\": \"Metaspace\"}}", META_MODEL);
    tokenizer *tok = load("meta_first", json, NULL);
    check_encode(tok, "ab ab", false, false, IDS(8, 8), "metaspace");
    check_encode(tok, "ab<s>ab", false, true, IDS(8, 1, 7), "prepend_scheme first");
    check_encode(tok, "c", false, false, IDS(3, 0), "unknown character");
    check_encode(tok, "acc b", false, false, IDS(6, 0, 3, 5), "unknown characters fused");
    check_decode(tok, IDS(8, 1, 7), "abab", "metaspace decode");
    EXPECT(!tok || tokenizer_eos(tok) == 2, "</s> found as eos without a config");
    tokenizer_destroy(tok);

    snprintf(json, sizeof json, "{%s, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\":"
             " \"\\u2581\", \"prepend_scheme\": \"always\", \"split\": false}}", META_MODEL);
    tok = load("meta_always", json, NULL);
    check_encode(tok, "ab<s>ab", false, true, IDS(8, 1, 8), "prepend_scheme always");
    tokenizer_destroy(tok);

    snprintf(json, sizeof json, "{%s, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\":"
             " \"\\u2581\", \"prepend_scheme\": \"never\", \"split\": false}}", META_MODEL);
    tok = load("meta_never", json, NULL);
    check_encode(tok, "ab ab", false, false, IDS(7, 8), "prepend_scheme never");
    tokenizer_destroy(tok);

    /* Llama-2's normalizer form, a TemplateProcessing that adds <s>, and a config that also
     * asks for </s>. */
    snprintf(json, sizeof json, "{%s, \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
             "{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", "
             "\"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, \"pre_tokenizer\": null,"
             " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\":"
             " {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}}",
             META_MODEL);
    tok = load("meta_template", json, NULL);
    check_encode(tok, "ab", true, false, IDS(1, 8), "TemplateProcessing adds <s>");
    tokenizer_destroy(tok);
    tok = load("meta_template_cfg", json, "{\"add_eos_token\": true, \"eos_token\": {\"content\": \"</s>\"}}");
    check_encode(tok, "ab", true, false, IDS(1, 8, 2), "config adds </s>");
    tokenizer_destroy(tok);
    tok = load("meta_template_nobos", json, "{\"add_bos_token\": false}");
    check_encode(tok, "ab", true, false, IDS(8), "config turns <s> off");
    tokenizer_destroy(tok);
}

/* Byte-level vocabulary: the 256 stand-ins (id = byte), then "hello" (id 256, reachable only
 * without merges), "he" (257), "<mask>" (258, lstrip), "<sep>" (259, rstrip). */
static void bytelevel_vocab(sbuf *b, const char *pre, bool ignore_merges)
{
    sb_printf(b, "{\"model\": {\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": {",
              ignore_merges ? "true" : "false");
    for (int c = 0; c < 256; c++) sb_printf(b, "\"\\u%04x\": %d, ", unicode_byte_to_cp((uint8_t)c), c);
    sb_printf(b, "\"hello\": 256, \"he\": 257}, \"merges\": [\"h e\"]},"
                 " \"added_tokens\": [{\"id\": 258, \"content\": \"<mask>\", \"special\": true,"
                 " \"lstrip\": true}, {\"id\": 259, \"content\": \"<sep>\", \"special\": true,"
                 " \"rstrip\": true}], \"pre_tokenizer\": %s, \"decoder\": {\"type\": \"ByteLevel\"}}", pre);
}

static void bytelevel_shapes(void)
{
    static const char LLAMA3[] =
        "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\":"
        " \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "
        "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
        " \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\","
        " \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]}";
    sbuf b = {0};
    bytelevel_vocab(&b, LLAMA3, true);
    tokenizer *tok = load("llama3", b.s, NULL);
    check_encode(tok, "hello", false, false, IDS(256), "ignore_merges takes the whole word");
    check_encode(tok, "hehe", false, false, IDS(257, 257), "merges otherwise");
    check_encode(tok, "12345", false, false, IDS('1', '2', '3', '4', '5'), "digits");
    check_encode(tok, "a <mask> b", false, true, IDS('a', 258, ' ', 'b'),
                 "lstrip");
    check_encode(tok, "a <sep> b", false, true, IDS('a', ' ', 259, 'b'), "rstrip");
    check_decode(tok, IDS(256, ' ', 257), "hello he", "byte-level decode");
    tokenizer_destroy(tok);

    b.n = 0;
    bytelevel_vocab(&b, LLAMA3, false);
    tok = load("llama3_merges", b.s, NULL);
    check_encode(tok, "hello", false, false, IDS(257, 'l', 'l', 'o'), "without ignore_merges");
    tokenizer_destroy(tok);

    b.n = 0;
    bytelevel_vocab(&b, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}", false);
    tok = load("gpt2_bare", b.s, NULL);
    check_encode(tok, "he 12", false, false, IDS(257, ' ', '1', '2'), "bare ByteLevel (GPT-2)");
    tokenizer_destroy(tok);

    b.n = 0;
    bytelevel_vocab(&b, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\","
                        " \"individual_digits\": true}, {\"type\": \"ByteLevel\", \"add_prefix_space\":"
                        " false, \"use_regex\": true}]}", false);
    tok = load("starcoder_digits", b.s, NULL);
    check_encode(tok, "he 12", false, false, IDS(257, ' ', '1', '2'), "Digits + ByteLevel");
    tokenizer_destroy(tok);
    free(b.s);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s WORK_DIR\n", argv[0]);
        return 2;
    }
    work_dir = argv[1];
    metaspace_shapes();
    bytelevel_shapes();
    if (tt_failures) fprintf(stderr, "%d failure(s)\n", tt_failures);
    else printf("all tokenizer.json shape checks pass\n");
    return tt_failures ? 1 : 0;
}
