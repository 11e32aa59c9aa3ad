/* A few threads that run posted jobs in order of posting: the gRPC server's handlers run here,
 * so that tokenizing a large request never holds up the completion-queue thread (and with it
 * every other call, health checks included). */
#ifndef IFN_WORK_POOL_H
#define IFN_WORK_POOL_H

#include "status.h"

typedef struct work_pool work_pool;
typedef void (*work_fn)(void *arg);

/* Starts n_threads (1..64) threads. */
ifn_status work_pool_create(int n_threads, work_pool **out);
/* Queues fn(arg) for the next free thread. Thread-safe. Fails only when out of memory (the job
 * is then not queued) or after work_pool_destroy began. */
ifn_status work_pool_post(work_pool *p, work_fn fn, void *arg);
/* Runs every job still queued, then joins the threads and frees the pool. NULL is a no-op. */
void work_pool_destroy(work_pool *p);

#endif
