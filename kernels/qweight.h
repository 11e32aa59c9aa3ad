/* Packed weights: every linear layer's matrix, repacked once at load into the order the
 * kernels stream it, and the compute recipe that goes with it.
 *
 * Notes (layout, shared by every kernel)
 * ---------------------------------------
 * A weight W has n_out rows (output features) of n_in values (input features). Rows are
 * padded to n_pad (a multiple of 16) and the input dimension to k_pad (a multiple of 64);
 * padding is zero and contributes nothing. Rows are taken 16 at a time ("row blocks").
 *
 * Integer kinds (W8, W4) use the VNNI order: within a row block, for each k4 = 0..k_pad/4-1,
 * 64 bytes hold [row 0: k 4k4..4k4+3][row 1: same k] ... [row 15]. So one 64-byte vector is
 * 16 rows x 4 inputs: an AVX-512 vpdpbusd against 4 broadcast activation bytes yields 16
 * row sums in 16 lanes, and 16 consecutive such vectors are exactly an AMX B tile (K = 64,
 * N = 16). A row block occupies 16 * k_pad bytes (W8) or 8 * k_pad bytes (W4).
 *   W8: int8 values q, value = scale * q.
 *   W4: the 64-byte vectors of k4 = 2j and 2j + 1 share 64 bytes: byte i holds vector 2j's
 *       byte i in its low nibble and vector 2j+1's byte i in its high nibble. Nibbles u are
 *       unsigned 0..15; symmetric: value = scale * (u - 8); asymmetric: value = scale * u + min.
 * Scales (and mins) are fp32, per row and per group of `group` inputs, stored per row block
 * as [n_groups][16]. group is 32, 64, 128 or k_pad (one scale per row: "per channel").
 *
 * BF16 uses the VNNI-2 order: per row block, for each k2 = 0..k_pad/2-1, 64 bytes hold
 * [row 0: k 2k2, 2k2+1][row 1] ... [row 15] as bf16 (an AMX-BF16 B tile is 16 of them).
 * F32 and F16 keep plain rows (n_pad x k_pad), for the exact reference-grade paths.
 *
 * Compute recipes
 * ---------------
 *   A8  (W8, W4): activations are quantized to int8 per row and weight group (dynamic:
 *       s = max|x|/127 over the group; or a given static scale), dot products are exact int32
 *       per group, and per group acc += (scale * s) * dot (+ (min * s) * sum of that group's
 *       int8 activations, asymmetric W4). See gemm_ref.c for the exact operation order.
 *   A16 (W4, BF16): activations are rounded to bf16; W4 weights are expanded to
 *       bf16(scale * (u - 8)) or bf16(scale * u + min); products accumulate in fp32.
 *   F32 (F32, F16): fp32 activations times fp32 (or fp16-converted) weights, fp32 sums. */
#ifndef IFN_QWEIGHT_H
#define IFN_QWEIGHT_H

#include <stdbool.h>
#include <stdint.h>

#include "dtype.h"
#include "weight.h"
#include "status.h"

typedef enum { QW_F32, QW_F16, QW_BF16, QW_W8, QW_W4, QW_KIND_COUNT } qw_kind;
typedef enum { QW_COMPUTE_F32, QW_COMPUTE_A16, QW_COMPUTE_A8, QW_COMPUTE_COUNT } qw_compute;

#define QW_ROWS 16     /* rows per row block */
#define QW_K_ALIGN 64  /* k_pad is a multiple of this */

typedef struct {
    qw_kind kind;
    qw_compute compute;
    int64_t n_out, n_in;  /* logical shape */
    int64_t n_pad, k_pad; /* padded shape */
    int group;            /* W8/W4: inputs per scale (k_pad = per channel); else 0 */
    int n_groups;         /* k_pad / group */
    bool asym;            /* W4 only */
    void *data;           /* 64-byte aligned, owned */
    float *scales;        /* W8/W4: [n_pad/16][n_groups][16] */
    float *mins;          /* asymmetric W4: [n_pad/16][n_groups][16]; else NULL */
    int32_t *row_sums;    /* W8: sum of q per row and group, [n_pad/16][n_groups][16] (for
                             kernels that add 128 to activations to use unsigned x signed dots) */
    uint16_t *scales_h;   /* A8 W8/W4: fp16 copies of scales (and mins_h of mins), same index, when
                             every one is exact in fp16 (GGUF Q8_0, Q4_0, Q4_1 and f16-scaled files
                             are): the AVX-512 kernels stream these, 2 bytes instead of 4 per row and
                             group (10% of a W4 g32 matrix); the fp32 ones stay for the other ISAs
                             and tests, so memory grows by those 2 bytes. NULL otherwise. */
    uint16_t *mins_h;     /* asymmetric W4 with scales_h: [n_pad/16][n_groups][16]; else NULL */
    float act_scale;      /* A8: static activation scale (SmoothQuant); 0 = dynamic per row */
    int32_t *perm;        /* act-order: [n_in] input of each stored column (gemm gathers x by it;
                             -1: a padding column, x = 0); NULL: columns are inputs */
    int64_t n_inputs;     /* x's width: n_in, or fewer when perm has padding columns */
} ifn_qweight;

/* What to pack into. QW_F32/QW_F16/QW_BF16 ignore group/asym. */
typedef struct {
    qw_kind kind;
    qw_compute compute; /* must be a recipe the kind has: F32/F16→F32, BF16→A16, W8→A8, W4→A8|A16 */
    int group;          /* W8: 32 or 0 (per channel); W4: 32, 64, 128 or 0 (per channel) */
    bool asym;          /* W4 only */
} qw_spec;

/* Parses a --quant name: f32, f16, bf16, w8a8 (per channel), w8a8-g32, w4a8-g32|g64|g128|pc,
 * w4a16-g32|g64|g128|pc, each W4 optionally with "-asym". IFN_ERR_INVALID_ARG otherwise. */
ifn_status qw_spec_parse(const char *name, qw_spec *out);
/* Writes the canonical name of spec into buf. */
void qw_spec_name(const qw_spec *spec, char *buf, int cap);

/* The spec a stored type is packed into by default: F32, F16, BF16 as themselves; Q8_0, Q5_0,
 * IQ4_NL and Q3_K → W8 g32 (int8 times one scale per 32 values: ifn_dtype_to_w8); Q4_0 → W4
 * g32 symmetric; Q4_1 and Q4_K → W4 g32 asymmetric (all A8), all lossless. Q6_K, Q5_1, Q5_K
 * and Q2_K (16-value sub-blocks, or 5-bit values with a min) have no lossless kind: they are
 * converted to W8 g32 (A8) by round to nearest from their exact values, which adds a relative
 * RMS error of 0.5-0.7% for Q6_K, about 27% of Q6_K's own (docs/formats.md; the others' there too). */
qw_spec qw_spec_for_dtype(ifn_dtype t);

/* The group a matrix of n_in inputs is packed in when `group` is asked (0: per channel): the
 * largest of 128, 64 and 32, at most `group`, that divides n_in, else 0 (per channel). So
 * W4 g128 on a 192-wide matrix runs as g64, and W8 g32 on a 200-wide one per channel. */
int qw_fit_group(int64_t n_in, int group);

/* The lossless spec for a weight: integers with scales as their kind and group (I8 → W8,
 * U4 → W4, asymmetric with zero points; A8), other weights as qw_spec_for_dtype. */
qw_spec qw_spec_for_weight(const ifn_weight *w);

/* Packs src (rows of any ifn_dtype) into out. GGUF Q8_0, Q5_0, IQ4_NL, Q3_K, Q4_0, Q4_1, Q4_K
 * and integers with scales map onto W8/W4 exactly when the spec matches (see
 * qw_spec_for_weight: U4 zero point z becomes min = -scale * z, exact in fp32); anything else
 * is dequantized to fp32 and
 * quantized by round-to-nearest: W8 s = max|w|/127; W4 symmetric as GGUF Q4_0 (s = the
 * signed extreme / -8, q in -8..7), asymmetric as Q4_1 (s = (max - min)/15, min = min).
 * IFN_ERR_INVALID_ARG if n_in is not a multiple of the group, naming both. */
ifn_status qweight_pack(const ifn_weight *src, const qw_spec *spec, ifn_qweight *out);
void qweight_free(ifn_qweight *w);

/* Bytes of the packed matrix including scales, fp16 ones when it has them (what a decode
 * step streams). */
size_t qweight_bytes(const ifn_qweight *w);

/* Value of element (row, k) as the kernels see it (fp32; for A16 recipes, the bf16-rounded
 * value); k is the stored column (input perm[k] for act-order). For tests and the embedding
 * lookup. */
float qweight_value(const ifn_qweight *w, int64_t row, int64_t k);

#endif
