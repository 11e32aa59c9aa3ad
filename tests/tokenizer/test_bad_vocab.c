/* Malformed tokenizer metadata, in GGUF files and tokenizer.json files written here, must give
 * a clear error that names the offending key or value, never a crash (run it under ASan).
 *
 *   test_bad_vocab WORK_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tok_fixtures.h"
#include "tok_test_util.h"
#include "tokenizer.h"

static const char *work_dir;

/* Loads the GGUF in w; returns the status and leaves the error detail in place. */
static ifn_status load_gguf(gguf_writer *w, const char *name, tokenizer **tok)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", work_dir, name);
    *tok = NULL;
    if (gw_save(w, path) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    gguf_file *f = NULL;
    ifn_error_clear();
    ifn_status st = gguf_file_open(path, &f);
    if (st == IFN_OK) st = tokenizer_from_gguf(f, tok);
    gguf_file_close(f);
    return st;
}

static void expect_error(ifn_status st, ifn_status want, const char *needle, const char *what)
{
    const char *detail = ifn_error_detail();
    EXPECT(st == want, "%s: got %s (%s), want %s", what, ifn_status_str(st), detail,
           ifn_status_str(want));
    EXPECT(strstr(detail, needle) != NULL, "%s: error \"%s\" does not mention \"%s\"", what,
           detail, needle);
    if (st == want) printf("ok   %-40s %s\n", what, detail);
    ifn_error_clear();
}

static void gguf_cases(void)
{
    gguf_writer w = {0};
    tokenizer *tok = NULL;

    fixture_spm_keys(&w, NULL);
    EXPECT_OK(load_gguf(&w, "good_spm", &tok));
    tokenizer_destroy(tok);

    /* tokens of the wrong type: an array of int32, and a plain string */
    fixture_spm_keys(&w, "tokens");
    int32_t nums[SPM_N] = {0};
    gw_arr_i32(&w, "tokenizer.ggml.tokens", nums, SPM_N);
    expect_error(load_gguf(&w, "tokens_i32", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.tokens",
                 "tokens as int32 array");
    fixture_spm_keys(&w, "tokens");
    gw_str(&w, "tokenizer.ggml.tokens", "not an array");
    expect_error(load_gguf(&w, "tokens_str", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.tokens",
                 "tokens as a string");

    /* scores: one entry short; of the wrong element type */
    fixture_spm_keys(&w, "scores");
    float scores[SPM_N] = {0};
    gw_arr_f32(&w, "tokenizer.ggml.scores", scores, SPM_N - 1);
    expect_error(load_gguf(&w, "scores_short", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.scores",
                 "scores count mismatch");
    fixture_spm_keys(&w, "scores");
    gw_arr_i32(&w, "tokenizer.ggml.scores", nums, SPM_N);
    expect_error(load_gguf(&w, "scores_i32", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.scores",
                 "scores as int32");

    /* token types: a value outside 1..6; too few */
    fixture_spm_keys(&w, "token_type");
    int32_t types[SPM_N];
    for (int i = 0; i < SPM_N; i++) types[i] = 1;
    types[7] = 9;
    gw_arr_i32(&w, "tokenizer.ggml.token_type", types, SPM_N);
    expect_error(load_gguf(&w, "type_9", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.token_type[7]",
                 "token type 9");
    fixture_spm_keys(&w, "token_type");
    gw_arr_i32(&w, "tokenizer.ggml.token_type", types, 3);
    expect_error(load_gguf(&w, "types_short", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.token_type",
                 "token types count mismatch");

    /* special ids: out of range, negative, of the wrong type */
    fixture_spm_keys(&w, "bos");
    gw_u32(&w, "tokenizer.ggml.bos_token_id", 100000);
    expect_error(load_gguf(&w, "bos_range", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.bos_token_id",
                 "bos id out of range");
    fixture_spm_keys(&w, "bos");
    gw_i32(&w, "tokenizer.ggml.bos_token_id", -5);
    expect_error(load_gguf(&w, "bos_negative", &tok), IFN_ERR_FORMAT,
                 "tokenizer.ggml.bos_token_id", "bos id negative");
    fixture_spm_keys(&w, "bos");
    gw_str(&w, "tokenizer.ggml.bos_token_id", "1");
    expect_error(load_gguf(&w, "bos_string", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.bos_token_id",
                 "bos id as a string");
    fixture_spm_keys(&w, NULL);
    gw_u32(&w, "tokenizer.ggml.padding_token_id", SPM_N);
    expect_error(load_gguf(&w, "pad_range", &tok), IFN_ERR_FORMAT,
                 "tokenizer.ggml.padding_token_id", "padding id out of range");

    /* no tokenizer; unknown model; empty vocabulary */
    gw_str(&w, "general.architecture", "llama");
    expect_error(load_gguf(&w, "no_tokenizer", &tok), IFN_ERR_NOT_FOUND, "tokenizer.ggml.model",
                 "no tokenizer keys");
    gw_str(&w, "tokenizer.ggml.model", "bert");
    gw_arr_str(&w, "tokenizer.ggml.tokens", (const char *const[]){"a"}, 1);
    expect_error(load_gguf(&w, "model_bert", &tok), IFN_ERR_UNSUPPORTED, "\"bert\"",
                 "unknown tokenizer model");
    gw_str(&w, "tokenizer.ggml.model", "llama");
    gw_arr_str(&w, "tokenizer.ggml.tokens", NULL, 0);
    expect_error(load_gguf(&w, "empty_vocab", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.tokens",
                 "empty vocabulary");

    /* byte-level: unknown pre-tokenizer, merges that do not fit the vocabulary */
    fixture_bytelevel_keys(&w, "qwen2");
    expect_error(load_gguf(&w, "pre_qwen2", &tok), IFN_ERR_UNSUPPORTED, "\"qwen2\"",
                 "unknown pre-tokenizer");
    fixture_bytelevel_keys(&w, "gpt-2");
    EXPECT_OK(load_gguf(&w, "good_bytelevel", &tok));
    tokenizer_destroy(tok);

    static char bytes[256][4];
    const char *toks[258];
    for (int b = 0; b < 256; b++) {
        size_t n = unicode_utf8_encode(unicode_byte_to_cp((uint8_t)b), (unsigned char *)bytes[b]);
        bytes[b][n] = '\0';
        toks[b] = bytes[b];
    }
    toks[256] = "he";
    toks[257] = "xy";
    gw_str(&w, "tokenizer.ggml.model", "gpt2");
    gw_arr_str(&w, "tokenizer.ggml.tokens", toks, 258);
    gw_arr_str(&w, "tokenizer.ggml.merges", (const char *const[]){"h e", "q z"}, 2);
    expect_error(load_gguf(&w, "merge_missing", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.merges[1]",
                 "merge result not a token");
    gw_str(&w, "tokenizer.ggml.model", "gpt2");
    gw_arr_str(&w, "tokenizer.ggml.tokens", toks, 258);
    gw_arr_str(&w, "tokenizer.ggml.merges", (const char *const[]){"h e", "xy"}, 2);
    expect_error(load_gguf(&w, "merge_nospace", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.merges[1]",
                 "merge without a space");
    gw_str(&w, "tokenizer.ggml.model", "gpt2");
    gw_arr_str(&w, "tokenizer.ggml.tokens", toks, 258);
    expect_error(load_gguf(&w, "no_merges", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.merges",
                 "byte-level without merges");
    gw_str(&w, "tokenizer.ggml.model", "llama");
    expect_error(load_gguf(&w, "no_tokens", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.tokens",
                 "model without tokens");
    gw_str(&w, "tokenizer.ggml.model", "gpt2");
    gw_arr_str(&w, "tokenizer.ggml.tokens", toks, 258);
    gw_arr_i32(&w, "tokenizer.ggml.merges", nums, 2);
    expect_error(load_gguf(&w, "merges_i32", &tok), IFN_ERR_FORMAT, "tokenizer.ggml.merges",
                 "merges as int32");
}

/* Writes text to WORK_DIR/name and loads it as tokenizer.json (config: optional text). */
static ifn_status load_json(const char *name, const char *json, const char *config)
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
    ifn_status st = tokenizer_from_json(path, config ? cpath : NULL, &tok);
    tokenizer_destroy(tok);
    return st;
}

#define BL_PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"

static void json_cases(void)
{
    EXPECT_OK(load_json("good", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
                        " \"merges\": [\"a b\"]}, " BL_PRE "}", NULL));
    EXPECT_OK(load_json("good_pairs", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
                        " \"merges\": [[\"a\", \"b\"]]}, " BL_PRE "}", NULL));
    expect_error(load_json("not_json", "{\"model\": ", NULL), IFN_ERR_FORMAT, "not_json.json",
                 "truncated JSON");
    expect_error(load_json("no_model", "{\"vocab\": {}}", NULL), IFN_ERR_FORMAT, "\"model\"",
                 "no model");
    expect_error(load_json("unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", NULL),
                 IFN_ERR_UNSUPPORTED, "Unigram", "Unigram model");
    expect_error(load_json("bad_id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"zero\"},"
                           " \"merges\": []}, " BL_PRE "}", NULL),
                 IFN_ERR_FORMAT, "model.vocab[0]", "vocab id not a number");
    expect_error(load_json("huge_id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e12},"
                           " \"merges\": []}, " BL_PRE "}", NULL),
                 IFN_ERR_FORMAT, "model.vocab[0]", "vocab id huge");
    /* Ids no integer type holds: refused naming the entry, range-checked before any
     * conversion (1e999 parses to inf; a cast of it to an integer is undefined behaviour). */
    static const char *const huge[] = { "1e999", "-1e999", "1e30", "9223372036854775808", "-9223372036854775809",
                                        "18446744073709551616", "0.5", "-0.5", "16777216" };
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        char json[512], what[64];
        snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": %s}, \"merges\": []}, %s}",
                 huge[i], BL_PRE);
        snprintf(what, sizeof what, "vocab id %s", huge[i]);
        expect_error(load_json("huge_vocab_id", json, NULL), IFN_ERR_FORMAT, "model.vocab[0]", what);
        snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                 " \"added_tokens\": [{\"id\": %s, \"content\": \"<s>\"}], %s}", huge[i], BL_PRE);
        snprintf(what, sizeof what, "added token id %s", huge[i]);
        expect_error(load_json("huge_added_id", json, NULL), IFN_ERR_FORMAT, "added_tokens[0]", what);
    }
    expect_error(load_json("dup_id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0},"
                           " \"merges\": []}, " BL_PRE "}", NULL),
                 IFN_ERR_FORMAT, "id 0", "two texts, one id");
    expect_error(load_json("merge_missing", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1},"
                           " \"merges\": [\"a b\"]}, " BL_PRE "}", NULL),
                 IFN_ERR_FORMAT, "model.merges[0]", "merge result missing");
    expect_error(load_json("merge_shape", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1},"
                           " \"merges\": [[\"a\"]]}, " BL_PRE "}", NULL),
                 IFN_ERR_FORMAT, "model.merges[0]", "merge of one token");
    expect_error(load_json("regex", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                           "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"},"
                           "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}}", NULL),
                 IFN_ERR_UNSUPPORTED, "\\w+", "unknown Split regex");
    expect_error(load_json("nfkc", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " \"normalizer\": {\"type\": \"NFKC\"}, " BL_PRE "}", NULL),
                 IFN_ERR_UNSUPPORTED, "NFKC", "NFKC normalizer");
    expect_error(load_json("bert_pre", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}", NULL),
                 IFN_ERR_UNSUPPORTED, "BertPreTokenizer", "BERT pre-tokenizer");
    expect_error(load_json("no_pre", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", NULL),
                 IFN_ERR_UNSUPPORTED, "neither", "no pre-tokenizer, no normalizer");
    expect_error(load_json("meta_split", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\","
                           " \"prepend_scheme\": \"always\", \"split\": true}}", NULL),
                 IFN_ERR_UNSUPPORTED, "split", "Metaspace that splits");
    expect_error(load_json("wordpiece_dec", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " " BL_PRE ", \"decoder\": {\"type\": \"WordPiece\"}}", NULL),
                 IFN_ERR_UNSUPPORTED, "WordPiece", "WordPiece decoder");
    expect_error(load_json("added_bad", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " \"added_tokens\": [{\"id\": -1, \"content\": \"<s>\"}], " BL_PRE "}", NULL),
                 IFN_ERR_FORMAT, "added_tokens[0]", "added token with id -1");
    expect_error(load_json("cfg_bos", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " " BL_PRE "}", "{\"bos_token\": \"<s>\", \"add_bos_token\": true}"),
                 IFN_ERR_FORMAT, "bos_token", "config bos not in vocab");
    expect_error(load_json("cfg_broken", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " " BL_PRE "}", "[1, 2"),
                 IFN_ERR_FORMAT, "config", "config not JSON");
    char missing[4096 + 32];
    snprintf(missing, sizeof missing, "%s/does-not-exist.json", work_dir);
    tokenizer *tok = NULL;
    ifn_error_clear();
    expect_error(tokenizer_from_json(missing, NULL, &tok), IFN_ERR_IO, "does-not-exist.json",
                 "missing file");
}

static void api_cases(void)
{
    gguf_writer w = {0};
    tokenizer *tok = NULL;
    fixture_spm_keys(&w, NULL);
    if (load_gguf(&w, "api_spm", &tok) != IFN_OK) {
        EXPECT(0, "cannot load the fixture: %s", ifn_error_detail());
        return;
    }
    int32_t bad[] = {SPM_A, SPM_N}, *ids = NULL;
    char *text = NULL;
    size_t n = 0;
    expect_error(tokenizer_decode(tok, bad, 2, false, &text, &n), IFN_ERR_RANGE, "ids[1]",
                 "decode id out of range");
    bad[1] = -1;
    expect_error(tokenizer_decode(tok, bad, 2, false, &text, &n), IFN_ERR_RANGE, "ids[1] = -1",
                 "decode negative id");
    expect_error(tokenizer_encode(tok, NULL, 3, false, false, &ids, &n), IFN_ERR_INVALID_ARG,
                 "NULL", "encode NULL text");
    EXPECT_OK(tokenizer_encode(tok, NULL, 0, false, false, &ids, &n));
    EXPECT(n == 0 && ids == NULL, "empty text gives no ids");
    /* Invalid UTF-8 is encoded as its bytes. */
    EXPECT_OK(tokenizer_encode(tok, "a\xFF\xC3", 3, false, false, &ids, &n));
    int32_t want[] = {SPM_META_A, SPM_BYTE0 + 0xFF, SPM_BYTE0 + 0xC3};
    EXPECT(n == 3 && memcmp(ids, want, sizeof want) == 0, "invalid UTF-8 becomes byte tokens");
    EXPECT_OK(tokenizer_decode(tok, ids, n, false, &text, &n));
    EXPECT(n == 3 && memcmp(text, "a\xFF\xC3", 3) == 0, "decode gives the bytes back");
    free(text);
    free(ids);
    tokenizer_destroy(tok);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s WORK_DIR\n", argv[0]);
        return 2;
    }
    work_dir = argv[1];
    gguf_cases();
    json_cases();
    api_cases();
    if (tt_failures) fprintf(stderr, "%d failure(s)\n", tt_failures);
    return tt_failures ? 1 : 0;
}
