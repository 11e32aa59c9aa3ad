/* Test driver: packs a matrix stored in any ifn_dtype as model loading does, so that
 * test_kquant.py can compare what the kernels see with the stored values.
 *   qweight_dump TYPE N_IN IN STORED PACKED [--quant Q] [--cols FIRST N]
 * IN holds rows of N_IN values of TYPE ("q4_k", "q6_k", ... as ifn_dtype_name spells them).
 * --cols takes columns [FIRST, FIRST + N) of every row first, as a tensor-parallel shard does
 * (ifn_weight_cols; its refusal is printed on stderr, exit 1). STORED gets every value as
 * ifn_dtype_to_f32 reads it, PACKED as qweight_value sees it after qweight_pack with Q (a
 * --quant name) or, without it, qw_spec_for_dtype(TYPE); both float32 [rows][columns].
 * Prints the spec's name and the packed bits per weight (qweight_bytes). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump_io.h"
#include "qweight.h"

int main(int argc, char **argv)
{
    const char *quant = NULL;
    int64_t first = 0, n_cols = -1;
    bool usage = argc < 6;
    for (int i = 6; i < argc && !usage; i++) {
        if (strcmp(argv[i], "--quant") == 0 && i + 1 < argc) {
            quant = argv[++i];
        } else if (strcmp(argv[i], "--cols") == 0 && i + 2 < argc) {
            first = atoll(argv[++i]);
            n_cols = atoll(argv[++i]);
        } else {
            usage = true;
        }
    }
    if (usage) {
        fprintf(stderr, "usage: qweight_dump TYPE N_IN IN STORED PACKED [--quant Q] [--cols FIRST N]\n");
        return 2;
    }
    ifn_dtype t = IFN_DTYPE_F32;
    while (t < IFN_DTYPE_COUNT && strcmp(argv[1], ifn_dtype_name(t)) != 0) t++;
    int64_t n_in = atoll(argv[2]);
    size_t rb = t < IFN_DTYPE_COUNT ? ifn_dtype_row_bytes(t, n_in) : 0;
    if (rb == 0) {
        fprintf(stderr, "qweight_dump: no rows of %lld values of type '%s'\n", (long long)n_in, argv[1]);
        return 2;
    }
    size_t n;
    unsigned char *in = slurp(argv[3], &n);
    if (!in || n == 0 || n % rb != 0) {
        fprintf(stderr, "qweight_dump: %s is not whole rows of %zu bytes\n", argv[3], rb);
        return 1;
    }
    ifn_weight whole = { .type = t, .n_out = (int64_t)(n / rb), .n_in = n_in, .data = in }, src = whole;
    qw_spec spec = qw_spec_for_dtype(t);
    ifn_qweight w;
    if ((n_cols >= 0 && ifn_weight_cols(&whole, first, n_cols, &src) != IFN_OK) ||
        (quant && qw_spec_parse(quant, &spec) != IFN_OK) || qweight_pack(&src, &spec, &w) != IFN_OK) {
        fprintf(stderr, "qweight_dump: %s\n", ifn_error_detail());
        return 1;
    }
    size_t count = (size_t)src.n_out * (size_t)src.n_in;
    float *stored = malloc(count * sizeof *stored), *packed = malloc(count * sizeof *packed);
    if (!stored || !packed) return 1;
    for (int64_t r = 0; r < src.n_out; r++) {
        ifn_weight_row(&src, r, stored + (size_t)r * src.n_in);
        for (int64_t k = 0; k < src.n_in; k++) packed[(size_t)r * src.n_in + k] = qweight_value(&w, r, k);
    }
    char name[32];
    qw_spec_name(&spec, name, sizeof name);
    printf("%s %.4f\n", name, 8.0 * (double)qweight_bytes(&w) / ((double)w.n_pad * (double)w.k_pad));
    int rc = write_f32(argv[4], stored, count) | write_f32(argv[5], packed, count);
    qweight_free(&w);
    free(stored);
    free(packed);
    free(in);
    return rc;
}
