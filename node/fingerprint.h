/* One model, checked: every rank of a job must have loaded the same model with the same
 * options, or the collectives would mix shards of different models (at best an MPI error such
 * as MPI_ERR_TRUNCATE, at worst wrong text). At start each rank takes a fingerprint of what it
 * loaded and rank 0 refuses to go on, naming the first rank and field that differ. */
#ifndef IFN_FINGERPRINT_H
#define IFN_FINGERPRINT_H

#include <stdint.h>

#include "comm.h"
#include "model_file.h"
#include "status.h"

typedef enum {
    FP_FILE_SIZE,  /* bytes of the model file (of a directory's files, summed) */
    FP_FILE_HASH,  /* FNV-1a of the first 4 MiB of each file: the header and tensor table */
    FP_CONFIG,     /* FNV-1a of the model_config's fields */
    FP_PACKING,    /* FNV-1a of the --quant scheme asked for ("" when none) */
    FP_CTX_SIZE,   /* positions per sequence */
    FP_SLOTS,      /* KV slots */
    FP_BATCH,      /* tokens per step */
    FP_KV_TYPE,    /* how the KV cache is stored */
    FP_N
} fingerprint_field;

typedef struct {
    uint64_t v[FP_N];
} fingerprint;

/* The field's name, for messages ("file size"). */
const char *fingerprint_field_name(fingerprint_field f);

/* Reads the file (or the directory's files) at path; cfg may be NULL (random weights). */
ifn_status fingerprint_take(const char *path, const model_config *cfg, const char *quant, int ctx_size, int n_slots,
                            int n_batch, int kv_type, fingerprint *out);

/* Collective: compares every rank's fingerprint with rank 0's. On a difference every rank
 * fails; rank 0's error names the first differing rank, its host, the field and both values. */
ifn_status fingerprint_check(comm *c, const fingerprint *mine, const char *path);

#endif
