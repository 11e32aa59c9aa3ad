/* Test driver: converts values with infernode's scalar dtype code so that test_dtype.py can
 * compare them with NumPy.
 *   dtype_dump f32-to-f16  IN OUT   IN: float32[n]  OUT: uint16[n] (fp16 bits)
 *   dtype_dump f32-to-bf16 IN OUT   IN: float32[n]  OUT: uint16[n] (bf16 bits)
 *   dtype_dump f16-to-f32  IN OUT   IN: uint16[n]   OUT: float32[n]
 *   dtype_dump TYPE IN OUT          TYPE q8_0|q4_0|q4_1|q4_k|q6_k: IN blocks, OUT float32 values */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "dump_io.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: dtype_dump MODE IN OUT\n");
        return 2;
    }
    size_t n;
    unsigned char *in = slurp(argv[2], &n);
    FILE *out = fopen(argv[3], "wb");
    if (!in || !out) return 1;
    const char *mode = argv[1];
    if (strcmp(mode, "f32-to-f16") == 0 || strcmp(mode, "f32-to-bf16") == 0) {
        for (size_t i = 0; i + 4 <= n; i += 4) {
            float f;
            memcpy(&f, in + i, 4);
            uint16_t h = mode[7] == 'b' ? ifn_f32_to_bf16(f) : ifn_f32_to_fp16(f);
            fwrite(&h, 2, 1, out);
        }
    } else if (strcmp(mode, "f16-to-f32") == 0) {
        for (size_t i = 0; i + 2 <= n; i += 2) {
            uint16_t h;
            memcpy(&h, in + i, 2);
            float f = ifn_fp16_to_f32(h);
            fwrite(&f, 4, 1, out);
        }
    } else {
        ifn_dtype t = IFN_DTYPE_Q8_0;
        while (t < IFN_DTYPE_COUNT && strcmp(mode, ifn_dtype_name(t)) != 0) t++;
        if (ifn_dtype_block_size(t) == 1) {
            fprintf(stderr, "dtype_dump: '%s' is not a block type\n", mode);
            return 2;
        }
        int64_t values = (int64_t)(n / ifn_dtype_block_bytes(t)) * ifn_dtype_block_size(t);
        float *f = malloc((size_t)values * sizeof *f + 1);
        ifn_dtype_to_f32(t, in, f, values);
        fwrite(f, 4, (size_t)values, out);
        free(f);
    }
    free(in);
    return fclose(out) == 0 ? 0 : 1;
}
