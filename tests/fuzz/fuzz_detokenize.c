/* The decoders on any ids (some outside the vocabulary): tokenizer_decode, and the streaming
 * detokenizer after a prompt, which must give whole UTF-8 characters only and within the
 * room its header promises. The first byte picks the tokenizer, render_special and how many
 * ids form the prompt; then each 2 bytes are an id. */
#include "fuzz_vocabs.h"

static fuzz_vocabs vocabs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_vocabs_load(&vocabs);
    return 0;
}

/* Whole, well-formed UTF-8 characters (no overlongs, surrogates or values past U+10FFFF). */
static bool utf8_whole(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need = c < 0x80 ? 0 : c >= 0xC2 && c < 0xE0 ? 1 : c >= 0xE0 && c < 0xF0 ? 2
                                                : c >= 0xF0 && c < 0xF5 ? 3 : 9;
        if (need == 9 || n - i <= need) return false;
        unsigned cp = need ? c & (0x3F >> need) : c;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const unsigned min_cp[] = { 0, 0x80, 0x800, 0x10000 };
        if (cp < min_cp[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += need + 1;
    }
    return true;
}

static void stream(const tokenizer *tok, bool render_special, const int32_t *ids, size_t n, size_t n_prompt)
{
    detok_stream *s = NULL;
    FUZZ_ASSERT(detok_stream_create(tok, render_special, &s) == IFN_OK);
    size_t cap = 64 + tokenizer_max_token_bytes(tok), got = 0;
    char *out = malloc(cap);
    FUZZ_ASSERT(out);
    if (detok_stream_follow(s, ids, n_prompt) == IFN_OK) {
        for (size_t i = n_prompt; i < n; i++) {
            if (detok_stream_push(s, ids[i], out, cap, &got) != IFN_OK) {
                FUZZ_ASSERT(ids[i] < 0 || ids[i] >= tokenizer_vocab_size(tok)); /* the room always suffices */
                continue;
            }
            FUZZ_ASSERT(got <= cap && utf8_whole((const unsigned char *)out, got));
        }
        FUZZ_ASSERT(detok_stream_finish(s, out, cap, &got) == IFN_OK);
        FUZZ_ASSERT(got <= cap && utf8_whole((const unsigned char *)out, got));
    }
    ifn_error_clear();
    free(out);
    detok_stream_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const tokenizer *tok = vocabs.tok[data[0] % vocabs.n];
    const unsigned mode = data[0] / vocabs.n;
    const bool render_special = mode & 1;
    size_t n = (size - 1) / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    FUZZ_ASSERT(ids);
    const int32_t span = tokenizer_vocab_size(tok) + 4; /* a few ids past each end */
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((data[1 + 2 * i] | data[2 + 2 * i] << 8) % span) - 2;
    char *text = NULL;
    size_t len = 0;
    if (tokenizer_decode(tok, ids, n, render_special, &text, &len) == IFN_OK) {
        FUZZ_ASSERT(text[len] == '\0');
        free(text);
    }
    ifn_error_clear();
    size_t n_prompt = (mode >> 1) % 4 < n ? (mode >> 1) % 4 : n;
    stream(tok, render_special, ids, n, n_prompt);
    free(ids);
    return 0;
}
