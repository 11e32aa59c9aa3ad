/* Binds a rank to one NUMA node: its memory allocations and its OpenMP threads. Ranks on a
 * host are spread over its nodes round-robin (rank 0 → node 0, rank 1 → node 1, ...); ranks
 * sharing a node share its cores evenly. On a one-node machine this only pins threads, and
 * where a node has fewer cores than its ranks' threads nothing is pinned (an oversubscribed
 * test run must not pile every thread onto the same core). */
#ifndef IFN_NUMA_BIND_H
#define IFN_NUMA_BIND_H

#include "status.h"

typedef struct {
    int node;          /* -1 if libnuma is unavailable */
    int n_nodes;
    int n_cpus;        /* CPUs this rank's threads were pinned to (0: not pinned) */
    char desc[128];    /* for logs: "node 1 of 2, 28 cores pinned" */
} numa_binding;

/* local_rank / local_size: this rank among the ranks on its host. Never fails hard: a host
 * without NUMA support runs unbound, which `desc` says. */
ifn_status numa_bind_rank(int local_rank, int local_size, numa_binding *out);

#endif
