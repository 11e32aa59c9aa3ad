#define _GNU_SOURCE
#include "cpu_quota.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where one hierarchy's cgroup of this process lives: its path as /proc/self/cgroup names it,
 * and the mount that shows it. */
typedef struct {
    bool in_cgroup;           /* /proc/self/cgroup has a line for the hierarchy */
    char path[PATH_MAX];      /* "/kubepods/pod1/c1" */
    bool mounted;
    char root[PATH_MAX];      /* the hierarchy's directory the mount shows ("/" unless bind-mounted) */
    char point[PATH_MAX];     /* where it is mounted: "/sys/fs/cgroup/cpu,cpuacct" */
} hierarchy;

static void note_add(cpu_quota *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_add(cpu_quota *q, const char *fmt, ...)
{
    size_t len = strlen(q->note);
    if (len && len + 2 < sizeof q->note) {
        memcpy(q->note + len, "; ", 3);
        len += 2;
    }
    if (len + 1 >= sizeof q->note) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->note + len, sizeof q->note - len, fmt, ap);
    va_end(ap);
}

/* The first bytes of a small file, trailing white space cut. False with errno if it cannot
 * be opened or read. */
static bool read_small(const char *path, char *buf, size_t size)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    size_t n = fread(buf, 1, size - 1, fp);
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    if (err) {
        errno = err;
        return false;
    }
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t')) buf[--n] = '\0';
    return true;
}

/* The whole string is a decimal integer. */
static bool parse_ll(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0') return false;
    *out = v;
    return true;
}

/* Keeps the limit if it is the smallest so far: quota / period compared exactly. */
static void limit_offer(cpu_quota *q, long long quota, long long period, const char *path)
{
    if (q->cpus && (__int128)quota * q->period >= (__int128)q->quota * period) return;
    q->quota = quota;
    q->period = period;
    long long cpus = quota / period + (quota % period != 0);
    q->cpus = cpus > INT_MAX ? INT_MAX : cpus < 1 ? 1 : (int)cpus;
    snprintf(q->source, sizeof q->source, "%.*s", (int)sizeof q->source - 1, path); /* long paths cut */
}

/* cgroup v2: "max [PERIOD]" or "QUOTA PERIOD" in dir/cpu.max. */
static void read_v2_level(cpu_quota *q, const char *dir)
{
    char path[PATH_MAX + 16], text[128];
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    if (!read_small(path, text, sizeof text)) {
        if (errno != ENOENT) note_add(q, "%s: cannot read: %s", path, strerror(errno));
        return;
    }
    char first[64], second[64], extra;
    long long quota, period = 100000;
    int n = sscanf(text, "%63s %63s %c", first, second, &extra);
    bool ok = n == 1 || n == 2;
    if (ok && n == 2) ok = parse_ll(second, &period) && period > 0;
    if (ok && strcmp(first, "max") == 0) return;
    if (ok) ok = n == 2 && parse_ll(first, &quota) && quota > 0;
    if (!ok) {
        note_add(q, "%s: '%.64s' is not 'max [PERIOD]' or 'QUOTA PERIOD'", path, text);
        return;
    }
    limit_offer(q, quota, period, path);
}

/* cgroup v1: dir/cpu.cfs_quota_us (-1: no limit) over dir/cpu.cfs_period_us. */
static void read_v1_level(cpu_quota *q, const char *dir)
{
    char path[PATH_MAX + 32], period_path[PATH_MAX + 32], text[128];
    long long quota, period;
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (!read_small(path, text, sizeof text)) {
        if (errno != ENOENT) note_add(q, "%s: cannot read: %s", path, strerror(errno));
        return;
    }
    if (!parse_ll(text, &quota) || (quota <= 0 && quota != -1)) {
        note_add(q, "%s: '%.64s' is not -1 or a positive number of microseconds", path, text);
        return;
    }
    if (quota == -1) return;
    snprintf(period_path, sizeof period_path, "%s/cpu.cfs_period_us", dir);
    if (!read_small(period_path, text, sizeof text)) {
        note_add(q, "%s: cannot read: %s", period_path, strerror(errno));
        return;
    }
    if (!parse_ll(text, &period) || period <= 0) {
        note_add(q, "%s: '%.64s' is not a positive number of microseconds", period_path, text);
        return;
    }
    limit_offer(q, quota, period, path);
}

/* Does the comma-separated list hold item? */
static bool list_has(const char *list, const char *item)
{
    size_t len = strlen(item);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n == len && strncmp(p, item, len) == 0) return true;
        p += n;
        if (*p == ',') p++;
    }
    return false;
}

/* Calls offer(line, v2, v1) for each line of proc_root/self/<name>, newline removed. */
static void read_self_lines(const char *proc_root, const char *name, void (*offer)(char *, hierarchy *, hierarchy *),
                            hierarchy *v2, hierarchy *v1)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/self/%s", proc_root, name);
    FILE *fp = fopen(path, "r");
    if (!fp) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) > 0) {
        if (line[len - 1] == '\n') line[--len] = '\0';
        offer(line, v2, v1);
    }
    free(line);
    fclose(fp);
}

/* A "0::/path" (v2) or "N:...cpu...:/path" (v1) line of /proc/self/cgroup. */
static void cgroup_offer(char *line, hierarchy *v2, hierarchy *v1)
{
    char *controllers = strchr(line, ':');
    char *cg = controllers ? strchr(controllers + 1, ':') : NULL;
    if (!cg || cg[1] != '/') return;
    *controllers++ = '\0';
    *cg++ = '\0';
    hierarchy *h = NULL;
    if (strcmp(line, "0") == 0 && *controllers == '\0') h = v2;
    else if (list_has(controllers, "cpu")) h = v1;
    if (h && !h->in_cgroup && strlen(cg) < sizeof h->path) {
        h->in_cgroup = true;
        strcpy(h->path, cg);
    }
}

/* mountinfo writes space, tab, newline and backslash as octal escapes (\040). */
static void unescape(char *s)
{
    char *out = s;
    for (const char *p = s; *p;) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
            *out++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 4;
        } else {
            *out++ = *p++;
        }
    }
    *out = '\0';
}

/* Does the mount that shows directory `root` of its hierarchy show the cgroup at `path`? */
static bool root_holds(const char *root, const char *path)
{
    size_t n = strlen(root);
    if (strcmp(root, "/") == 0) return true;
    return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* One mountinfo line: "36 35 98:0 ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER". */
static void mount_offer(char *line, hierarchy *v2, hierarchy *v1)
{
    char *field[6], *save = NULL, *t;
    int n = 0;
    while (n < 6 && (t = strtok_r(n ? NULL : line, " ", &save))) field[n++] = t;
    if (n < 6) return;
    while ((t = strtok_r(NULL, " ", &save)) && strcmp(t, "-") != 0) {}
    char *fstype = strtok_r(NULL, " ", &save), *source = strtok_r(NULL, " ", &save);
    char *super = strtok_r(NULL, " ", &save);
    if (!fstype || !source || !super) return;
    hierarchy *h;
    if (strcmp(fstype, "cgroup2") == 0) h = v2;
    else if (strcmp(fstype, "cgroup") == 0 && list_has(super, "cpu")) h = v1;
    else return;
    unescape(field[3]);
    unescape(field[4]);
    if (strlen(field[3]) >= sizeof h->root || strlen(field[4]) >= sizeof h->point) return;
    /* Of several mounts of the hierarchy, the first that shows our cgroup (else the first). */
    if (h->mounted && (root_holds(h->root, h->path) || !root_holds(field[3], h->path))) return;
    h->mounted = true;
    strcpy(h->root, field[3]);
    strcpy(h->point, field[4]);
}

/* Reads the process's cgroup of one hierarchy and each ancestor up to the mount's root. */
static void walk(cpu_quota *q, const char *fs_root, const hierarchy *h, void (*read_level)(cpu_quota *, const char *))
{
    if (!h->in_cgroup || !h->mounted) return;
    char rel[PATH_MAX] = "";
    if (!root_holds(h->root, h->path) || strstr(h->path, "/.."))
        note_add(q, "cgroup %s is outside the mount of %s at %s: only the mount's top is read", h->path, h->root,
                 h->point);
    else
        snprintf(rel, sizeof rel, "%s", h->path + (strcmp(h->root, "/") == 0 ? 0 : strlen(h->root)));
    for (;;) {
        size_t n = strlen(rel);
        while (n > 0 && rel[n - 1] == '/') rel[--n] = '\0';
        char dir[2 * PATH_MAX + 8];
        snprintf(dir, sizeof dir, "%s%s%s", fs_root, h->point, rel);
        read_level(q, dir);
        if (n == 0) break;
        char *slash = strrchr(rel, '/');
        if (!slash) break;
        *slash = '\0';
    }
}

void cpu_quota_read(const char *proc_root, const char *fs_root, cpu_quota *out)
{
    memset(out, 0, sizeof *out);
    hierarchy *v2 = calloc(2, sizeof *v2);
    if (!v2) {
        note_add(out, "no memory to read the cgroup files");
        return;
    }
    hierarchy *v1 = v2 + 1;
    read_self_lines(proc_root, "cgroup", cgroup_offer, v2, v1);
    read_self_lines(proc_root, "mountinfo", mount_offer, v2, v1);
    walk(out, fs_root, v2, read_v2_level);
    walk(out, fs_root, v1, read_v1_level);
    free(v2);
}
