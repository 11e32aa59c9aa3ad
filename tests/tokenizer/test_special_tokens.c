/* Special tokens: with parse_special, control and user-defined token texts in the input
 * become their ids (longest first) and the text between is encoded normally; user-defined
 * tokens are matched even without it; decoding renders control tokens only when asked.
 *
 *   test_special_tokens WORK_DIR             synthetic vocabularies (no shared files)
 *   test_special_tokens WORK_DIR VOCAB_DIR   the published vocabularies */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tok_fixtures.h"
#include "tok_test_util.h"
#include "tokenizer.h"

static tokenizer *load_path(const char *path)
{
    gguf_file *f = NULL;
    tokenizer *tok = NULL;
    ifn_error_clear();
    if (gguf_file_open(path, &f) != IFN_OK || tokenizer_from_gguf(f, &tok) != IFN_OK) {
        fprintf(stderr, "FAIL: loading %s: %s\n", path, ifn_error_detail());
        tt_failures++;
    }
    gguf_file_close(f);
    return tok;
}

static tokenizer *load_fixture(const char *work_dir, const char *name, gguf_writer *w)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", work_dir, name);
    if (gw_save(w, path) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    return load_path(path);
}

/* encode(text) must equal want[0..n_want). */
static void check_encode(const tokenizer *tok, const char *text, bool add_special,
                         bool parse_special, const int32_t *want, size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    EXPECT_OK(tokenizer_encode(tok, text, strlen(text), add_special, parse_special, &ids, &n));
    bool same = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    EXPECT(same, "encode(\"%s\", add_special=%d, parse_special=%d)", text, add_special,
           parse_special);
    if (!same) {
        fprintf(stderr, "  want:");
        tt_print_ids(stderr, want, n_want);
        fprintf(stderr, "\n  got: ");
        tt_print_ids(stderr, ids, n);
        fputc('\n', stderr);
    }
    free(ids);
}

static void check_decode(const tokenizer *tok, const int32_t *ids, size_t n, bool render_special,
                         const char *want)
{
    char *text = NULL;
    size_t len = 0;
    EXPECT_OK(tokenizer_decode(tok, ids, n, render_special, &text, &len));
    bool same = text && len == strlen(want) && memcmp(text, want, len) == 0;
    EXPECT(same, "decode (render_special=%d) gave \"%s\", want \"%s\"", render_special,
           text ? text : "(null)", want);
    free(text);
}

/* Whether encode(text) contains id. */
static bool encode_has(const tokenizer *tok, const char *text, bool parse_special, int32_t id)
{
    int32_t *ids = NULL;
    size_t n = 0;
    bool found = false;
    EXPECT_OK(tokenizer_encode(tok, text, strlen(text), false, parse_special, &ids, &n));
    for (size_t i = 0; i < n; i++) found |= ids[i] == id;
    free(ids);
    return found;
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

static void synthetic_bytelevel(const char *work_dir)
{
    gguf_writer w = {0};
    fixture_bytelevel_keys(&w, "gpt-2");
    tokenizer *tok = load_fixture(work_dir, "special_bytelevel", &w);
    if (!tok) return;
    /* "hello" merges to hell + o; the special token is cut out of the middle. */
    check_encode(tok, "hello<|im_start|>hell", false, true, IDS(BL_HELL, 'o', BL_IM_START, BL_HELL));
    /* Longest first: "<|im_start|>" wins over its prefix "<|im"; the prefix alone still works. */
    check_encode(tok, "<|im_start|><|im", false, true, IDS(BL_IM_START, BL_IM));
    /* Without parse_special control tokens are plain text ... */
    EXPECT(!encode_has(tok, "<|im_start|>", false, BL_IM_START), "control token not parsed");
    EXPECT(!encode_has(tok, "<|im_start|>", false, BL_IM), "control token prefix not parsed");
    check_encode(tok, "<|im", false, false, IDS('<', '|', 'i', 'm'));
    /* ... but user-defined tokens are always matched. */
    check_encode(tok, "a<tool>b", false, false, IDS('a', BL_TOOL, 'b'));
    check_encode(tok, " w", false, false, IDS(BL_SPACE_W));
    /* No add_bos_token key: a byte-level vocabulary adds nothing. */
    check_encode(tok, "h", true, true, IDS('h'));
    check_decode(tok, IDS(BL_EOT, 'h'), false, "h");
    check_decode(tok, IDS(BL_EOT, 'h'), true, "<|endoftext|>h");
    check_decode(tok, IDS(BL_TOOL, BL_SPACE_W), false, "<tool> w");
    EXPECT(tokenizer_is_eog(tok, BL_EOT), "<|endoftext|> ends generation");
    EXPECT(!tokenizer_is_eog(tok, 'h'), "'h' does not end generation");
    EXPECT(tokenizer_bos(tok) == BL_EOT && tokenizer_eos(tok) == BL_EOT, "bos/eos ids");
    EXPECT(tokenizer_token_id(tok, "<|im", 4) == BL_IM, "token id lookup");
    EXPECT(tokenizer_token_id(tok, "nope", 4) == -1, "token id lookup of a missing text");
    check_encode(tok, "lo", false, false, IDS('l', 'o'));
    tokenizer_destroy(tok);

    /* llama-bpe: Llama-3's pre-tokenizer, and a word that is a token is taken whole. */
    fixture_bytelevel_keys(&w, "llama-bpe");
    tok = load_fixture(work_dir, "special_llama3", &w);
    if (!tok) return;
    check_encode(tok, "lo", false, false, IDS(BL_LO));
    check_encode(tok, "hello<|im_start|>", false, true, IDS(BL_HELL, 'o', BL_IM_START));
    check_encode(tok, "12345", false, false, IDS('1', '2', '3', '4', '5'));
    tokenizer_destroy(tok);
}

static void synthetic_spm(const char *work_dir)
{
    gguf_writer w = {0};
    fixture_spm_keys(&w, NULL);
    tokenizer *tok = load_fixture(work_dir, "special_spm", &w);
    if (!tok) return;
    check_encode(tok, "ab ab", false, false, IDS(SPM_META_AB, SPM_META_AB));
    /* The "▁" prefix also goes on text that follows a special token (llama.cpp). */
    check_encode(tok, "<s>ab", false, true, IDS(SPM_BOS, SPM_META_AB));
    check_encode(tok, "ab", true, false, IDS(SPM_BOS, SPM_META_AB));
    check_encode(tok, "a<tool>b", false, false, IDS(SPM_META_A, SPM_TOOL, SPM_META, SPM_B));
    EXPECT(!encode_has(tok, "<s>ab", false, SPM_BOS), "<s> not parsed without parse_special");
    check_decode(tok, IDS(SPM_BOS, SPM_META_AB), true, "<s> ab");
    check_decode(tok, IDS(SPM_BOS, SPM_META_AB), false, "ab");
    check_decode(tok, IDS(SPM_META_AB, SPM_EOS), true, "ab</s>");
    check_decode(tok, IDS(SPM_UNK), false, "\xEF\xBF\xBD");
    check_decode(tok, IDS(SPM_UNK), true, "<unk>");
    EXPECT(tokenizer_is_eog(tok, SPM_EOS) && !tokenizer_is_eog(tok, SPM_BOS), "eog");
    tokenizer_destroy(tok);
}

static void published(const char *vocab_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ggml-vocab-starcoder.gguf", vocab_dir);
    tokenizer *tok = load_path(path);
    if (tok) {
        /* <fim_prefix> = 1, <fim_middle> = 2, <fim_suffix> = 3 */
        int32_t *plain = NULL, *fim = NULL;
        size_t n_plain = 0, n_fim = 0;
        EXPECT_OK(tokenizer_encode(tok, "def f():", 8, false, false, &plain, &n_plain));
        const char *text = "<fim_prefix>def f():<fim_suffix>\n<fim_middle>";
        EXPECT_OK(tokenizer_encode(tok, text, strlen(text), false, true, &fim, &n_fim));
        EXPECT(n_fim == n_plain + 4 && fim[0] == 1 && fim[n_plain + 1] == 3 &&
                   fim[n_fim - 1] == 2 && memcmp(fim + 1, plain, n_plain * sizeof *fim) == 0,
               "StarCoder FIM prompt");
        EXPECT(!encode_has(tok, text, false, 1), "<fim_prefix> not parsed without parse_special");
        EXPECT(tokenizer_is_eog(tok, 0), "StarCoder <|endoftext|> ends generation");
        free(plain);
        free(fim);
        tokenizer_destroy(tok);
    }

    snprintf(path, sizeof path, "%s/ggml-vocab-gpt-2.gguf", vocab_dir);
    tok = load_path(path);
    if (tok) {
        check_encode(tok, "Hello<|endoftext|>", false, true, IDS(15496, 50256));
        EXPECT(!encode_has(tok, "Hello<|endoftext|>", false, 50256), "GPT-2 without parse_special");
        check_decode(tok, IDS(15496, 50256), true, "Hello<|endoftext|>");
        check_decode(tok, IDS(15496, 50256), false, "Hello");
        EXPECT(tokenizer_is_eog(tok, 50256), "GPT-2 eos ends generation");
        tokenizer_destroy(tok);
    }

    snprintf(path, sizeof path, "%s/ggml-vocab-llama-spm.gguf", vocab_dir);
    tok = load_path(path);
    if (tok) {
        check_encode(tok, "<s>Hello", false, true, IDS(1, 15043));
        check_encode(tok, "Hello", true, false, IDS(1, 15043));
        check_encode(tok, "<s>Hello", true, true, IDS(1, 1, 15043));
        check_encode(tok, "Hello</s>", false, true, IDS(15043, 2));
        EXPECT(!encode_has(tok, "<s>Hello", false, 1), "SPM <s> without parse_special");
        check_decode(tok, IDS(1, 15043), false, "Hello");
        check_decode(tok, IDS(1, 15043), true, "<s> Hello");
        EXPECT(tokenizer_is_eog(tok, 2) && !tokenizer_is_eog(tok, 1), "SPM eog");
        EXPECT(tokenizer_vocab_size(tok) == 32000, "SPM vocab size");
        tokenizer_destroy(tok);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s WORK_DIR [VOCAB_DIR]\n", argv[0]);
        return 2;
    }
    if (argc == 3) {
        if (!tt_exists(argv[2])) return tt_missing_shared(argv[2]);
        published(argv[2]);
    } else {
        synthetic_bytelevel(argv[1]);
        synthetic_spm(argv[1]);
    }
    if (tt_failures) fprintf(stderr, "%d failure(s)\n", tt_failures);
    else printf("all special-token checks pass\n");
    return tt_failures ? 1 : 0;
}
