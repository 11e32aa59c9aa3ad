/* The tokenizers' encoders on any bytes: plain, with special tokens parsed, as a continuation,
 * and as a fill-in-the-middle prompt. The first byte picks the tokenizer and the mode; the
 * rest is the text (for FIM, prefix NUL suffix). Every id must be in the vocabulary, and a
 * byte-level vocabulary must give the text back exactly (it has a token for every byte). */
#include "fuzz_vocabs.h"
#include "model_tokenizer.h"
#include "tokenizer_internal.h"

static fuzz_vocabs vocabs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_vocabs_load(&vocabs);
    return 0;
}

/* A byte-level vocabulary decodes what it encoded, without specials added or parsed, except
 * for the bytes it has no token for (StarCoder lacks 0xF5..0xFF): those are dropped when there
 * is no unknown token either (tokenizer.h). */
static void check_round_trip(const tokenizer *tok, const int32_t *ids, size_t n, const char *text, size_t len)
{
    if (tok->unk_fallback >= 0) return;
    char *want = malloc(len ? len : 1), *out = NULL;
    FUZZ_ASSERT(want);
    size_t want_len = 0, out_len = 0;
    for (size_t i = 0; i < len; i++)
        if (tok->byte_tokens[(unsigned char)text[i]] >= 0) want[want_len++] = text[i];
    FUZZ_ASSERT(tokenizer_decode(tok, ids, n, true, &out, &out_len) == IFN_OK);
    if (out_len != want_len || memcmp(out, want, want_len) != 0) {
        fprintf(stderr, "fuzz: encoded %zu bytes \"%.*s\", decoded %zu \"%.*s\"; ids:", len, (int)len, text, out_len,
                (int)out_len, out);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
        abort();
    }
    free(out);
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const tokenizer *tok = vocabs.tok[data[0] % vocabs.n];
    const unsigned mode = data[0] / vocabs.n;
    const bool add_special = mode & 1, parse_special = mode & 2;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    int32_t *ids = NULL;
    size_t n = 0;
    ifn_status st;
    if (mode & 4) {
        const char *nul = memchr(text, 0, len);
        size_t prefix_len = nul ? (size_t)(nul - text) : len;
        const char *suffix = nul ? nul + 1 : "";
        st = model_tokenizer_encode_fim(tok, text, prefix_len, suffix, nul ? len - prefix_len - 1 : 0, add_special, &ids,
                                        &n);
    } else if (mode & 8) {
        st = tokenizer_encode_continuation(tok, text, len, &ids, &n);
    } else {
        st = tokenizer_encode(tok, text, len, add_special, parse_special, &ids, &n);
        if (st == IFN_OK && tok->byte_level && !add_special && !parse_special) check_round_trip(tok, ids, n, text, len);
    }
    if (st == IFN_OK)
        for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < tokenizer_vocab_size(tok));
    free(ids);
    ifn_error_clear();
    return 0;
}
