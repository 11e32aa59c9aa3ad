/* llama.cpp's published tokenizer vectors (test-tokenizer-0 convention): each input of
 * <vocab>.gguf.inp encoded with add_special=false, parse_special=false must give the ids of
 * the matching line of <vocab>.gguf.out. Also checks that decoding gives the input back and
 * that the streaming detokenizer agrees with decode.
 *
 *   test_tokenizer_vectors VOCAB_DIR NAME              tokenizer from VOCAB_DIR/NAME.gguf
 *   test_tokenizer_vectors VOCAB_DIR NAME JSON_DIR     from JSON_DIR/tokenizer.json (+config)
 *   test_tokenizer_vectors VOCAB_DIR NAME FILE.gguf    from another GGUF file's metadata (one
 *                                                      infernode quantize wrote) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tok_test_util.h"
#include "tokenizer.h"

#define SEP "\n__ggml_vocab_test__\n"

typedef struct {
    const char *text;
    size_t len;
} input;

/* Inputs are separated by SEP; the first starts the file and the text after the last SEP
 * (empty in the published files) is not an input. */
static size_t split_inputs(char *buf, size_t len, input **out)
{
    size_t n = 0, cap = 64, sep_len = strlen(SEP);
    input *v = malloc(cap * sizeof *v);
    char *p = buf, *end = buf + len;
    for (;;) {
        char *m = NULL;
        for (char *q = p; q + sep_len <= end; q++)
            if (memcmp(q, SEP, sep_len) == 0) {
                m = q;
                break;
            }
        if (!m) break;
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[n].text = p;
        v[n].len = (size_t)(m - p);
        n++;
        p = m + sep_len;
    }
    *out = v;
    return n;
}

/* Parses the next line of ids; returns the count (ids in *ids, malloc'd). */
static size_t parse_line(char **cursor, int32_t **ids)
{
    char *p = *cursor, *eol = strchr(p, '\n');
    if (!eol) eol = p + strlen(p);
    size_t n = 0, cap = 16;
    int32_t *v = malloc(cap * sizeof *v);
    while (p < eol) {
        char *q;
        long x = strtol(p, &q, 10);
        if (q == p) {
            p++;
            continue;
        }
        if (q > eol) break;
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = (int32_t)x;
        p = q;
    }
    *cursor = *eol ? eol + 1 : eol;
    *ids = v;
    return n;
}

/* True if s[0..n) is valid UTF-8. */
static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t need = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                    : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (need == 0 || i + need > n) return false;
        for (size_t k = 1; k < need; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return false;
        i += need;
    }
    return true;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_next(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* True if a is b with some bytes left out. */
static bool is_subsequence(const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = 0;
    for (size_t k = 0; k < nb && i < na; k++)
        if (a[i] == b[k]) i++;
    return i == na;
}

/* Random texts, some with invalid UTF-8, NUL bytes and special-token lookalikes: encode must
 * never fail; decode must give valid UTF-8 back exactly (invalid bytes too where the vocabulary
 * has them: a byte-level vocabulary may lack the bytes valid UTF-8 never uses, which are then
 * dropped); the stream must give valid UTF-8, the same text as decode for valid input.
 * "\xE2\x96\x81" (the metaspace escape itself) is left out: SPM decodes it as a space.
 * Returns the number of failures. */
static int random_round_trips(const tokenizer *tok, int count, int *lossy)
{
    int n_lossy = 0;
    static const char *const PIECES[] = {
        " ", "  ", "\n", "\t", "\r\n", "a", "Hello", " world", "'s", "'LL", "123", "4567", "!?",
        "...", "\xC3\xA9", "\xE4\xB8\xAD\xE6\x96\x87", "\xF0\x9F\x98\x80", "<s>", "</s>", "<|endoftext|>", "<fim_prefix>", "<0x41>",
        "\xC2\xA0", "\xE3\x80\x80"};
    size_t n_pieces = sizeof PIECES / sizeof PIECES[0];
    int failures = 0;
    size_t cap = 64 + tokenizer_max_token_bytes(tok);
    char *chunk = malloc(cap);
    for (int iter = 0; iter < count; iter++) {
        char text[512];
        size_t len = 0;
        int parts = (int)(rng_next() % 12);
        bool raw = rng_next() % 4 == 0;
        for (int p = 0; p < parts; p++) {
            if (raw && rng_next() % 3 == 0) {
                text[len++] = (char)(rng_next() & 0xFF);
                continue;
            }
            const char *piece = PIECES[rng_next() % n_pieces];
            memcpy(text + len, piece, strlen(piece));
            len += strlen(piece);
        }
        int32_t *ids = NULL;
        size_t n = 0;
        char *back = NULL;
        size_t back_len = 0;
        bool ok = tokenizer_encode(tok, text, len, false, false, &ids, &n) == IFN_OK &&
                  tokenizer_decode(tok, ids, n, false, &back, &back_len) == IFN_OK;
        if (ok && valid_utf8(text, len)) ok = back_len == len && memcmp(back, text, len) == 0;
        else if (ok) ok = is_subsequence(back, back_len, text, len);
        if (ok && (back_len != len || memcmp(back, text, len) != 0)) n_lossy++;
        /* Stream it. */
        detok_stream *ds = NULL;
        char *streamed = malloc(3 * len + 16);
        size_t n_stream = 0, got = 0;
        ok = ok && detok_stream_create(tok, false, &ds) == IFN_OK;
        for (size_t k = 0; k < n && ok; k++) {
            ok = detok_stream_push(ds, ids[k], chunk, cap, &got) == IFN_OK &&
                 n_stream + got <= 3 * len + 16;
            if (ok) memcpy(streamed + n_stream, chunk, got), n_stream += got;
        }
        ok = ok && detok_stream_finish(ds, chunk, cap, &got) == IFN_OK && n_stream + got <= 3 * len + 16;
        if (ok) memcpy(streamed + n_stream, chunk, got), n_stream += got;
        ok = ok && valid_utf8(streamed, n_stream);
        if (ok && valid_utf8(text, len)) ok = n_stream == len && memcmp(streamed, text, len) == 0;
        if (!ok) {
            if (++failures <= 5) {
                fprintf(stderr, "FAIL random round trip ");
                tt_print_escaped(stderr, text, len);
                fprintf(stderr, " (%s)\n  ids:", ifn_error_detail());
                tt_print_ids(stderr, ids, n);
                fputc('\n', stderr);
            }
            ifn_error_clear();
        }
        detok_stream_destroy(ds);
        free(streamed);
        free(back);
        free(ids);
    }
    free(chunk);
    *lossy = n_lossy;
    return failures;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s VOCAB_DIR NAME [JSON_DIR]\n", argv[0]);
        return 2;
    }
    char gguf_path[4096], inp_path[4096 + 8], out_path[4096 + 8];
    snprintf(gguf_path, sizeof gguf_path, "%s/%s.gguf", argv[1], argv[2]);
    snprintf(inp_path, sizeof inp_path, "%s.inp", gguf_path);
    snprintf(out_path, sizeof out_path, "%s.out", gguf_path);
    if (!tt_exists(argv[1])) return tt_missing_shared(argv[1]);

    tokenizer *tok = NULL;
    gguf_file *gf = NULL;
    const char *source;
    char json_path[4096], config_path[4096];
    const size_t arg3_len = argc == 4 ? strlen(argv[3]) : 0;
    const bool from_json = argc == 4 && !(arg3_len > 5 && strcmp(argv[3] + arg3_len - 5, ".gguf") == 0);
    if (argc == 4 && !from_json) snprintf(gguf_path, sizeof gguf_path, "%s", argv[3]);
    if (from_json) {
        snprintf(json_path, sizeof json_path, "%s/tokenizer.json", argv[3]);
        snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", argv[3]);
        source = json_path;
        if (tokenizer_from_json(json_path, config_path, &tok) != IFN_OK) {
            fprintf(stderr, "FAIL: tokenizer_from_json(%s): %s\n", json_path, ifn_error_detail());
            return 1;
        }
    } else {
        source = gguf_path;
        if (gguf_file_open(gguf_path, &gf) != IFN_OK) {
            fprintf(stderr, "FAIL: gguf_file_open: %s\n", ifn_error_detail());
            return 1;
        }
        if (tokenizer_from_gguf(gf, &tok) != IFN_OK) {
            fprintf(stderr, "FAIL: tokenizer_from_gguf(%s): %s\n", gguf_path, ifn_error_detail());
            gguf_file_close(gf);
            return 1;
        }
    }

    size_t inp_len, out_len;
    char *inp = tt_read_file(inp_path, &inp_len), *outs = tt_read_file(out_path, &out_len);
    if (!inp || !outs) {
        fprintf(stderr, "FAIL: cannot read %s or %s\n", inp_path, out_path);
        return 1;
    }
    input *inputs;
    size_t n_inputs = split_inputs(inp, inp_len, &inputs);
    char *cursor = outs;
    size_t pass = 0, roundtrip_ok = 0, stream_ok = 0;
    size_t cap = 64 + tokenizer_max_token_bytes(tok);
    char *chunk = malloc(cap);

    for (size_t i = 0; i < n_inputs; i++) {
        int32_t *want;
        size_t n_want = parse_line(&cursor, &want);
        int32_t *got = NULL;
        size_t n_got = 0;
        ifn_status st = tokenizer_encode(tok, inputs[i].text, inputs[i].len, false, false, &got, &n_got);
        bool same = st == IFN_OK && n_got == n_want &&
                    (n_got == 0 || memcmp(got, want, n_got * sizeof *got) == 0);
        if (same) {
            pass++;
        } else {
            fprintf(stderr, "FAIL vector %zu ", i);
            tt_print_escaped(stderr, inputs[i].text, inputs[i].len);
            if (st != IFN_OK) fprintf(stderr, "\n  error: %s", ifn_error_detail());
            fprintf(stderr, "\n  want:");
            tt_print_ids(stderr, want, n_want);
            fprintf(stderr, "\n  got: ");
            tt_print_ids(stderr, got, n_got);
            fputc('\n', stderr);
            ifn_error_clear();
        }

        /* decode(encode(x)) == x (for SPM, decode drops the space the prefix added). */
        char *text = NULL;
        size_t len = 0;
        st = tokenizer_decode(tok, got, n_got, false, &text, &len);
        if (st == IFN_OK && len == inputs[i].len && memcmp(text, inputs[i].text, len) == 0) {
            roundtrip_ok++;
        } else {
            fprintf(stderr, "FAIL round trip %zu ", i);
            tt_print_escaped(stderr, inputs[i].text, inputs[i].len);
            fprintf(stderr, " -> ");
            if (text) tt_print_escaped(stderr, text, len);
            fputc('\n', stderr);
        }

        /* The streaming detokenizer yields the same text (the inputs are valid UTF-8). */
        detok_stream *ds = NULL;
        size_t n_stream = 0;
        char *streamed = malloc(len + 64);
        bool stream_same = detok_stream_create(tok, false, &ds) == IFN_OK;
        for (size_t k = 0; k < n_got && stream_same; k++) {
            size_t n = 0;
            stream_same = detok_stream_push(ds, got[k], chunk, cap, &n) == IFN_OK &&
                          n_stream + n <= len;
            if (stream_same) memcpy(streamed + n_stream, chunk, n), n_stream += n;
        }
        size_t n_tail = 0;
        stream_same = stream_same && detok_stream_finish(ds, chunk, cap, &n_tail) == IFN_OK &&
                      n_tail == 0 && n_stream == len && memcmp(streamed, text, len) == 0;
        if (stream_same) stream_ok++;
        else fprintf(stderr, "FAIL streaming detok %zu: %s\n", i, ifn_error_detail());
        ifn_error_clear();
        detok_stream_destroy(ds);
        free(streamed);
        free(text);
        free(got);
        free(want);
    }
    printf("%s: %zu/%zu vectors pass, %zu/%zu round-trip, %zu/%zu stream\n", source, pass,
           n_inputs, roundtrip_ok, n_inputs, stream_ok, n_inputs);
    int lossy = 0, random_failures = random_round_trips(tok, 3000, &lossy);
    printf("%s: %d/3000 random texts fail; %d lose bytes the vocabulary lacks\n", source,
           random_failures, lossy);
    int ok = n_inputs > 0 && pass == n_inputs && roundtrip_ok == n_inputs &&
             stream_ok == n_inputs && random_failures == 0;
    free(chunk);
    free(inputs);
    free(inp);
    free(outs);
    tokenizer_destroy(tok);
    gguf_file_close(gf);
    return ok ? 0 : 1;
}
