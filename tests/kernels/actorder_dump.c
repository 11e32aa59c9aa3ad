/* Test driver: a rank's share of an act-order W4 matrix (ifn_weight_cols_act_order), packed
 * and multiplied as model loading and the forward pass do, for test_actorder.py.
 *   actorder_dump N_OUT N_IN GROUP FIRST N Q SCALES ZEROS PERM X M Y_F32 Y_A8
 * Q: uint8 [N_OUT][N_IN] integers 0..15 in stored column order; SCALES: float32
 * [N_OUT][N_IN / GROUP] (GROUP 0: one per row); ZEROS: uint8 like SCALES, or "-" for
 * symmetric (8); PERM: int32 [N_IN], the input of each stored column; X: float32 [M][N], the
 * inputs [FIRST, FIRST + N). Writes x W^T over those inputs, float32 [M][N_OUT], through the F32
 * recipe to Y_F32 and through the weight's own W4A8 packing to Y_A8, and prints
 * "width W group G" of the regrouped weight. A refusal is printed on stderr, exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump_io.h"
#include "gemm.h"
#include "weight.h"

/* y = x W^T with w packed as spec. */
static ifn_status multiply(const ifn_weight *w, const qw_spec *spec, const float *x, int m, float *y)
{
    ifn_qweight q;
    gemm_scratch *s;
    CHECK(qweight_pack(w, spec, &q));
    ifn_status st = gemm_scratch_create(&s);
    if (st == IFN_OK) st = gemm_run(y, x, m, &q, s);
    gemm_scratch_destroy(s);
    qweight_free(&q);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 14) {
        fprintf(stderr, "usage: actorder_dump N_OUT N_IN GROUP FIRST N Q SCALES ZEROS PERM X M Y_F32 Y_A8\n");
        return 2;
    }
    const int64_t n_out = atoll(argv[1]), n_in = atoll(argv[2]), first = atoll(argv[4]), n = atoll(argv[5]);
    const int group = atoi(argv[3]), m = atoi(argv[11]);
    const int64_t n_groups = group ? n_in / group : 1;
    uint8_t *q = read_exactly(argv[6], (size_t)(n_out * n_in));
    float *scales = read_exactly(argv[7], (size_t)(n_out * n_groups) * sizeof(float));
    uint8_t *zeros = strcmp(argv[8], "-") ? read_exactly(argv[8], (size_t)(n_out * n_groups)) : NULL;
    int32_t *perm = read_exactly(argv[9], (size_t)n_in * sizeof(int32_t));
    float *x = read_exactly(argv[10], (size_t)m * (size_t)n * sizeof(float));
    uint8_t *nibbles = calloc((size_t)(n_out * n_in / 2) + 1, 1);
    float *y = malloc((size_t)m * (size_t)n_out * sizeof *y);
    if (!q || !scales || (strcmp(argv[8], "-") && !zeros) || !perm || !x || !nibbles || !y) return 1;
    for (int64_t i = 0; i < n_out * n_in; i++) nibbles[i / 2] |= (uint8_t)((q[i] & 15) << (4 * (i & 1)));
    ifn_weight w = { .type = IFN_DTYPE_U4, .n_out = n_out, .n_in = n_in, .data = nibbles, .scales = scales,
                     .scale_type = IFN_DTYPE_F32, .zeros = zeros, .group = group, .scale_stride = n_groups, .perm = perm };
    ifn_weight part;
    void *owned;
    ifn_status s = ifn_weight_check_quant(&w);
    if (s == IFN_OK) s = ifn_weight_cols_act_order(&w, first, n, &part, &owned);
    if (s != IFN_OK) {
        fprintf(stderr, "actorder_dump: %s\n", ifn_error_detail());
        return 1;
    }
    printf("width %lld group %d\n", (long long)part.n_in, part.group);
    const qw_spec f32 = { .kind = QW_F32, .compute = QW_COMPUTE_F32 };
    const qw_spec own = qw_spec_for_weight(&part);
    int rc = 0;
    s = multiply(&part, &f32, x, m, y);
    rc |= s != IFN_OK || write_f32(argv[12], y, (size_t)m * (size_t)n_out);
    if (s == IFN_OK) s = multiply(&part, &own, x, m, y);
    rc |= s != IFN_OK || write_f32(argv[13], y, (size_t)m * (size_t)n_out);
    if (s != IFN_OK) fprintf(stderr, "actorder_dump: %s\n", ifn_error_detail());
    free(owned), free(q), free(scales), free(zeros), free(perm), free(x), free(nibbles), free(y);
    return rc;
}
