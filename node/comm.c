#include "comm.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

struct comm {
    bool mpi;
    int rank, world, local_rank, local_size;
    MPI_Comm world_comm;
    double allreduce_seconds;
    liveness *lv; /* NULL until comm_watch */
};

static const char *const rank_vars[] = { "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", NULL };

bool comm_launched_by_mpi(void)
{
    for (int i = 0; rank_vars[i]; i++)
        if (getenv(rank_vars[i])) return true;
    return false;
}

int comm_launch_rank(void)
{
    for (int i = 0; rank_vars[i]; i++) {
        const char *v = getenv(rank_vars[i]);
        if (v) return atoi(v);
    }
    return 0;
}

static ifn_status mpi_check(int rc, const char *call)
{
    if (rc == MPI_SUCCESS) return IFN_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return ifn_error_set(IFN_ERR_INTERNAL, "%s failed: %s", call, msg);
}

ifn_status comm_init(int *argc, char ***argv, comm **out)
{
    *out = NULL;
    comm *c = calloc(1, sizeof *c);
    if (!c) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    c->world = 1;
    c->local_size = 1;
    if (!comm_launched_by_mpi()) {
        *out = c;
        return IFN_OK;
    }
    int provided;
    ifn_status s = mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    if (s != IFN_OK) {
        free(c);
        return s;
    }
    c->mpi = true;
    MPI_Comm local = MPI_COMM_NULL;
    CHECK_GOTO(mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &c->world_comm), "MPI_Comm_dup"), s, fail);
    CHECK_GOTO(mpi_check(MPI_Comm_set_errhandler(c->world_comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler"), s, fail);
    CHECK_GOTO(mpi_check(MPI_Comm_rank(c->world_comm, &c->rank), "MPI_Comm_rank"), s, fail);
    CHECK_GOTO(mpi_check(MPI_Comm_size(c->world_comm, &c->world), "MPI_Comm_size"), s, fail);
    CHECK_GOTO(mpi_check(MPI_Comm_split_type(c->world_comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local),
                         "MPI_Comm_split_type"), s, fail);
    CHECK_GOTO(mpi_check(MPI_Comm_rank(local, &c->local_rank), "MPI_Comm_rank"), s, fail);
    CHECK_GOTO(mpi_check(MPI_Comm_size(local, &c->local_size), "MPI_Comm_size"), s, fail);
    MPI_Comm_free(&local);
    *out = c;
    return IFN_OK;
fail:
    if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
    comm_finalize(c);
    return s;
}

ifn_status comm_create_self(const comm *parent, comm **out)
{
    comm *c = calloc(1, sizeof *c);
    if (!c) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    c->world = 1;
    c->local_rank = parent->local_rank;
    c->local_size = parent->local_size;
    c->world_comm = MPI_COMM_NULL;
    *out = c;
    return IFN_OK;
}

ifn_status comm_watch(comm *c, const liveness_options *o)
{
    if (c->lv) return IFN_OK;
    return liveness_start(c, o, &c->lv);
}

void comm_on_peer_lost(comm *c, liveness_lost_fn fn, void *user) { liveness_on_lost(c->lv, fn, user); }

const char *comm_host(const comm *c, int rank)
{
    static const char unknown[] = "this host";
    return c->lv ? liveness_host(c->lv, rank) : unknown;
}

void comm_finalize(comm *c)
{
    if (!c) return;
    liveness_destroy(c->lv);
    if (c->mpi) {
        if (c->world_comm != MPI_COMM_NULL) MPI_Comm_free(&c->world_comm);
        MPI_Finalize();
    }
    free(c);
}

int comm_rank(const comm *c) { return c->rank; }
int comm_world(const comm *c) { return c->world; }
int comm_local_rank(const comm *c) { return c->local_rank; }
int comm_local_size(const comm *c) { return c->local_size; }

ifn_status comm_allreduce_sum(comm *c, float *buf, size_t n)
{
    if (c->world == 1) return IFN_OK;
    if (n > (size_t)INT32_MAX) return ifn_error_set(IFN_ERR_RANGE, "all-reduce of %zu floats is too large", n);
    double t0 = ifn_seconds();
    ifn_status s = mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c->world_comm), "MPI_Allreduce");
    c->allreduce_seconds += ifn_seconds() - t0;
    return s;
}

ifn_status comm_allreduce_min_int(comm *c, int *value)
{
    if (c->world == 1) return IFN_OK;
    return mpi_check(MPI_Allreduce(MPI_IN_PLACE, value, 1, MPI_INT, MPI_MIN, c->world_comm), "MPI_Allreduce");
}

ifn_status comm_allreduce_sum_u64(comm *c, uint64_t *value)
{
    if (c->world == 1) return IFN_OK;
    return mpi_check(MPI_Allreduce(MPI_IN_PLACE, value, 1, MPI_UINT64_T, MPI_SUM, c->world_comm), "MPI_Allreduce");
}

ifn_status comm_bcast(comm *c, void *buf, size_t bytes, int root)
{
    if (c->world == 1) return IFN_OK;
    if (bytes > (size_t)INT32_MAX) return ifn_error_set(IFN_ERR_RANGE, "broadcast of %zu bytes is too large", bytes);
    return mpi_check(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, c->world_comm), "MPI_Bcast");
}

ifn_status comm_argmax(comm *c, const float *values, const int32_t *indices, int n, float *best, int32_t *best_index)
{
    struct pair { float value; int index; };
    struct pair *in = malloc((size_t)n * 2 * sizeof *in);
    if (!in) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    struct pair *res = in + n;
    for (int i = 0; i < n; i++) in[i] = (struct pair){ values[i], indices[i] };
    ifn_status s = IFN_OK;
    if (c->world == 1) memcpy(res, in, (size_t)n * sizeof *in);
    else s = mpi_check(MPI_Reduce(in, res, n, MPI_FLOAT_INT, MPI_MAXLOC, 0, c->world_comm), "MPI_Reduce");
    if (s == IFN_OK && c->rank == 0)
        for (int i = 0; i < n; i++) {
            best[i] = res[i].value;
            best_index[i] = res[i].index;
        }
    free(in);
    return s;
}

ifn_status comm_gather(comm *c, const float *send, int count, float *recv)
{
    if (c->world == 1) {
        memcpy(recv, send, (size_t)count * sizeof *send);
        return IFN_OK;
    }
    int *counts = NULL, *displs = NULL;
    if (c->rank == 0) {
        counts = malloc((size_t)c->world * 2 * sizeof *counts);
        if (!counts) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
        displs = counts + c->world;
    }
    ifn_status s = mpi_check(MPI_Gather(&count, 1, MPI_INT, counts, 1, MPI_INT, 0, c->world_comm), "MPI_Gather");
    if (s == IFN_OK && c->rank == 0)
        for (int r = 0, off = 0; r < c->world; r++) {
            displs[r] = off;
            off += counts[r];
        }
    if (s == IFN_OK)
        s = mpi_check(MPI_Gatherv(send, count, MPI_FLOAT, recv, counts, displs, MPI_FLOAT, 0, c->world_comm), "MPI_Gatherv");
    free(counts);
    return s;
}

_Noreturn void comm_abort(comm *c, int code)
{
    fflush(stdout);
    fflush(stderr);
    if (c && c->mpi) MPI_Abort(c->world_comm, code);
    exit(code);
}

double comm_allreduce_seconds(const comm *c) { return c->allreduce_seconds; }
