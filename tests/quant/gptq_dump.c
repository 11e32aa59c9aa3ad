/* Runs infernode's quantizers (tools/infernode/quantize_gptq.c) on a matrix and a Hessian read
 * from files, for test_quantize.py to compare with its NumPy GPTQ:
 *   gptq_dump W.f32 H.f64 OUT N_OUT N_IN BITS GROUP ASYM ACT_ORDER METHOD(rtn|gptq)
 * OUT gets the integers as int32 [n_out][n_in], the scales and zero points as float32
 * [n_out][n_groups] each, and the GPTQ loss as one float64. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump_io.h"
#include "quantize.h"

/* read_exactly, or exit 1. */
static void *read_all(const char *path, size_t bytes)
{
    void *p = read_exactly(path, bytes);
    if (!p) exit(1);
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 11) {
        fprintf(stderr, "usage: gptq_dump W.f32 H.f64 OUT N_OUT N_IN BITS GROUP ASYM ACT_ORDER rtn|gptq\n");
        return 2;
    }
    const int64_t n_out = atoll(argv[4]), n_in = atoll(argv[5]);
    const qformat f = { .bits = atoi(argv[6]), .group = atoi(argv[7]), .asym = atoi(argv[8]) != 0,
                        .scale_type = IFN_DTYPE_F16 };
    float *w = read_all(argv[1], (size_t)(n_out * n_in) * sizeof(float));
    double *h = read_all(argv[2], (size_t)(n_in * n_in) * sizeof(double));
    qmatrix q;
    if (qmatrix_alloc(&q, &f, n_out, n_in) != IFN_OK) return 1;
    double loss = 0.0;
    if (strcmp(argv[10], "gptq") == 0) {
        const gptq_options o = { .damp = 0.01, .block = 128, .act_order = atoi(argv[9]) != 0 };
        if (quant_gptq(w, h, &o, &q, &loss) != IFN_OK) {
            fprintf(stderr, "gptq_dump: %s\n", ifn_error_detail());
            return 1;
        }
    } else {
        quant_rtn(w, &q);
    }
    FILE *out = fopen(argv[3], "wb");
    if (!out) return 1;
    ifn_weight view = qmatrix_weight(&q);
    for (int64_t r = 0; r < n_out; r++) {
        float row[n_in];
        ifn_dtype_to_f32(view.type, q.q + (size_t)r * (size_t)(f.bits == 4 ? n_in / 2 : n_in), row, n_in);
        for (int64_t k = 0; k < n_in; k++) {
            int32_t v = (int32_t)row[k];
            fwrite(&v, 4, 1, out);
        }
    }
    for (int64_t i = 0; i < n_out * q.n_groups; i++) {
        float s = ifn_fp16_to_f32(((uint16_t *)q.scales)[i]);
        fwrite(&s, 4, 1, out);
    }
    for (int64_t i = 0; i < n_out * q.n_groups; i++) {
        float z = q.zeros ? (float)q.zeros[i] : (f.bits == 4 ? 8.0f : 0.0f);
        fwrite(&z, 4, 1, out);
    }
    fwrite(&loss, 8, 1, out);
    fclose(out);
    qmatrix_free(&q);
    free(w);
    free(h);
    return 0;
}
