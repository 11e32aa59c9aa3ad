#include "work_pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct job {
    work_fn fn;
    void *arg;
    struct job *next;
} job;

struct work_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* a job was queued, or the pool is stopping */
    job *head, *tail;    /* FIFO */
    bool stopping;
    pthread_t *threads;  /* [n_threads] */
    int n_threads;
};

static void *worker(void *arg)
{
    work_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        job *j = p->head;
        if (!j) break; /* stopping, and nothing is left to run */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ifn_status work_pool_create(int n_threads, work_pool **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 64)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "work_pool: %d threads (1..64)", n_threads);
    work_pool *p = calloc(1, sizeof *p);
    pthread_t *threads = calloc((size_t)n_threads, sizeof *threads);
    if (!p || !threads) {
        free(p);
        free(threads);
        return ifn_error_set(IFN_ERR_NOMEM, "work_pool: no memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = threads;
    for (; p->n_threads < n_threads; p->n_threads++)
        if (pthread_create(&p->threads[p->n_threads], NULL, worker, p) != 0) break;
    if (p->n_threads < n_threads) {
        work_pool_destroy(p);
        return ifn_error_set(IFN_ERR_INTERNAL, "work_pool: cannot start thread %d of %d", p->n_threads + 1, n_threads);
    }
    *out = p;
    return IFN_OK;
}

ifn_status work_pool_post(work_pool *p, work_fn fn, void *arg)
{
    job *j = malloc(sizeof *j);
    if (!j) return ifn_error_set(IFN_ERR_NOMEM, "work_pool: no memory to queue a job");
    *j = (job){ .fn = fn, .arg = arg };
    pthread_mutex_lock(&p->mu);
    bool stopping = p->stopping;
    if (!stopping) {
        if (p->tail) p->tail->next = j;
        else p->head = j;
        p->tail = j;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (stopping) {
        free(j);
        return ifn_error_set(IFN_ERR_CANCELLED, "work_pool: stopping");
    }
    return IFN_OK;
}

void work_pool_destroy(work_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
