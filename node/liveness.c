#define _GNU_SOURCE
#include "liveness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "comm.h"

#define MAX_ADDRS 16
#define HOST_LEN 64
#define CONNECT_SECONDS 2.0 /* per address tried */
#define ACCEPT_SECONDS 60.0 /* rank 0 waits this long for every rank to connect */
#define BEAT 'H'
#define BYE 'B'

/* What rank 0 broadcasts: where to reach it. port 0: it could not listen. */
typedef struct {
    uint16_t port;
    uint16_t n_addrs;
    uint32_t addrs[MAX_ADDRS]; /* network byte order, loopback last */
    char host[HOST_LEN];
} rank0_where;

/* What a rank sends first on its connection. */
typedef struct {
    int32_t rank;
    char host[HOST_LEN];
} hello;

typedef struct {
    int fd;             /* -1: closed */
    int rank;
    bool bye;           /* it said goodbye: closing is no loss */
    double last_heard;  /* ifn_seconds() */
    char host[HOST_LEN + 24];
} peer;

struct liveness {
    int rank, world;
    liveness_options opt;
    peer *peers; /* rank 0: [world - 1] (ranks 1..); others: [1] (rank 0) */
    int n_peers;
    struct pollfd *fds; /* [1 + n_peers], the watch thread's */
    char host[HOST_LEN];
    int wake[2]; /* self-pipe: destroy wakes the thread */
    pthread_t thread;
    bool running;
    atomic_bool stop;
    pthread_mutex_t mu; /* guards fn, user */
    liveness_lost_fn fn;
    void *user;
};

static void this_host(char out[HOST_LEN])
{
    if (gethostname(out, HOST_LEN) != 0) snprintf(out, HOST_LEN, "unknown");
    out[HOST_LEN - 1] = '\0';
}

/* True when interface `name` with address `a` is in `list`, Open MPI's if_include syntax:
 * comma-separated interface names or IPv4 subnets ("eth1,10.0.0.0/16"). */
static bool iface_listed(const char *list, const char *name, uint32_t a)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *slash = strchr(item, '/');
        struct in_addr net;
        if (!slash) {
            if (strcmp(item, name) == 0) return true;
            continue;
        }
        *slash = '\0';
        int bits = atoi(slash + 1);
        if (inet_pton(AF_INET, item, &net) != 1 || bits < 0 || bits > 32) continue;
        uint32_t mask = bits == 0 ? 0 : htonl(~0u << (32 - bits));
        if ((a & mask) == (net.s_addr & mask)) return true;
    }
    return false;
}

/* This host's IPv4 addresses: those on `prefer` (if_include syntax, may be NULL) first, then
 * the others, loopback last. */
static int local_addrs(const char *prefer, uint32_t out[MAX_ADDRS])
{
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return 0;
    int n = 0;
    for (int pass = 0; pass < 3; pass++)
        for (struct ifaddrs *i = ifs; i && n < MAX_ADDRS; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
            const uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
            const bool loop = (i->ifa_flags & IFF_LOOPBACK) != 0;
            const bool listed = prefer && *prefer && iface_listed(prefer, i->ifa_name, a);
            const int want = loop ? 2 : listed ? 0 : 1;
            if (want == pass) out[n++] = a;
        }
    freeifaddrs(ifs);
    return n;
}

static bool wait_fd(int fd, short events, double seconds)
{
    struct pollfd p = { .fd = fd, .events = events };
    int ms = seconds > 0 ? (int)(seconds * 1000) : 0;
    int rc;
    do rc = poll(&p, 1, ms);
    while (rc < 0 && errno == EINTR);
    return rc == 1 && !(p.revents & (POLLERR | POLLNVAL));
}

static bool read_full(int fd, void *buf, size_t n, double seconds)
{
    double end = ifn_seconds() + seconds;
    for (size_t got = 0; got < n;) {
        if (!wait_fd(fd, POLLIN, end - ifn_seconds())) return false;
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r <= 0 && !(r < 0 && errno == EINTR)) return false;
        if (r > 0) got += (size_t)r;
    }
    return true;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Rank 0: a listening socket on every address; fills where (port 0 on failure). */
static int listen_any(const char *prefer, int port, rank0_where *where)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_ANY) };
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    where->port = ntohs(a.sin_port);
    where->n_addrs = (uint16_t)local_addrs(prefer, where->addrs);
    return fd;
}

/* Another rank: a connection to rank 0 through the first address that answers. */
static int connect_rank0(const rank0_where *w, char *addr_text, size_t cap)
{
    for (int i = 0; i < w->n_addrs; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) return -1;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(w->port), .sin_addr.s_addr = w->addrs[i] };
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        int err = 0;
        socklen_t elen = sizeof err;
        if (rc != 0 && errno == EINPROGRESS && wait_fd(fd, POLLOUT, CONNECT_SECONDS) &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
            rc = 0;
        if (rc == 0) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            inet_ntop(AF_INET, &a.sin_addr, addr_text, (socklen_t)cap);
            return fd;
        }
        close(fd);
    }
    return -1;
}

/* Rank 0: accepts one connection per other rank, each introduced by its hello. */
static ifn_status accept_ranks(liveness *l, int lfd)
{
    double end = ifn_seconds() + ACCEPT_SECONDS;
    for (int got = 0; got < l->n_peers;) {
        if (!wait_fd(lfd, POLLIN, end - ifn_seconds()))
            return ifn_error_set(IFN_ERR_IO, "liveness: %d of %d ranks connected to rank 0 within %.0f s (a firewall, "
                                 "or no route between the hosts?)", got, l->n_peers, ACCEPT_SECONDS);
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        int fd = accept4(lfd, (struct sockaddr *)&a, &len, SOCK_CLOEXEC);
        if (fd < 0) continue;
        hello h;
        if (!read_full(fd, &h, sizeof h, end - ifn_seconds()) || h.rank < 1 || h.rank >= l->world ||
            l->peers[h.rank - 1].fd >= 0) {
            close(fd);
            continue;
        }
        h.host[HOST_LEN - 1] = '\0';
        peer *p = &l->peers[h.rank - 1];
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
        p->fd = fd;
        snprintf(p->host, sizeof p->host, "%s at %s", h.host, ip);
        got++;
    }
    return IFN_OK;
}

/* The connections, all ranks; false on this rank's failure. */
static ifn_status connect_all(liveness *l, comm *c)
{
    rank0_where w;
    memset(&w, 0, sizeof w);
    int lfd = -1;
    if (l->rank == 0) {
        lfd = listen_any(l->opt.interfaces, l->opt.port, &w);
        memcpy(w.host, l->host, HOST_LEN);
    }
    CHECK(comm_bcast(c, &w, sizeof w, 0));
    ifn_status s = IFN_OK;
    if (w.port == 0 || w.n_addrs == 0) {
        s = ifn_error_set(IFN_ERR_IO, "liveness: rank 0 cannot listen for heartbeats on port %d: %s",
                          l->opt.port, l->rank == 0 ? strerror(errno) : "see rank 0");
    } else if (l->rank == 0) {
        s = accept_ranks(l, lfd);
    } else {
        char ip[INET_ADDRSTRLEN] = "";
        int fd = connect_rank0(&w, ip, sizeof ip);
        hello h = { .rank = l->rank };
        memcpy(h.host, l->host, HOST_LEN);
        if (fd < 0 || send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h) {
            if (fd >= 0) close(fd);
            s = ifn_error_set(IFN_ERR_IO, "liveness: rank %d cannot reach rank 0 (host %s, port %u, %u addresses "
                              "tried)", l->rank, w.host, w.port, w.n_addrs);
        } else {
            w.host[HOST_LEN - 1] = '\0';
            l->peers[0].fd = fd;
            snprintf(l->peers[0].host, sizeof l->peers[0].host, "%s at %s", w.host, ip);
        }
    }
    if (lfd >= 0) close(lfd);
    int ok = s == IFN_OK;
    CHECK(comm_allreduce_min_int(c, &ok));
    if (!ok && s == IFN_OK) s = ifn_error_set(IFN_ERR_IO, "liveness: another rank could not connect its heartbeat");
    return s;
}

static _Noreturn void lost(liveness *l, const peer *p, const char *what)
{
    fprintf(stderr, "infernode: error (rank %d): rank %d (%s) %s: stopping\n", l->rank, p->rank, p->host, what);
    /* The lock stays held to the exit: liveness_on_lost(NULL) then waits for a handler that
     * runs, so its user data is not freed under it. */
    pthread_mutex_lock(&l->mu);
    if (l->fn) l->fn(l->user, p->rank, p->host, what);
    fflush(stderr);
    _exit(1);
}

/* Reads what a peer sent; false when its connection ended. */
static bool peer_read(peer *p, double now)
{
    char buf[256];
    for (;;) {
        ssize_t r = recv(p->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            p->last_heard = now;
            if (memchr(buf, BYE, (size_t)r)) p->bye = true;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

/* The watch thread wakes a few times a second for microseconds; where the process may (root,
 * CAP_SYS_NICE) it runs it first, so that a core kept busy by the forward pass or by other
 * programs does not delay its heartbeats. Elsewhere it keeps the normal policy. */
static void raise_priority(void)
{
    struct sched_param sp = { .sched_priority = 1 };
    (void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp); /* EPERM: stays SCHED_OTHER */
}

/* Time this thread did not run (a starved core, a paused VM) is nobody's silence: the peers
 * may have been paused with us and need their turn to be heard again. */
static void credit_pause(liveness *l, double now, double last_awake)
{
    const double gap = now - last_awake;
    if (gap > 2 * l->opt.interval + 0.1)
        for (int i = 0; i < l->n_peers; i++) l->peers[i].last_heard += gap - l->opt.interval;
}

static void *watch(void *arg)
{
    liveness *l = arg;
    const int n = l->n_peers;
    struct pollfd *fds = l->fds; /* [0]: the wake pipe; [1 + i]: peer i (-1 once closed) */
    fds[0] = (struct pollfd){ .fd = l->wake[0], .events = POLLIN };
    for (int i = 0; i < n; i++) fds[1 + i] = (struct pollfd){ .fd = l->peers[i].fd, .events = POLLIN };
    double next_beat = 0, last_awake = ifn_seconds();
    for (int i = 0; i < n; i++) l->peers[i].last_heard = last_awake;
    raise_priority();
    while (!atomic_load(&l->stop)) {
        double now = ifn_seconds();
        if (now >= next_beat) {
            for (int i = 0; i < n; i++)
                if (l->peers[i].fd >= 0) send(l->peers[i].fd, (char[]){ BEAT }, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            next_beat = now + l->opt.interval;
        }
        int ms = (int)((next_beat - now) * 1000) + 1;
        if (poll(fds, (nfds_t)(1 + n), ms) < 0 && errno != EINTR) break;
        if (atomic_load(&l->stop)) break;
        now = ifn_seconds();
        credit_pause(l, now, last_awake);
        last_awake = now;
        for (int i = 0; i < n; i++) {
            peer *p = &l->peers[i];
            if (p->fd < 0) continue;
            if (fds[1 + i].revents && !peer_read(p, now)) {
                close(p->fd);
                p->fd = fds[1 + i].fd = -1;
                if (!p->bye) lost(l, p, "closed its connection (the process ended or its host dropped it)");
                continue;
            }
            if (!p->bye && now - p->last_heard > l->opt.timeout) {
                char what[96];
                snprintf(what, sizeof what, "silent for %.1f s (a dead link or a hung host)", now - p->last_heard);
                lost(l, p, what);
            }
        }
    }
    return NULL;
}

ifn_status liveness_start(comm *c, const liveness_options *o, liveness **out)
{
    *out = NULL;
    liveness *l = calloc(1, sizeof *l);
    if (!l) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    l->rank = comm_rank(c);
    l->world = comm_world(c);
    l->opt = (liveness_options){ .interval = 0.2, .timeout = 5.0 };
    if (o && o->interval > 0) l->opt.interval = o->interval;
    if (o && o->timeout > 0) l->opt.timeout = o->timeout;
    if (o) l->opt.interfaces = o->interfaces; /* read by connect_all only, during this call */
    if (o && o->port > 0 && o->port < 65536) l->opt.port = o->port;
    l->wake[0] = l->wake[1] = -1;
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->stop, false);
    this_host(l->host);
    if (l->world == 1) {
        *out = l;
        return IFN_OK;
    }
    l->n_peers = l->rank == 0 ? l->world - 1 : 1;
    l->peers = calloc((size_t)l->n_peers, sizeof *l->peers);
    l->fds = calloc((size_t)l->n_peers + 1, sizeof *l->fds);
    ifn_status s = l->peers && l->fds ? IFN_OK : ifn_error_set(IFN_ERR_NOMEM, "no memory");
    for (int i = 0; l->peers && i < l->n_peers; i++)
        l->peers[i] = (peer){ .fd = -1, .rank = l->rank == 0 ? i + 1 : 0 };
    int ok = s == IFN_OK; /* every rank takes part in the collectives below */
    CHECK_GOTO(comm_allreduce_min_int(c, &ok), s, fail);
    if (!ok) {
        if (s == IFN_OK) s = ifn_error_set(IFN_ERR_NOMEM, "liveness: another rank is out of memory");
        goto fail;
    }
    CHECK_GOTO(connect_all(l, c), s, fail);
    for (int i = 0; i < l->n_peers; i++) set_nodelay(l->peers[i].fd);
    if (pipe2(l->wake, O_CLOEXEC) != 0 || pthread_create(&l->thread, NULL, watch, l) != 0) {
        s = ifn_error_set(IFN_ERR_INTERNAL, "liveness: cannot start the watch thread");
        goto fail;
    }
    l->running = true;
    *out = l;
    return IFN_OK;
fail:
    liveness_destroy(l);
    return s;
}

void liveness_on_lost(liveness *l, liveness_lost_fn fn, void *user)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->fn = fn;
    l->user = user;
    pthread_mutex_unlock(&l->mu);
}

const char *liveness_host(const liveness *l, int rank)
{
    if (l->rank == 0 && rank >= 1 && rank < l->world) return l->peers[rank - 1].host;
    return l->host;
}

void liveness_destroy(liveness *l)
{
    if (!l) return;
    if (l->running) {
        atomic_store(&l->stop, true);
        if (write(l->wake[1], "x", 1) < 0) { /* the thread still ends within one interval */ }
        pthread_join(l->thread, NULL);
    }
    for (int i = 0; i < l->n_peers; i++)
        if (l->peers[i].fd >= 0) {
            send(l->peers[i].fd, (char[]){ BYE }, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(l->peers[i].fd);
        }
    for (int i = 0; i < 2; i++)
        if (l->wake[i] >= 0) close(l->wake[i]);
    pthread_mutex_destroy(&l->mu);
    free(l->fds);
    free(l->peers);
    free(l);
}
