/* One .safetensors file: the length prefix, the JSON header and every tensor entry. Each
 * tensor the reader accepts must lie inside the file and have the bytes its shape needs. */
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("input.safetensors", data, size);
    safetensors_file *f = NULL;
    if (safetensors_open(path, &f) == IFN_OK) {
        for (size_t i = 0; i < safetensors_n_tensors(f); i++) {
            const safetensors_tensor *t = safetensors_tensor_at(f, i);
            FUZZ_ASSERT(t->n_dims >= 0 && t->n_dims <= SAFETENSORS_MAX_DIMS);
            size_t n = ifn_dtype_block_bytes(t->type);
            for (int d = 0; d < t->n_dims; d++) n *= (size_t)t->shape[d];
            FUZZ_ASSERT(n == t->nbytes && t->nbytes <= size);
            fuzz_touch(t->data, t->nbytes);
        }
        safetensors_close(f);
    }
    ifn_error_clear();
    return 0;
}
