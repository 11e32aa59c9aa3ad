/* descriptor_index_dump FILE: indexes a serialized FileDescriptorSet with descriptor_index and
 * prints what it found, for test_descriptor_index.py:
 *   file NAME BYTES INDEX_FOUND_BY_NAME [dep NAME]...
 *   service NAME
 *   symbol NAME FILE_INDEX message|other|none   (for each name read from stdin)
 * or "error: DETAIL" and exit 1 when the index refuses the file. With --prefixes it indexes
 * every prefix of the file and every copy with one byte flipped, printing only a count of
 * "ok" and "refused" (a bad input must be refused, never crash: run it under ASan). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor_index.h"

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *bigger = realloc(buf, cap);
            if (!bigger) break;
            buf = bigger;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0) break;
        *len += n;
    }
    fclose(f);
    return buf;
}

static void dump(const descriptor_index *ix)
{
    for (int i = 0; i < descriptor_index_n_files(ix); i++) {
        const char *name = descriptor_index_file_name(ix, i);
        const uint8_t *bytes;
        size_t len;
        descriptor_index_file_bytes(ix, i, &bytes, &len);
        printf("file %s %zu %d", name, len, descriptor_index_find_file(ix, name));
        for (int j = 0; j < descriptor_index_n_deps(ix, i); j++)
            printf(" dep %s", descriptor_index_file_name(ix, descriptor_index_dep(ix, i, j)));
        printf("\n");
    }
    for (int i = 0; i < descriptor_index_n_services(ix); i++) printf("service %s\n", descriptor_index_service(ix, i));
}

int main(int argc, char **argv)
{
    bool prefixes = argc == 3 && strcmp(argv[1], "--prefixes") == 0;
    if (argc != 2 && !prefixes) {
        fprintf(stderr, "usage: descriptor_index_dump [--prefixes] FILE\n");
        return 2;
    }
    size_t len;
    uint8_t *set = read_all(argv[argc - 1], &len);
    if (!set) {
        fprintf(stderr, "cannot read %s\n", argv[argc - 1]);
        return 2;
    }
    descriptor_index *ix;
    if (prefixes) {
        int ok = 0, refused = 0;
        for (size_t n = 0; n <= len; n++) {
            if (descriptor_index_create(set, n, &ix) == IFN_OK) ok++, descriptor_index_destroy(ix);
            else refused++, ifn_error_clear();
        }
        for (size_t i = 0; i < len; i++) {
            set[i] ^= 0xFF;
            if (descriptor_index_create(set, len, &ix) == IFN_OK) ok++, descriptor_index_destroy(ix);
            else refused++, ifn_error_clear();
            set[i] ^= 0xFF;
        }
        printf("ok %d refused %d\n", ok, refused);
        free(set);
        return 0;
    }
    if (descriptor_index_create(set, len, &ix) != IFN_OK) {
        printf("error: %s\n", ifn_error_detail());
        free(set);
        return 1;
    }
    dump(ix);
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        bool is_message;
        int f = descriptor_index_find_symbol(ix, line, &is_message);
        printf("symbol %s %d %s\n", line, f, f < 0 ? "none" : is_message ? "message" : "other");
    }
    descriptor_index_destroy(ix);
    free(set);
    return 0;
}
