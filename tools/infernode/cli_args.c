/* Parsers of option values shared by the subcommands. */
#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cpu_quota.h"
#include "unicode.h"

bool cli_parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

bool cli_parse_threads(const char *s, int *out) { return cli_parse_int(s, 1, 4096, out); }

bool cli_set_threads(const char *s)
{
    int n;
    if (!cli_parse_threads(s, &n)) return false;
    omp_set_num_threads(n);
    return true;
}

void cli_default_threads(void)
{
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && *env) return;
    const char *root = getenv("INFERNODE_CGROUP_ROOT");
    if (!root) root = "";
    char proc_root[PATH_MAX];
    snprintf(proc_root, sizeof proc_root, "%s/proc", root);
    cpu_quota q;
    cpu_quota_read(proc_root, root, &q);
    if (q.note[0]) fprintf(stderr, "infernode: warning: CPU quota: skipped %s\n", q.note);
    const int allowed = omp_get_num_procs();
    const int threads = q.cpus && q.cpus < allowed ? q.cpus : allowed;
    omp_set_num_threads(threads);
    if (threads < allowed)
        fprintf(stderr, "infernode: %d thread%s by default, for a CPU quota of %.2f CPUs (%s) on %d allowed CPUs\n",
                threads, threads == 1 ? "" : "s", (double)q.quota / (double)q.period, q.source, allowed);
}

bool cli_parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end != '\0') return false;
    *out = v;
    return true;
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || strchr(s, '-')) return false;
    *out = v;
    return true;
}

int cli_parse_ids(const char *option, const char *list, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
            fprintf(stderr, "infernode: error: %s: '%.*s' is not a token id (a non-negative integer)\n", option,
                    (int)strcspn(p, ", "), p);
            free(*ids);
            *ids = NULL;
            *n = 0;
            return CLI_EXIT_USAGE;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            int32_t *ni = realloc(*ids, cap * sizeof *ni);
            if (!ni) {
                free(*ids);
                *ids = NULL;
                *n = 0;
                fprintf(stderr, "infernode: error: no memory for the token ids of %s\n", option);
                return CLI_EXIT_ERROR;
            }
            *ids = ni;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    return 0;
}

int cli_bad_value(const struct option *opts, int long_index, int c, const char *value, const char *expect)
{
    if (long_index >= 0) fprintf(stderr, "infernode: error: --%s: ", opts[long_index].name);
    else fprintf(stderr, "infernode: error: -%c: ", c);
    fprintf(stderr, "'%s' is not %s\n", value, expect);
    return CLI_EXIT_USAGE;
}

bool cli_parse_kv_type(const char *s, ifn_kv_type *out)
{
    for (int t = 0; t < IFN_KV_COUNT; t++)
        if (strcmp(s, ifn_kv_type_name((ifn_kv_type)t)) == 0) {
            *out = (ifn_kv_type)t;
            return true;
        }
    return false;
}

/* A JSON string: quotes, backslashes and control characters escaped, bytes that are not
 * UTF-8 replaced by U+FFFD, so that the line is valid JSON whatever the server sent. */
void cli_json_string(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    fputc('"', out);
    while (n > 0) {
        uint32_t cp;
        size_t len;
        utf8_class k = unicode_utf8_classify(p, n, &cp, &len);
        if (k != UTF8_VALID) {
            fputs("\\ufffd", out);
        } else if (cp == '"' || cp == '\\') {
            fputc('\\', out);
            fputc((int)cp, out);
        } else if (cp == '\n') {
            fputs("\\n", out);
        } else if (cp == '\r') {
            fputs("\\r", out);
        } else if (cp == '\t') {
            fputs("\\t", out);
        } else if (cp < 0x20) {
            fprintf(out, "\\u%04x", (unsigned)cp);
        } else {
            fwrite(p, 1, len, out);
        }
        p += len;
        n -= len;
    }
    fputc('"', out);
}

ifn_status cli_read_file(const char *path, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ifn_error_set(IFN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            size_t nc = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                fclose(fp);
                return ifn_error_set(IFN_ERR_NOMEM, "%s: no memory to read it", path);
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    if (err) {
        free(buf);
        return ifn_error_set(IFN_ERR_IO, "%s: cannot read: %s", path, strerror(err));
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return IFN_OK;
}
