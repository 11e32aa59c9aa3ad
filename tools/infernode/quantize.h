/* infernode quantize: what its files share. A quantized matrix is written in the quantized
 * GGUF layout (model_file.h, model_file_weight): integers, scales per (row, group), zero points
 * for asymmetric 4-bit, a static activation scale for SmoothQuant. */
#ifndef IFN_QUANTIZE_H
#define IFN_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "dtype.h"
#include "model.h"
#include "status.h"
#include "weight.h"

typedef struct {
    int bits;             /* 4 or 8 */
    int group;            /* inputs per scale: 32, 64, 128, or 0 (one per row) */
    bool asym;            /* 4-bit: a zero point per group (else 8) */
    ifn_dtype scale_type; /* F16, BF16 or F32: scales are rounded to it before use */
} qformat;

typedef struct {
    qformat f;
    int64_t n_out, n_in, n_groups;
    uint8_t *q;         /* 8-bit: [n_out][n_in] int8; 4-bit: [n_out][n_in / 2] nibbles (U4) */
    void *scales;       /* [n_out][n_groups] of f.scale_type */
    uint8_t *zeros;     /* asymmetric: [n_out][n_groups]; else NULL */
    float act_scale;    /* static activation scale, 0 for dynamic */
} qmatrix;

ifn_status qmatrix_alloc(qmatrix *m, const qformat *f, int64_t n_out, int64_t n_in);
void qmatrix_free(qmatrix *m);
/* The matrix as model_file_weight would read it. */
ifn_weight qmatrix_weight(const qmatrix *m);

/* Round to nearest (ties to even) of one group x[n]:
 *   8-bit: scale = max|x| / 127, q = round(x / scale) in -127..127, zero 0;
 *   4-bit symmetric: scale = e / -8 for the value e of largest magnitude, zero 8;
 *   4-bit asymmetric: scale = (max - min) / 15 over the group and 0, zero = round(-min / scale);
 * q = clamp(round(x / scale) + zero) into 0..15. The scale is rounded to scale_type first
 * and used as rounded. A zero scale gives q = zero. */
void qformat_params(const qformat *f, const float *x, int64_t n, float *scale, int *zero);
int qformat_quantize(const qformat *f, float x, float scale, int zero);
static inline float qformat_value(int q, float scale, int zero) { return scale * (float)(q - zero); }
void qmatrix_put(qmatrix *m, int64_t row, int64_t k, int q);
void qmatrix_put_params(qmatrix *m, int64_t row, int64_t g, float scale, int zero);

/* Round to nearest of a whole matrix w [n_out][n_in] into m (allocated). */
void quant_rtn(const float *w, qmatrix *m);

/* GPTQ of w [n_out][n_in] (changed: it ends as the dequantized result) against the Hessian h
 * [n_in][n_in] (2/N sum of x x^T over the calibration inputs; changed). Returns the sum over
 * rows of the GPTQ objective (w - q) H (w - q)^T / 2 in *loss. */
typedef struct {
    double damp;    /* added to the diagonal: damp x its mean */
    int block;      /* columns per lazy update */
    bool act_order; /* columns by decreasing h diagonal; groups stay the stored ones (static) */
} gptq_options;
ifn_status quant_gptq(float *w, double *h, const gptq_options *o, qmatrix *m, double *loss);

/* h [n][n] += x^T x over x [rows][n] (float rows, double sums), in h's lower triangle only;
 * hessian_finish then scales the lower triangle by f and mirrors it into the upper one. */
ifn_status hessian_add(double *h, const float *x, int rows, int n);
void hessian_finish(double *h, int n, double f);

#endif
