/* A llama2.c checkpoint (.bin): the 7-int header against the file size, the tensors that
 * follow it, then loading and one step of the forward pass. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_open_model(fuzz_write("input.bin", data, size));
    return 0;
}
