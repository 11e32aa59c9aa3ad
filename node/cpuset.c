#define _GNU_SOURCE
#include "cpuset.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

/* The start set: written once by cpuset_snapshot before main, read-only afterwards. */
static int start_cpus[CPUSET_MAX_CPUS];
static int start_n;

static int affinity_list(int *cpus, int max)
{
    cpu_set_t *set = CPU_ALLOC(CPUSET_MAX_CPUS);
    if (!set) return 0;
    size_t size = CPU_ALLOC_SIZE(CPUSET_MAX_CPUS);
    int n = 0;
    if (sched_getaffinity(0, size, set) == 0)
        for (int c = 0; c < CPUSET_MAX_CPUS && n < max; c++)
            if (CPU_ISSET_S(c, size, set)) cpus[n++] = c;
    CPU_FREE(set);
    return n;
}

__attribute__((constructor)) static void cpuset_snapshot(void)
{
    start_n = affinity_list(start_cpus, CPUSET_MAX_CPUS);
}

int cpuset_start(int *cpus, int max)
{
    int n = start_n < max ? start_n : max;
    memcpy(cpus, start_cpus, (size_t)n * sizeof *cpus);
    return n;
}

int cpuset_thread(int *cpus, int max) { return affinity_list(cpus, max); }

ifn_status cpuset_thread_set(const int *cpus, int n)
{
    char list[256];
    cpuset_format(cpus, n, list, sizeof list);
    cpu_set_t *set = CPU_ALLOC(CPUSET_MAX_CPUS);
    if (!set) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a CPU set");
    size_t size = CPU_ALLOC_SIZE(CPUSET_MAX_CPUS);
    CPU_ZERO_S(size, set);
    for (int i = 0; i < n; i++)
        if (cpus[i] >= 0 && cpus[i] < CPUSET_MAX_CPUS) CPU_SET_S(cpus[i], size, set);
    int err = 0;
    if (CPU_COUNT_S(size, set) == 0) err = EINVAL;
    else if (sched_setaffinity(0, size, set) != 0) err = errno;
    CPU_FREE(set);
    if (err) return ifn_error_set(IFN_ERR_INVALID_ARG, "cannot run on CPUs %s: %s", list, strerror(err));
    return IFN_OK;
}

void cpuset_format(const int *cpus, int n, char *buf, size_t size)
{
    if (size == 0) return;
    if (n == 0) {
        snprintf(buf, size, "none");
        return;
    }
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && cpus[j + 1] == cpus[j] + 1) j++;
        char item[32];
        if (j > i) snprintf(item, sizeof item, "%s%d-%d", i ? "," : "", cpus[i], cpus[j]);
        else snprintf(item, sizeof item, "%s%d", i ? "," : "", cpus[i]);
        size_t k = strlen(item);
        if (len + k + 4 > size && (j + 1 < n || len + k + 1 > size)) {
            snprintf(buf + len, size - len, "...");
            return;
        }
        memcpy(buf + len, item, k + 1);
        len += k;
        i = j + 1;
    }
}
