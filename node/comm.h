/* The ranks of one model and the collectives the forward pass needs, over MPI.
 *
 * A process started by mpirun (or srun) joins MPI_COMM_WORLD; a process started alone is a
 * world of one and never touches MPI, so `infernode generate` works without a launcher.
 * Every MPI call's return code is checked (the communicator uses MPI_ERRORS_RETURN) and
 * turned into an ifn_status naming the call and MPI's message. */
#ifndef IFN_COMM_H
#define IFN_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "liveness.h"
#include "status.h"

typedef struct comm comm;

/* True if this process was started by an MPI launcher (it then must call comm_init). */
bool comm_launched_by_mpi(void);
/* This process's rank as the launcher set it, before comm_init (0 when not launched). */
int comm_launch_rank(void);

ifn_status comm_init(int *argc, char ***argv, comm **out);
/* A world of this process alone (for a model only rank 0 runs, such as a speculative draft):
 * it never touches MPI and keeps parent's place among the ranks of its host, so that NUMA
 * binding picks the same node. Freed with comm_finalize, which then finalizes nothing. */
ifn_status comm_create_self(const comm *parent, comm **out);
/* Collective: starts watching the other ranks (liveness.h), so that a dead rank or link ends
 * this process within the timeout instead of leaving a collective waiting forever. A world of
 * one watches nothing. o may be NULL (defaults). */
ifn_status comm_watch(comm *c, const liveness_options *o);
/* Called on the watch thread when a rank is lost, before the process exits (liveness.h). */
void comm_on_peer_lost(comm *c, liveness_lost_fn fn, void *user);
/* "name at address" of a rank's host as rank 0 knows it once watching; else this host's name. */
const char *comm_host(const comm *c, int rank);
/* Says goodbye to the watched ranks, finalizes MPI (if it was initialised) and frees c. */
void comm_finalize(comm *c);

int comm_rank(const comm *c);
int comm_world(const comm *c);
/* The rank's index among the ranks on its host, and how many share the host (for NUMA). */
int comm_local_rank(const comm *c);
int comm_local_size(const comm *c);

/* buf[n] = sum over ranks of buf[n], on every rank. */
ifn_status comm_allreduce_sum(comm *c, float *buf, size_t n);
/* Combines `flag` over all ranks: the minimum of the values (e.g. 0 = some rank failed). */
ifn_status comm_allreduce_min_int(comm *c, int *value);
/* *value = the sum over ranks of *value, on every rank (exact: byte counts). */
ifn_status comm_allreduce_sum_u64(comm *c, uint64_t *value);
ifn_status comm_bcast(comm *c, void *buf, size_t bytes, int root);
/* Rank 0 receives, per row, the largest value over all ranks and its index (lowest index on
 * ties). values/indices [n] in, best/best_index [n] out (rank 0 only). */
ifn_status comm_argmax(comm *c, const float *values, const int32_t *indices, int n, float *best, int32_t *best_index);
/* Rank 0 receives every rank's `count` floats, concatenated in rank order, into recv
 * (rank 0 only; its size is the sum of all counts). */
ifn_status comm_gather(comm *c, const float *send, int count, float *recv);

/* Kills the whole job with `code` (MPI_Abort); for failures after which ranks cannot agree. */
_Noreturn void comm_abort(comm *c, int code);

/* Seconds spent in comm_allreduce_sum so far (for the benchmark). */
double comm_allreduce_seconds(const comm *c);

#endif
