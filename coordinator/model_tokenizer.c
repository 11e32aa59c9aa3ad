#include "model_tokenizer.h"

#include <stdio.h>
#include <unistd.h>

ifn_status model_tokenizer_load(const model_file *mf, tokenizer **out)
{
    *out = NULL;
    tokenizer *t = NULL;
    switch (model_file_format(mf)) {
    case MODEL_FORMAT_GGUF:
        if (!gguf_has_key(model_file_gguf(mf), "tokenizer.ggml.model"))
            return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: the GGUF file has no tokenizer metadata", model_file_path(mf));
        CHECK(tokenizer_from_gguf(model_file_gguf(mf), &t));
        break;
    case MODEL_FORMAT_HF: {
        char json[4096], config[4096];
        snprintf(json, sizeof json, "%s/tokenizer.json", model_file_path(mf));
        snprintf(config, sizeof config, "%s/tokenizer_config.json", model_file_path(mf));
        if (access(json, F_OK) != 0)
            return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: the model directory has no tokenizer.json", model_file_path(mf));
        CHECK(tokenizer_from_json(json, access(config, F_OK) == 0 ? config : NULL, &t));
        break;
    }
    case MODEL_FORMAT_LLAMA2C:
        return ifn_error_set(IFN_ERR_NOT_FOUND, "%s: llama2.c checkpoints carry no tokenizer", model_file_path(mf));
    }
    int vocab = model_file_config(mf)->vocab_size;
    if (tokenizer_vocab_size(t) > vocab) {
        int n = tokenizer_vocab_size(t);
        tokenizer_destroy(t);
        return ifn_error_set(IFN_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model's embedding only %d",
                             model_file_path(mf), n, vocab);
    }
    *out = t;
    return IFN_OK;
}
