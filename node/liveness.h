/* Liveness of the ranks: a heartbeat beside MPI, so that no collective waits forever.
 *
 * MPI over TCP notices neither a peer that hangs nor a link that goes down (the kernel keeps
 * retransmitting for many minutes), and a collective waits for it. So every rank other than
 * 0 keeps one TCP connection to rank 0, and a thread on each side sends one byte every
 * `interval` seconds and watches what arrives. A peer is lost when its connection closes
 * without its goodbye (the process died: noticed at once) or when nothing came from it for
 * `timeout` seconds (a hung host or a dead link). The thread does not depend on the forward
 * pass, so a long step (a 1024-token prefill of a 34B model) is never mistaken for a dead
 * link; the timeout only has to cover the scheduling delay of a thread that wakes every
 * `interval` on a loaded host.
 *
 * On loss the watch thread calls the handler (rank 0's service fails its calls there), then
 * ends the process with _exit(1): the main thread may be inside a collective that will never
 * return. Rank 0 watches every rank; the others watch rank 0, so both sides of a dead link
 * stop. Rank 0's address reaches the others by MPI_Bcast: each of its IPv4 addresses is
 * tried in turn (those on the given interfaces first, loopback last). */
#ifndef IFN_LIVENESS_H
#define IFN_LIVENESS_H

#include <stddef.h>

#include "status.h"

typedef struct comm comm;
typedef struct liveness liveness;

typedef struct {
    double interval; /* seconds between heartbeats (default 0.2) */
    double timeout;  /* silence after which a peer is lost (default 5) */
    /* Interfaces rank 0's address is taken from first, in Open MPI's if_include syntax
     * ("eth1,10.0.0.0/16"); NULL: every interface, loopback last. */
    const char *interfaces;
    int port;        /* rank 0's listening port during the start (0: any free one) */
} liveness_options;

/* Called on the watch thread, once, with the lost rank, its host ("name at address") and what
 * happened; the process exits with status 1 when it returns. */
typedef void (*liveness_lost_fn)(void *user, int rank, const char *host, const char *what);

/* Collective over c's ranks: connects every rank to rank 0 and starts the watch threads. On
 * failure no thread runs and every rank returns an error. A world of one returns a liveness
 * that watches nothing. o may be NULL (defaults). */
ifn_status liveness_start(comm *c, const liveness_options *o, liveness **out);

/* Sets the handler (default: none; the loss is logged either way). Thread-safe; while a
 * handler runs it waits, so after liveness_on_lost(l, NULL, NULL) the old user data is free. */
void liveness_on_lost(liveness *l, liveness_lost_fn fn, void *user);

/* The host of a rank as rank 0 knows it ("name at address"); on other ranks, and for rank 0
 * itself, this host's name. */
const char *liveness_host(const liveness *l, int rank);

/* A normal end: tells the peers (so that closing is no loss), stops the thread, closes the
 * connections and frees l. NULL is a no-op. */
void liveness_destroy(liveness *l);

#endif
