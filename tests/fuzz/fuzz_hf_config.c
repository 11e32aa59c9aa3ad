/* A Hugging Face model directory's config.json (and its quantization_config), read beside a
 * fixed model.safetensors: IFN_FUZZ_HF_WEIGHTS names it (the weights of the seeds' Llama
 * config); without it only the config is read and the open stops at the missing weights. */
#include <sys/stat.h>

#include "fuzz_util.h"

static char model_dir[4096 + 16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(model_dir, sizeof model_dir, "%s/hf", fuzz_dir());
    FUZZ_ASSERT(mkdir(model_dir, 0700) == 0);
    const char *weights = getenv("IFN_FUZZ_HF_WEIGHTS");
    if (weights && weights[0]) {
        char link[sizeof model_dir + 32];
        snprintf(link, sizeof link, "%s/model.safetensors", model_dir);
        FUZZ_ASSERT(symlink(weights, link) == 0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("hf/config.json", data, size);
    fuzz_open_model(model_dir);
    return 0;
}
