/* A GPTQ checkpoint: the input is config.json (with its quantization_config), a NUL byte, then
 * model.safetensors with the qweight/qzeros/scales/g_idx tensors. Open checks every layer;
 * loading converts and packs each one. */
#include <sys/stat.h>

#include "fuzz_util.h"

static char model_dir[4096 + 16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(model_dir, sizeof model_dir, "%s/gptq", fuzz_dir());
    FUZZ_ASSERT(mkdir(model_dir, 0700) == 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t config_len = (size_t)(nul - data);
    fuzz_write("gptq/config.json", data, config_len);
    fuzz_write("gptq/model.safetensors", nul + 1, size - config_len - 1);
    fuzz_open_model(model_dir);
    return 0;
}
