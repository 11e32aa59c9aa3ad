/* Binds a rank to one NUMA node: its memory allocations and its OpenMP threads, within the
 * CPUs the process was started on (cpuset.h: taskset, mpirun's or Slurm's binding, a
 * container's cpuset); no thread is ever put on a CPU outside them. The nodes that hold some
 * of those CPUs take the host's ranks round-robin (rank 0 → the first, rank 1 → the second,
 * ...); ranks sharing a node share its allowed CPUs evenly. Where a rank's share has fewer
 * CPUs than its threads, the threads are not pinned one by one but may run anywhere in the
 * node's allowed CPUs (an oversubscribed test run must not pile every thread onto one core).
 * With OMP_PROC_BIND set, OpenMP places the threads itself and only memory is bound. */
#ifndef IFN_NUMA_BIND_H
#define IFN_NUMA_BIND_H

#include "status.h"

typedef struct {
    int node;          /* -1 if libnuma is unavailable */
    int n_nodes;
    int n_cpus;        /* CPUs this rank's threads were pinned to, one each (0: not pinned) */
    char desc[256];    /* for logs: "node 1 of 2, 28 threads pinned to CPUs 28-55" */
} numa_binding;

/* local_rank / local_size: this rank among the ranks on its host. Never fails hard: a host
 * without NUMA support runs unbound, and a CPU set that cannot be applied leaves the threads
 * where they are; `desc` says which. */
ifn_status numa_bind_rank(int local_rank, int local_size, numa_binding *out);

#endif
