/* The CPUs this process may run on, as lists of CPU ids.
 *
 * The start set is the process's sched_getaffinity mask when it started, read once before
 * main runs and before infernode pins any thread: what `taskset`, mpirun's --bind-to,
 * Slurm's --cpu-bind or a container's cpuset gave it. Pinning only ever narrows within it,
 * so a process that creates several engines (a benchmark, a draft model) pins each one
 * within the same set. (With OMP_PROC_BIND set, libgomp binds the initial thread to its first
 * place before that, so the start set is that place: OpenMP then places the threads itself.) */
#ifndef IFN_CPUSET_H
#define IFN_CPUSET_H

#include <stddef.h>

#include "status.h"

#define CPUSET_MAX_CPUS 4096 /* CPU ids from here on are not seen */

/* The start set, ascending, into cpus[max]; returns how many (0 if the kernel would not say). */
int cpuset_start(int *cpus, int max);

/* The calling thread's CPUs now, ascending; returns how many (0 if the kernel would not say). */
int cpuset_thread(int *cpus, int max);

/* Lets the calling thread run only on cpus[n] (n >= 1). Errors name the CPUs. */
ifn_status cpuset_thread_set(const int *cpus, int n);

/* cpus[n] (ascending) as Linux writes Cpus_allowed_list: "0-3,8,10-11"; "none" for n = 0. A
 * list too long for buf ends in "...". */
void cpuset_format(const int *cpus, int n, char *buf, size_t size);

#endif
