/* File input and output for the C test drivers (dtype_dump, qweight_dump, actorder_dump,
 * gptq_dump) that hand data to the Python tests. */
#ifndef IFN_TEST_DUMP_IO_H
#define IFN_TEST_DUMP_IO_H

#include <stdio.h>
#include <stdlib.h>

/* The whole file at path (malloc'd, *n bytes), or NULL if it cannot be opened. */
static inline void *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *buf = malloc(len > 0 ? (size_t)len : 1);
    *n = buf ? fread(buf, 1, (size_t)len, fp) : 0;
    fclose(fp);
    return buf;
}

/* The file at path, which must hold exactly want bytes; NULL (said on stderr) otherwise. */
static inline void *read_exactly(const char *path, size_t want)
{
    size_t got = 0;
    void *buf = slurp(path, &got);
    if (buf && got == want) return buf;
    fprintf(stderr, "%s: expected %zu bytes, read %zu\n", path, want, got);
    free(buf);
    return NULL;
}

/* Writes v[n] to path; 0 on success. */
static inline int write_f32(const char *path, const float *v, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return 1;
    size_t put = fwrite(v, sizeof *v, n, fp);
    return (fclose(fp) != 0 || put != n) ? 1 : 0;
}

#endif
