#define _GNU_SOURCE
#include "numa_bind.h"

#include <numa.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

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
    out->node = local_rank % out->n_nodes;
    numa_set_preferred(out->node);
    if (numa_run_on_node(out->node) != 0) {
        snprintf(out->desc, sizeof out->desc, "node %d of %d: could not run on it", out->node, out->n_nodes);
        return IFN_OK;
    }

    /* The node's CPUs, divided among the ranks that share the node. */
    struct bitmask *cpus = numa_allocate_cpumask();
    if (!cpus || numa_node_to_cpus(out->node, cpus) != 0) {
        if (cpus) numa_free_cpumask(cpus);
        snprintf(out->desc, sizeof out->desc, "node %d of %d, threads unpinned", out->node, out->n_nodes);
        return IFN_OK;
    }
    int node_cpus[4096], n = 0;
    for (unsigned i = 0; i < cpus->size && n < 4096; i++)
        if (numa_bitmask_isbitset(cpus, i)) node_cpus[n++] = (int)i;
    numa_free_cpumask(cpus);
    int sharers = (local_size - out->node + out->n_nodes - 1) / out->n_nodes; /* ranks on this node */
    int index = local_rank / out->n_nodes;
    int per = sharers > 0 ? n / sharers : 0;
    int threads = omp_get_max_threads();
    if (per < threads || per == 0) {
        snprintf(out->desc, sizeof out->desc, "node %d of %d, %d threads on %d cores shared by %d ranks: unpinned",
                 out->node, out->n_nodes, threads, n, sharers);
        return IFN_OK;
    }
    const int *mine = node_cpus + index * per;
    #pragma omp parallel
    {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(mine[omp_get_thread_num() % per], &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    out->n_cpus = threads;
    snprintf(out->desc, sizeof out->desc, "node %d of %d, %d threads pinned to cores %d..%d", out->node, out->n_nodes,
             threads, mine[0], mine[threads - 1]);
    return IFN_OK;
}
