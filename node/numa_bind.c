#define _GNU_SOURCE
#include "numa_bind.h"

#include <numa.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cpuset.h"

/* The CPUs of node that are also in allowed[n_allowed], ascending, into out; returns how many. */
static int node_allowed_cpus(int node, const int *allowed, int n_allowed, int *out)
{
    struct bitmask *cpus = numa_allocate_cpumask();
    if (!cpus) return 0;
    int n = 0;
    if (numa_node_to_cpus(node, cpus) == 0)
        for (int i = 0; i < n_allowed; i++)
            if ((unsigned)allowed[i] < cpus->size && numa_bitmask_isbitset(cpus, (unsigned)allowed[i]))
                out[n++] = allowed[i];
    numa_free_cpumask(cpus);
    return n;
}

/* How many nodes hold some of the allowed CPUs; *nth (if not NULL) gets the nth of them in id
 * order. scratch holds CPUSET_MAX_CPUS ints. */
static int allowed_nodes(const int *allowed, int n_allowed, int nth_index, int *nth, int *scratch)
{
    int count = 0;
    for (int node = 0; node <= numa_max_node(); node++) {
        if (node_allowed_cpus(node, allowed, n_allowed, scratch) == 0) continue;
        if (nth && count == nth_index) *nth = node;
        count++;
    }
    return count;
}

/* The CPUs the OpenMP team's threads may run on now (the union of their affinities),
 * ascending; returns how many. */
static int team_cpus(int *out)
{
    unsigned char seen[CPUSET_MAX_CPUS] = { 0 };
    #pragma omp parallel
    {
        int mine[CPUSET_MAX_CPUS];
        int n = cpuset_thread(mine, CPUSET_MAX_CPUS);
        #pragma omp critical
        for (int i = 0; i < n; i++) seen[mine[i]] = 1;
    }
    int n = 0;
    for (int c = 0; c < CPUSET_MAX_CPUS; c++)
        if (seen[c]) out[n++] = c;
    return n;
}

ifn_status numa_bind_rank(int local_rank, int local_size, numa_binding *out)
{
    memset(out, 0, sizeof *out);
    out->node = -1;
    if (numa_available() < 0) {
        snprintf(out->desc, sizeof out->desc, "no NUMA support: memory and threads unbound");
        return IFN_OK;
    }
    out->n_nodes = numa_num_configured_nodes();
    if (out->n_nodes < 1) out->n_nodes = 1;

    /* The nodes with CPUs this process may use take the host's ranks round-robin. */
    int allowed[CPUSET_MAX_CPUS], cpus[CPUSET_MAX_CPUS], used[CPUSET_MAX_CPUS];
    const int n_allowed = cpuset_start(allowed, CPUSET_MAX_CPUS);
    const int n_cand = allowed_nodes(allowed, n_allowed, 0, NULL, cpus);
    if (n_cand == 0) {
        out->node = local_rank % out->n_nodes;
        numa_set_preferred(out->node);
        snprintf(out->desc, sizeof out->desc, "node %d of %d; the CPUs this process may use are unknown: threads "
                 "unpinned", out->node, out->n_nodes);
        return IFN_OK;
    }
    const int cand = local_rank % n_cand;
    allowed_nodes(allowed, n_allowed, cand, &out->node, cpus);
    numa_set_preferred(out->node);
    const int n = node_allowed_cpus(out->node, allowed, n_allowed, cpus);
    const int threads = omp_get_max_threads();
    const char *s = threads == 1 ? "" : "s";
    char list[160];

    if (omp_get_proc_bind() != omp_proc_bind_false) {
        cpuset_format(used, team_cpus(used), list, sizeof list);
        snprintf(out->desc, sizeof out->desc, "node %d of %d, %d thread%s placed by OpenMP (OMP_PROC_BIND, "
                 "OMP_PLACES) on CPUs %s", out->node, out->n_nodes, threads, s, list);
        return IFN_OK;
    }
    /* Run on the node's allowed CPUs, and divide them among the ranks that share the node. */
    cpuset_format(cpus, n, list, sizeof list);
    if (cpuset_thread_set(cpus, n) != IFN_OK) {
        snprintf(out->desc, sizeof out->desc, "node %d of %d: could not run on its CPUs %s: threads unpinned",
                 out->node, out->n_nodes, list);
        ifn_error_clear();
        return IFN_OK;
    }
    int sharers = (local_size - cand + n_cand - 1) / n_cand, index = local_rank / n_cand;
    if (sharers < 1) sharers = 1;
    const int per = n / sharers;
    const bool pin = per >= threads && per > 0;
    const int *mine = cpus + index * per;
    int failed = 0;
    #pragma omp parallel reduction(+ : failed)
    {
        ifn_status st = pin ? cpuset_thread_set(&mine[omp_get_thread_num() % per], 1) : cpuset_thread_set(cpus, n);
        if (st != IFN_OK) {
            failed++;
            ifn_error_clear();
        }
    }
    cpuset_format(used, team_cpus(used), list, sizeof list);
    if (!pin)
        snprintf(out->desc, sizeof out->desc, "node %d of %d, %d thread%s unpinned on CPUs %s (%d allowed CPUs shared "
                 "by %d rank%s)", out->node, out->n_nodes, threads, s, list, n, sharers, sharers == 1 ? "" : "s");
    else if (failed)
        snprintf(out->desc, sizeof out->desc, "node %d of %d, %d thread%s on CPUs %s (%d could not be pinned)",
                 out->node, out->n_nodes, threads, s, list, failed);
    else
        snprintf(out->desc, sizeof out->desc, "node %d of %d, %d thread%s pinned to CPUs %s", out->node, out->n_nodes,
                 threads, s, list);
    out->n_cpus = pin && !failed ? threads : 0;
    return IFN_OK;
}
