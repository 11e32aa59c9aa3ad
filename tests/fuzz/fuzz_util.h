/* What the harnesses share: the readers take paths, so each input is written to a file in a
 * directory of this process's own (ctest runs harnesses side by side), and a loaded model is
 * exercised the way `infernode generate` would use it. An error from a reader is an expected
 * outcome; a crash, a sanitizer report, a leak or a broken contract (abort) is a finding. */
#ifndef IFN_FUZZ_UTIL_H
#define IFN_FUZZ_UTIL_H

#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "model_file.h"
#include "status.h"

/* A broken contract: libFuzzer saves the input that led here. */
#define FUZZ_ASSERT(cond)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "fuzz: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* Reads every byte of p[0..n): a view that runs past its mapping faults here. The empty asm
 * that takes the sum keeps the compiler from dropping the reads. */
static inline void fuzz_touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) sum += b[i];
    __asm__ volatile("" : : "r"(sum));
}

static char fuzz_dir_path[4096];

static inline int fuzz_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static inline void fuzz_dir_remove(void)
{
    nftw(fuzz_dir_path, fuzz_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* This process's scratch directory: created on first use under TMPDIR or /tmp (the tests set
 * TMPDIR=/dev/shm: on a disk, writing each input costs more than reading it), removed at exit. */
static inline const char *fuzz_dir(void)
{
    if (!fuzz_dir_path[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/ifn-fuzz-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(fuzz_dir_path)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* fuzz_dir()/name, written with data[0..size). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t size)
{
    static char path[4096 + 256];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror("fuzz: writing the input");
        abort();
    }
    return path;
}

/* Loads the opened model's tensors as `infernode generate` does (checks and packing) and, for
 * a model small enough to keep the fuzzer fast, runs one token through it: the forward pass
 * must cope with whatever values the file holds (NaN, inf) without undefined behaviour. */
static inline void fuzz_use_model(const model_file *mf)
{
    const model_config *c = model_file_config(mf);
    model_options opts = { 0 };
    model *m = NULL;
    if (model_load(mf, &opts, &m) != IFN_OK) {
        ifn_error_clear();
        return;
    }
    model_ctx *ctx = NULL;
    if ((int64_t)c->dim * c->n_layers <= 4096 && c->vocab_size <= 4096 &&
        model_ctx_create(m, 1, 4, 2, IFN_KV_F32, &ctx) == IFN_OK) {
        int32_t tokens[2] = { 0, c->vocab_size - 1 };
        model_batch_seq seq = { .slot = 0, .pos0 = 0, .n_tokens = 2, .tokens = tokens, .n_out = 1, .window = 4 };
        float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
        FUZZ_ASSERT(logits);
        if (model_batch_eval(ctx, &seq, 1, logits) != IFN_OK) ifn_error_clear();
        free(logits);
        model_ctx_destroy(ctx);
    }
    ifn_error_clear();
    model_destroy(m);
}

/* Opens path as a model (any format) and uses it; errors are expected outcomes. */
static inline void fuzz_open_model(const char *path)
{
    model_file *mf = NULL;
    if (model_file_open(path, &mf) == IFN_OK) {
        fuzz_use_model(mf);
        model_file_close(mf);
    }
    ifn_error_clear();
}

#endif
