/* The streaming detokenizer never emits part of a UTF-8 character: an emoji spread over byte
 * tokens comes out whole once complete; bytes that cannot form a character, or a sequence
 * that never completes, become U+FFFD; a too-small buffer consumes nothing.
 *
 *   test_detok_stream WORK_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tok_fixtures.h"
#include "tok_test_util.h"
#include "tokenizer.h"

#define FFFD "\xEF\xBF\xBD"

static tokenizer *load_fixture(const char *work_dir, const char *name, gguf_writer *w)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", work_dir, name);
    if (gw_save(w, path) != 0) exit(1);
    gguf_file *f = NULL;
    tokenizer *tok = NULL;
    if (gguf_file_open(path, &f) != IFN_OK || tokenizer_from_gguf(f, &tok) != IFN_OK) {
        fprintf(stderr, "FAIL: loading %s: %s\n", path, ifn_error_detail());
        exit(1);
    }
    gguf_file_close(f);
    return tok;
}

/* Pushes ids one by one; each push must yield steps[i] (NULL: nothing); finish yields tail. */
static void check_stream(const tokenizer *tok, bool render_special, const int32_t *ids, size_t n,
                         const char *const *steps, const char *tail, const char *what)
{
    detok_stream *s = NULL;
    EXPECT_OK(detok_stream_create(tok, render_special, &s));
    if (!s) return;
    char buf[512];
    for (size_t i = 0; i < n; i++) {
        size_t got = 0;
        EXPECT_OK(detok_stream_push(s, ids[i], buf, sizeof buf, &got));
        const char *want = steps[i] ? steps[i] : "";
        EXPECT(got == strlen(want) && memcmp(buf, want, got) == 0,
               "%s: push %zu (id %d) gave %zu bytes, want \"%s\"", what, i, ids[i], got, want);
    }
    size_t got = 0;
    EXPECT_OK(detok_stream_finish(s, buf, sizeof buf, &got));
    EXPECT(got == strlen(tail) && memcmp(buf, tail, got) == 0, "%s: finish gave %zu bytes", what, got);
    detok_stream_destroy(s);
}

#define B(x) (SPM_BYTE0 + (x))
#define N(a) (sizeof(a) / sizeof((a)[0]))

static void spm_cases(const tokenizer *tok)
{
    /* U+1F600 as four byte tokens: nothing, nothing, nothing, the emoji. */
    int32_t emoji[] = {SPM_META_A, B(0xF0), B(0x9F), B(0x98), B(0x80), SPM_B};
    const char *emoji_steps[] = {"a", NULL, NULL, NULL, "\xF0\x9F\x98\x80", "b"};
    check_stream(tok, false, emoji, N(emoji), emoji_steps, "", "emoji over byte tokens");

    /* A sequence cut short by an ASCII byte: U+FFFD for the stray start, then the text. */
    int32_t cut[] = {B(0xE2), B(0x82), SPM_A};
    const char *cut_steps[] = {NULL, NULL, FFFD "a"};
    check_stream(tok, false, cut, N(cut), cut_steps, "", "interrupted sequence");

    /* A lone continuation byte and an impossible byte are replaced at once. */
    int32_t stray[] = {B(0x80), B(0xFF), SPM_B};
    const char *stray_steps[] = {FFFD, FFFD, "b"};
    check_stream(tok, false, stray, N(stray), stray_steps, "", "stray bytes");

    /* Overlong and surrogate starts can never complete: E0 80, ED A0. */
    int32_t overlong[] = {B(0xE0), B(0x80), B(0xED), B(0xA0)};
    const char *overlong_steps[] = {NULL, FFFD FFFD, NULL, FFFD FFFD};
    check_stream(tok, false, overlong, N(overlong), overlong_steps, "", "overlong and surrogate");

    /* A sequence that never completes is flushed by finish as one U+FFFD. */
    int32_t open[] = {SPM_B, B(0xF0), B(0x9F)};
    const char *open_steps[] = {"b", NULL, NULL};
    check_stream(tok, false, open, N(open), open_steps, FFFD, "never completed");

    /* The "▁" prefix's space is dropped once, at the start, also after an unrendered BOS. */
    int32_t lead[] = {SPM_BOS, SPM_META_AB, SPM_META_AB};
    const char *lead_steps[] = {NULL, "ab", " ab"};
    check_stream(tok, false, lead, N(lead), lead_steps, "", "leading space");
    const char *lead_special[] = {"<s>", " ab", " ab"};
    check_stream(tok, true, lead, N(lead), lead_special, "", "leading space after <s>");

    /* After a prompt (detok_stream_follow), the space stays unless the prompt has no text:
     * "▁ab" completing "<s>▁ab" is " ab", completing "<s>" alone is "ab". */
    const int32_t with_text[] = {SPM_BOS, SPM_META_AB}, without_text[] = {SPM_BOS};
    const struct { const int32_t *prompt; size_t n; const char *want; } follows[] = {
        {with_text, N(with_text), " ab"}, {without_text, N(without_text), "ab"}, {NULL, 0, "ab"},
    };
    for (size_t i = 0; i < N(follows); i++) {
        detok_stream *f = NULL;
        EXPECT_OK(detok_stream_create(tok, false, &f));
        EXPECT_OK(detok_stream_follow(f, follows[i].prompt, follows[i].n));
        char out[64];
        size_t n = 0;
        EXPECT_OK(detok_stream_push(f, SPM_META_AB, out, sizeof out, &n));
        EXPECT(n == strlen(follows[i].want) && memcmp(out, follows[i].want, n) == 0,
               "after a prompt of %zu ids: \"%.*s\", want \"%s\"", follows[i].n, (int)n, out, follows[i].want);
        detok_stream_destroy(f);
    }
    detok_stream *bad = NULL;
    EXPECT_OK(detok_stream_create(tok, false, &bad));
    const int32_t outside[] = {SPM_BOS, 1 << 20};
    ifn_status fst = detok_stream_follow(bad, outside, N(outside));
    EXPECT(fst == IFN_ERR_RANGE && strstr(ifn_error_detail(), "ids[1]"), "follow of an id outside the vocabulary: %s",
           ifn_status_str(fst));
    ifn_error_clear();
    detok_stream_destroy(bad);

    /* Too small a buffer: IFN_ERR_RANGE and nothing consumed. */
    detok_stream *s = NULL;
    EXPECT_OK(detok_stream_create(tok, false, &s));
    char buf[64];
    size_t got = 99;
    EXPECT_OK(detok_stream_push(s, B(0xC3), buf, 0, &got)); /* held back: needs no room */
    EXPECT(got == 0, "held byte writes nothing");
    ifn_status st = detok_stream_push(s, B(0xA9), buf, 1, &got);
    EXPECT(st == IFN_ERR_RANGE && got == 0, "2-byte character into 1 byte: %s", ifn_status_str(st));
    ifn_error_clear();
    EXPECT_OK(detok_stream_push(s, B(0xA9), buf, sizeof buf, &got));
    EXPECT(got == 2 && memcmp(buf, "\xC3\xA9", 2) == 0, "retry after RANGE yields the character");
    st = detok_stream_push(s, SPM_N, buf, sizeof buf, &got);
    EXPECT(st == IFN_ERR_RANGE, "id outside the vocabulary: %s", ifn_status_str(st));
    ifn_error_clear();
    EXPECT_OK(detok_stream_push(s, B(0xE2), buf, sizeof buf, &got));
    st = detok_stream_finish(s, buf, 2, &got);
    EXPECT(st == IFN_ERR_RANGE, "finish into 2 bytes: %s", ifn_status_str(st));
    ifn_error_clear();
    EXPECT_OK(detok_stream_finish(s, buf, sizeof buf, &got));
    EXPECT(got == 3 && memcmp(buf, FFFD, 3) == 0, "finish after RANGE flushes U+FFFD");
    detok_stream_destroy(s);

    /* The documented bound suffices for every token, whatever is pending. */
    size_t cap = 64 + tokenizer_max_token_bytes(tok);
    char *big = malloc(cap);
    for (int32_t id = 0; id < tokenizer_vocab_size(tok); id++) {
        EXPECT_OK(detok_stream_create(tok, true, &s));
        EXPECT_OK(detok_stream_push(s, B(0xF0), big, cap, &got));
        EXPECT_OK(detok_stream_push(s, id, big, cap, &got));
        detok_stream_destroy(s);
    }
    free(big);
}

static void bytelevel_cases(const tokenizer *tok)
{
    /* "é" (C3 A9) as two byte-level tokens (ids are the bytes), then "hell". */
    int32_t ids[] = {0xC3, 0xA9, BL_HELL, 0xE2, 0x82, 0xAC};
    const char *steps[] = {NULL, "\xC3\xA9", "hell", NULL, NULL, "\xE2\x82\xAC"};
    check_stream(tok, false, ids, N(ids), steps, "", "byte-level pieces");
    int32_t special[] = {BL_EOT, 'h', BL_TOOL};
    const char *hidden[] = {NULL, "h", "<tool>"};
    check_stream(tok, false, special, N(special), hidden, "", "control token hidden");
    const char *shown[] = {"<|endoftext|>", "h", "<tool>"};
    check_stream(tok, true, special, N(special), shown, "", "control token shown");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s WORK_DIR\n", argv[0]);
        return 2;
    }
    gguf_writer w = {0};
    fixture_spm_keys(&w, NULL);
    tokenizer *spm = load_fixture(argv[1], "detok_spm", &w);
    spm_cases(spm);
    tokenizer_destroy(spm);
    fixture_bytelevel_keys(&w, "gpt-2");
    tokenizer *bl = load_fixture(argv[1], "detok_bytelevel", &w);
    bytelevel_cases(bl);
    tokenizer_destroy(bl);
    if (tt_failures) fprintf(stderr, "%d failure(s)\n", tt_failures);
    else printf("all streaming detokenizer checks pass\n");
    return tt_failures ? 1 : 0;
}
