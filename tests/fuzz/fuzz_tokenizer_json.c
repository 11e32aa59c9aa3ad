/* A Hugging Face tokenizer.json: the input is tokenizer.json, optionally followed by a NUL byte
 * and tokenizer_config.json. A tokenizer that loads must then encode and decode: its tables
 * are what the reader built. */
#include "fuzz_util.h"
#include "tokenizer.h"

static void use(const tokenizer *tok)
{
    static const char *const texts[] = { "Hello world", " def f(x):\n\treturn x+1  # 123", "<s>a</s> <|endoftext|>",
                                         "caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80 \xFF" };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tokenizer_encode(tok, texts[i], strlen(texts[i]), true, true, &ids, &n) != IFN_OK) {
            ifn_error_clear();
            continue;
        }
        for (size_t j = 0; j < n; j++) FUZZ_ASSERT(ids[j] >= 0 && ids[j] < tokenizer_vocab_size(tok));
        char *text = NULL;
        size_t len = 0;
        if (tokenizer_decode(tok, ids, n, true, &text, &len) == IFN_OK) free(text);
        ifn_error_clear();
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    char json_path[4096 + 32];
    snprintf(json_path, sizeof json_path, "%s", fuzz_write("tokenizer.json", data, json_len));
    const char *config_path = nul ? fuzz_write("tokenizer_config.json", nul + 1, size - json_len - 1) : NULL;
    tokenizer *tok = NULL;
    if (tokenizer_from_json(json_path, config_path, &tok) == IFN_OK) {
        use(tok);
        tokenizer_destroy(tok);
    }
    ifn_error_clear();
    return 0;
}
