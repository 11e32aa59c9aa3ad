#define _GNU_SOURCE
#include "fingerprint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HEAD_BYTES (4u << 20)
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static const char *const field_names[FP_N] = {
    [FP_FILE_SIZE] = "file size (bytes)",
    [FP_FILE_HASH] = "file header and tensor table (hash of the first 4 MiB)",
    [FP_CONFIG] = "model config (hash)",
    [FP_PACKING] = "weight packing (--quant, hash)",
    [FP_CTX_SIZE] = "context size (--ctx-size)",
    [FP_SLOTS] = "KV slots (--kv-slots)",
    [FP_BATCH] = "tokens per step (--step-tokens)",
    [FP_KV_TYPE] = "KV type (--kv-type)",
};

const char *fingerprint_field_name(fingerprint_field f) { return f < FP_N ? field_names[f] : "?"; }

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

static uint64_t fnv_int(uint64_t h, int64_t v) { return fnv(h, &v, sizeof v); }

/* Adds one file's size and first bytes. */
static ifn_status take_file(const char *path, uint64_t *size, uint64_t *hash, unsigned char *buf)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        ifn_status s = ifn_error_set(IFN_ERR_IO, "%s: cannot read it for the model fingerprint: %s", path,
                                     strerror(errno));
        if (f) fclose(f);
        return s;
    }
    size_t n = fread(buf, 1, HEAD_BYTES, f);
    fclose(f);
    *size += (uint64_t)st.st_size;
    *hash = fnv(*hash, buf, n);
    return IFN_OK;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A directory's regular files in name order (a Hugging Face model: config, shards, tokenizer). */
static ifn_status take_dir(const char *path, uint64_t *size, uint64_t *hash, unsigned char *buf)
{
    DIR *d = opendir(path);
    if (!d) return ifn_error_set(IFN_ERR_IO, "%s: cannot list it for the model fingerprint: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    ifn_status s = IFN_OK;
    for (struct dirent *e; s == IFN_OK && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **bigger = realloc(names, cap * sizeof *names);
            if (!bigger) s = ifn_error_set(IFN_ERR_NOMEM, "no memory");
            else names = bigger;
        }
        if (s == IFN_OK && !(names[n++] = strdup(e->d_name))) s = ifn_error_set(IFN_ERR_NOMEM, "no memory");
    }
    closedir(d);
    if (s == IFN_OK) qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n && s == IFN_OK; i++) {
        char *full;
        struct stat st;
        if (asprintf(&full, "%s/%s", path, names[i]) < 0) {
            s = ifn_error_set(IFN_ERR_NOMEM, "no memory");
            break;
        }
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
            *hash = fnv(*hash, names[i], strlen(names[i]) + 1);
            s = take_file(full, size, hash, buf);
        }
        free(full);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return s;
}

static uint64_t config_hash(const model_config *c)
{
    uint64_t h = fnv(FNV_OFFSET, c->arch, strnlen(c->arch, sizeof c->arch));
    const int64_t ints[] = { c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab_size,
                             c->ctx_len, c->rope_layout, c->tied_output, c->norm, c->ffn, c->gelu, c->pos, c->biases,
                             c->qkv_fused, c->rope_scaling.kind, c->rope_scaling.orig_ctx, c->rope_freqs_tensor };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) h = fnv_int(h, ints[i]);
    h = fnv(h, &c->rope_theta, sizeof c->rope_theta);
    const float scaling[] = { c->rope_scaling.factor, c->rope_scaling.low_freq_factor, c->rope_scaling.high_freq_factor,
                              c->rope_scaling.beta_fast, c->rope_scaling.beta_slow, c->rope_scaling.attn_factor };
    h = fnv(h, scaling, sizeof scaling);
    return fnv(h, &c->norm_eps, sizeof c->norm_eps);
}

ifn_status fingerprint_take(const char *path, const model_config *cfg, const char *quant, int ctx_size, int n_slots,
                            int n_batch, int kv_type, fingerprint *out)
{
    memset(out, 0, sizeof *out);
    out->v[FP_FILE_HASH] = FNV_OFFSET;
    if (path) {
        unsigned char *buf = malloc(HEAD_BYTES);
        if (!buf) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
        struct stat st;
        ifn_status s = stat(path, &st) == 0 && S_ISDIR(st.st_mode)
                           ? take_dir(path, &out->v[FP_FILE_SIZE], &out->v[FP_FILE_HASH], buf)
                           : take_file(path, &out->v[FP_FILE_SIZE], &out->v[FP_FILE_HASH], buf);
        free(buf);
        CHECK(s);
    }
    out->v[FP_CONFIG] = cfg ? config_hash(cfg) : 0;
    out->v[FP_PACKING] = fnv(FNV_OFFSET, quant ? quant : "", quant ? strlen(quant) : 0);
    out->v[FP_CTX_SIZE] = (uint64_t)ctx_size;
    out->v[FP_SLOTS] = (uint64_t)n_slots;
    out->v[FP_BATCH] = (uint64_t)n_batch;
    out->v[FP_KV_TYPE] = (uint64_t)kv_type;
    return IFN_OK;
}

static void value_text(fingerprint_field f, uint64_t v, char *out, size_t cap)
{
    if (f == FP_FILE_HASH || f == FP_CONFIG || f == FP_PACKING)
        snprintf(out, cap, "%016llx", (unsigned long long)v);
    else
        snprintf(out, cap, "%llu", (unsigned long long)v);
}

ifn_status fingerprint_check(comm *c, const fingerprint *mine, const char *path)
{
    const int world = comm_world(c), rank = comm_rank(c);
    if (world == 1) return IFN_OK;
    fingerprint first = *mine;
    CHECK(comm_bcast(c, &first, sizeof first, 0));
    int field = FP_N;
    for (int f = 0; f < FP_N && field == FP_N; f++)
        if (first.v[f] != mine->v[f]) field = f;
    int bad_rank = field < FP_N ? rank : world;
    CHECK(comm_allreduce_min_int(c, &bad_rank));
    if (bad_rank == world) return IFN_OK;
    int bad_field = rank == bad_rank ? field : FP_N;
    CHECK(comm_allreduce_min_int(c, &bad_field));
    uint64_t theirs = rank == bad_rank ? mine->v[bad_field] : 0;
    CHECK(comm_allreduce_sum_u64(c, &theirs));
    if (rank != 0) {
        ifn_error_clear(); /* rank 0 says why */
        return IFN_ERR_INTERNAL;
    }
    char a[32], b[32];
    value_text(bad_field, theirs, a, sizeof a);
    value_text(bad_field, first.v[bad_field], b, sizeof b);
    return ifn_error_set(IFN_ERR_INVALID_ARG,
                         "rank %d (%s) loaded a different model or options than rank 0: %s is %s there, %s on rank "
                         "0; every rank must load the same file (%s) with the same options",
                         bad_rank, comm_host(c, bad_rank), fingerprint_field_name(bad_field), a, b,
                         path ? path : "random weights");
}
