/* The quantizers: round to nearest and GPTQ (Frantar et al., "GPTQ: Accurate Post-Training
 * Quantization for Generative Pre-trained Transformers", 2022), with LAPACK's Cholesky. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quantize.h"

/* LAPACK and BLAS (Fortran calling convention, column-major). */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dsyrk_(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
                   const double *a, const int *lda, const double *beta, double *c, const int *ldc);
extern void sgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                   const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
                   const float *beta, float *c, const int *ldc);

ifn_status qmatrix_alloc(qmatrix *m, const qformat *f, int64_t n_out, int64_t n_in)
{
    memset(m, 0, sizeof *m);
    if (f->group && n_in % f->group)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "a matrix of %lld inputs cannot be quantized in groups of %d",
                             (long long)n_in, f->group);
    m->f = *f;
    m->n_out = n_out;
    m->n_in = n_in;
    m->n_groups = f->group ? n_in / f->group : 1;
    size_t sb = f->scale_type == IFN_DTYPE_F32 ? 4 : 2;
    m->q = calloc((size_t)n_out * (size_t)(f->bits == 4 ? n_in / 2 : n_in), 1);
    m->scales = calloc((size_t)n_out * (size_t)m->n_groups, sb);
    if (f->asym) m->zeros = calloc((size_t)n_out * (size_t)m->n_groups, 1);
    if (!m->q || !m->scales || (f->asym && !m->zeros)) {
        qmatrix_free(m);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for a quantized %lld x %lld matrix", (long long)n_out,
                             (long long)n_in);
    }
    return IFN_OK;
}

void qmatrix_free(qmatrix *m)
{
    free(m->q);
    free(m->scales);
    free(m->zeros);
    memset(m, 0, sizeof *m);
}

ifn_weight qmatrix_weight(const qmatrix *m)
{
    return (ifn_weight){ .type = m->f.bits == 4 ? IFN_DTYPE_U4 : IFN_DTYPE_I8, .n_out = m->n_out, .n_in = m->n_in,
                         .data = m->q, .scales = m->scales, .scale_type = m->f.scale_type, .zeros = m->zeros,
                         .group = m->f.group, .scale_stride = m->n_groups, .act_scale = m->act_scale };
}

static float round_scale(ifn_dtype t, float s)
{
    if (t == IFN_DTYPE_F16) return ifn_fp16_to_f32(ifn_f32_to_fp16(s));
    if (t == IFN_DTYPE_BF16) return ifn_bf16_to_f32(ifn_f32_to_bf16(s));
    return s;
}

void qformat_params(const qformat *f, const float *x, int64_t n, float *scale, int *zero)
{
    if (f->bits == 8) {
        float amax = 0.0f;
        for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
        *scale = round_scale(f->scale_type, amax / 127.0f);
        *zero = 0;
    } else if (!f->asym) {
        float e = 0.0f;
        for (int64_t i = 0; i < n; i++)
            if (fabsf(x[i]) > fabsf(e)) e = x[i];
        *scale = round_scale(f->scale_type, e / -8.0f);
        *zero = 8;
    } else {
        float mn = 0.0f, mx = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            mn = fminf(mn, x[i]);
            mx = fmaxf(mx, x[i]);
        }
        *scale = round_scale(f->scale_type, (mx - mn) / 15.0f);
        float z = *scale != 0.0f ? nearbyintf(-mn / *scale) : 0.0f;
        *zero = z < 0.0f ? 0 : z > 15.0f ? 15 : (int)z;
    }
}

int qformat_quantize(const qformat *f, float x, float scale, int zero)
{
    if (scale == 0.0f) return zero;
    float q = nearbyintf(x / scale) + (float)zero;
    float lo = f->bits == 8 ? -127.0f : 0.0f, hi = f->bits == 8 ? 127.0f : 15.0f;
    return q < lo ? (int)lo : q > hi ? (int)hi : (int)q;
}

void qmatrix_put(qmatrix *m, int64_t row, int64_t k, int q)
{
    if (m->f.bits == 8) {
        ((int8_t *)m->q)[(size_t)row * (size_t)m->n_in + (size_t)k] = (int8_t)q;
        return;
    }
    uint8_t *b = m->q + (size_t)row * (size_t)(m->n_in / 2) + (size_t)(k / 2);
    *b = (k & 1) ? (uint8_t)((*b & 0x0f) | (q << 4)) : (uint8_t)((*b & 0xf0) | q);
}

void qmatrix_put_params(qmatrix *m, int64_t row, int64_t g, float scale, int zero)
{
    size_t i = (size_t)row * (size_t)m->n_groups + (size_t)g;
    switch (m->f.scale_type) {
    case IFN_DTYPE_F16: ((uint16_t *)m->scales)[i] = ifn_f32_to_fp16(scale); break;
    case IFN_DTYPE_BF16: ((uint16_t *)m->scales)[i] = ifn_f32_to_bf16(scale); break;
    default: ((float *)m->scales)[i] = scale; break;
    }
    if (m->zeros) m->zeros[i] = (uint8_t)zero;
}

static int64_t group_len(const qmatrix *m) { return m->f.group ? m->f.group : m->n_in; }

void quant_rtn(const float *w, qmatrix *m)
{
    const int64_t gl = group_len(m);
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m->n_out; r++)
        for (int64_t g = 0; g < m->n_groups; g++) {
            const float *x = w + (size_t)r * (size_t)m->n_in + (size_t)(g * gl);
            float scale;
            int zero;
            qformat_params(&m->f, x, gl, &scale, &zero);
            qmatrix_put_params(m, r, g, scale, zero);
            for (int64_t k = 0; k < gl; k++) qmatrix_put(m, r, g * gl + k, qformat_quantize(&m->f, x[k], scale, zero));
        }
}

ifn_status hessian_add(double *h, const float *x, int rows, int n)
{
    if (rows <= 0) return IFN_OK;
    double *xd = malloc((size_t)rows * (size_t)n * sizeof *xd);
    if (!xd) return ifn_error_set(IFN_ERR_NOMEM, "no memory for %d calibration rows of %d", rows, n);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)rows * (size_t)n; i++) xd[i] = x[i];
    /* column-major: xd is X^T [n][rows]; C = 1 * X^T X + 1 * C in its upper triangle, which
     * is h's lower one row-major */
    const double one = 1.0;
    dsyrk_("U", "N", &n, &rows, &one, xd, &n, &one, h, &n);
    free(xd);
    return IFN_OK;
}

void hessian_finish(double *h, int n, double f)
{
    /* The upper triangle from the lower one (not yet scaled), by tiles, so that the lower
     * triangle's columns are read a cache-sized tile at a time rather than one strided
     * column per row; then the lower triangle scaled. */
    enum { TILE = 64 };
    #pragma omp parallel for schedule(dynamic, 1)
    for (int i0 = 0; i0 < n; i0 += TILE) {
        const int i1 = i0 + TILE < n ? i0 + TILE : n;
        for (int j0 = i0; j0 < n; j0 += TILE) {
            const int j1 = j0 + TILE < n ? j0 + TILE : n;
            for (int i = i0; i < i1; i++)
                for (int j = j0 > i + 1 ? j0 : i + 1; j < j1; j++) h[(size_t)i * n + j] = h[(size_t)j * n + i] * f;
        }
    }
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) h[(size_t)i * n + j] *= f;
}

/* The upper Cholesky factor U of H^-1 (H^-1 = U^T U), row-major in u [n][n] as float; h is
 * dampened in place and overwritten. */
static ifn_status inverse_cholesky(double *h, int n, double damp, float *u)
{
    double mean = 0.0;
    for (int i = 0; i < n; i++) mean += h[(size_t)i * n + i];
    mean /= n;
    for (int i = 0; i < n; i++) h[(size_t)i * n + i] += damp * mean;
    int info = 0;
    dpotrf_("L", &n, h, &n, &info);
    if (info == 0) dpotri_("L", &n, h, &n, &info);
    if (info != 0)
        return ifn_error_set(IFN_ERR_RANGE, "the calibration Hessian (%d x %d) is not positive definite even with "
                             "dampening %g: more calibration data or a larger --damp", n, n, damp);
    /* column-major lower triangle = row-major upper: mirror it */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) h[(size_t)i * n + j] = h[(size_t)j * n + i];
    dpotrf_("U", &n, h, &n, &info);
    if (info != 0)
        return ifn_error_set(IFN_ERR_RANGE, "the inverse calibration Hessian (%d x %d) lost positive definiteness: "
                             "a larger --damp may help", n, n);
    /* column-major upper U(i, j) = h[i + j n], stored row-major */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) u[(size_t)i * n + j] = j >= i ? (float)h[(size_t)i + (size_t)j * n] : 0.0f;
    return IFN_OK;
}

/* Act-order's column order: decreasing Hessian diagonal, ties by column. */
typedef struct {
    double d;
    int i;
} diag_index;

static int diag_index_cmp(const void *pa, const void *pb)
{
    const diag_index *a = pa, *b = pb;
    if (a->d != b->d) return a->d > b->d ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* h [n][n] = h[perm[i]][perm[j]], in place with O(n) scratch (a 34B model's FFN Hessian is
 * 3.6 GiB: no second copy). */
static ifn_status permute_symmetric(double *h, int n, const int *perm)
{
    if (n <= 0) return IFN_OK;
    double *row = malloc((size_t)n * sizeof *row);
    unsigned char *done = calloc((size_t)n, 1);
    if (!row || !done) {
        free(row);
        free(done);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory to reorder a %d x %d Hessian", n, n);
    }
    /* each row's columns, through one row of scratch */
    for (int i = 0; i < n; i++) {
        double *hi = h + (size_t)i * n;
        for (int j = 0; j < n; j++) row[j] = hi[perm[j]];
        memcpy(hi, row, (size_t)n * sizeof *row);
    }
    /* the rows, cycle by cycle: row i takes row perm[i] */
    for (int c = 0; c < n; c++) {
        if (done[c] || perm[c] == c) continue;
        memcpy(row, h + (size_t)c * n, (size_t)n * sizeof *row);
        int i = c;
        while (perm[i] != c) {
            memcpy(h + (size_t)i * n, h + (size_t)perm[i] * n, (size_t)n * sizeof *row);
            done[i] = 1;
            i = perm[i];
        }
        memcpy(h + (size_t)i * n, row, (size_t)n * sizeof *row);
        done[i] = 1;
    }
    free(row);
    free(done);
    return IFN_OK;
}

ifn_status quant_gptq(float *w, double *h, const gptq_options *o, qmatrix *m, double *loss)
{
    const int n = (int)m->n_in;
    const int64_t gl = group_len(m), n_out = m->n_out;
    const int block = o->block > 0 ? o->block : 128;
    int *perm = malloc((size_t)n * sizeof *perm);
    float *u = malloc((size_t)n * (size_t)n * sizeof *u);                         /* [n][n] */
    /* the columns in the order they are taken: w itself, or a permuted copy under act-order */
    float *wp = o->act_order ? malloc((size_t)n_out * (size_t)n * sizeof *wp) : w; /* [n_out][n] */
    float *err = malloc((size_t)n_out * (size_t)block * sizeof *err);              /* [n_out][block] */
    float *gscale = malloc((size_t)n_out * (size_t)m->n_groups * sizeof *gscale);  /* [n_out][n_groups] */
    int *gzero = malloc((size_t)n_out * (size_t)m->n_groups * sizeof *gzero);
    diag_index *order = o->act_order ? malloc((size_t)n * sizeof *order) : NULL;
    ifn_status s = IFN_OK;
    if (!perm || !u || !wp || !err || !gscale || !gzero || (o->act_order && !order)) {
        s = ifn_error_set(IFN_ERR_NOMEM, "no memory for GPTQ of a %lld x %d matrix", (long long)n_out, n);
        goto done;
    }
    /* Inputs never seen: their weights cannot matter; GPTQ drops them. */
    for (int i = 0; i < n; i++)
        if (h[(size_t)i * n + i] == 0.0) {
            h[(size_t)i * n + i] = 1.0;
            for (int64_t r = 0; r < n_out; r++) w[(size_t)r * n + i] = 0.0f;
        }
    for (int i = 0; i < n; i++) perm[i] = i;
    if (o->act_order) { /* stable order by decreasing diagonal */
        for (int i = 0; i < n; i++) order[i] = (diag_index){ h[(size_t)i * n + i], i };
        qsort(order, (size_t)n, sizeof *order, diag_index_cmp);
        for (int i = 0; i < n; i++) perm[i] = order[i].i;
        CHECK_GOTO(permute_symmetric(h, n, perm), s, done);
    }
    CHECK_GOTO(inverse_cholesky(h, n, o->damp, u), s, done);
    if (o->act_order) {
        /* Act-order keeps the stored groups: their parameters come from the weights as they
         * are before any update (static groups). In stored order they come from the updated
         * weights when a group begins. */
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n_out; r++) {
            const float *wr = w + (size_t)r * n;
            for (int64_t g = 0; g < m->n_groups; g++) {
                size_t at = (size_t)r * (size_t)m->n_groups + (size_t)g;
                qformat_params(&m->f, wr + g * gl, gl, &gscale[at], &gzero[at]);
                qmatrix_put_params(m, r, g, gscale[at], gzero[at]);
            }
            for (int i = 0; i < n; i++) wp[(size_t)r * n + i] = wr[perm[i]];
        }
    }
    double total = 0.0;
    for (int i1 = 0; i1 < n; i1 += block) {
        const int i2 = i1 + block < n ? i1 + block : n, bs = i2 - i1;
        /* The block's columns, row by row: quantize a column, spread its error over the
         * block's later columns now, and keep it for the columns after the block. */
        #pragma omp parallel for schedule(static) reduction(+ : total)
        for (int64_t r = 0; r < n_out; r++) {
            float *row = wp + (size_t)r * n, *er = err + (size_t)r * bs;
            float *rscale = gscale + (size_t)r * (size_t)m->n_groups;
            int *rzero = gzero + (size_t)r * (size_t)m->n_groups;
            for (int i = i1; i < i2; i++) {
                int64_t col = perm[i], g = col / gl;
                if (!o->act_order && col % gl == 0) {
                    qformat_params(&m->f, row + i, gl, &rscale[g], &rzero[g]);
                    qmatrix_put_params(m, r, g, rscale[g], rzero[g]);
                }
                int q = qformat_quantize(&m->f, row[i], rscale[g], rzero[g]);
                qmatrix_put(m, r, col, q);
                float deq = qformat_value(q, rscale[g], rzero[g]);
                float d = u[(size_t)i * n + i], e = (row[i] - deq) / d;
                total += 0.5 * (double)(row[i] - deq) * (row[i] - deq) / ((double)d * d);
                const float *ui = u + (size_t)i * n;
                for (int j = i + 1; j < i2; j++) row[j] -= e * ui[j];
                row[i] = deq;
                er[i - i1] = e;
            }
        }
        /* The lazy update of every row's columns after the block, one GEMM:
         * wp[:, i2:] -= err [n_out][bs] x u[i1:i2, i2:] (column-major: the transposes). */
        if (i2 < n) {
            const int nc = n - i2, rows = (int)n_out;
            const float minus_one = -1.0f, one = 1.0f;
            sgemm_("N", "N", &nc, &rows, &bs, &minus_one, u + (size_t)i1 * n + i2, &n, err, &bs, &one, wp + i2, &n);
        }
    }
    if (o->act_order) {
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n_out; r++)
            for (int i = 0; i < n; i++) w[(size_t)r * n + perm[i]] = wp[(size_t)r * n + i];
    }
    *loss = total;
done:
    if (wp != w) free(wp);
    free(err);
    free(gscale);
    free(gzero);
    free(order);
    free(perm);
    free(u);
    return s;
}
