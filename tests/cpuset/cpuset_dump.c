/* Driver of test_cpu_quota.py:
 *   cpuset_dump quota PROC_ROOT FS_ROOT   cpu_quota_read on a (fake) tree: "cpus= quota= period=",
 *                                         then "source=" and "note=" lines
 *   cpuset_dump format ID...              cpuset_format of the ids (ascending) with a roomy and
 *                                         with a small buffer, one line each
 *   cpuset_dump start                     the start set and the calling thread's set now */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_quota.h"
#include "cpuset.h"

static int usage(void)
{
    fputs("usage: cpuset_dump quota PROC_ROOT FS_ROOT | format ID... | start\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "quota") == 0) {
        cpu_quota q;
        cpu_quota_read(argv[2], argv[3], &q);
        printf("cpus=%d quota=%lld period=%lld\nsource=%s\nnote=%s\n", q.cpus, q.quota, q.period, q.source, q.note);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "format") == 0) {
        int n = argc - 2, *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
        if (!ids) return 1;
        for (int i = 0; i < n; i++) ids[i] = atoi(argv[i + 2]);
        char big[4096], small[12];
        cpuset_format(ids, n, big, sizeof big);
        cpuset_format(ids, n, small, sizeof small);
        printf("%s\n%s\n", big, small);
        free(ids);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "start") == 0) {
        int cpus[CPUSET_MAX_CPUS];
        char list[4096];
        cpuset_format(cpus, cpuset_start(cpus, CPUSET_MAX_CPUS), list, sizeof list);
        printf("start=%s\n", list);
        cpuset_format(cpus, cpuset_thread(cpus, CPUSET_MAX_CPUS), list, sizeof list);
        printf("thread=%s\n", list);
        return 0;
    }
    return usage();
}
