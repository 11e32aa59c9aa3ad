/* Running one untrusted program: the child's steps between fork and exec use only system
 * calls (the parent has OpenMP threads, so nothing that may take a lock); a failed step sends
 * the step and errno back over a close-on-exec pipe, which closes empty when exec succeeds. */
#define _GNU_SOURCE
#include "eval_sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"

#define PROGRAM_NAME "program.py"
#define POLL_MS 10

/* The child's setup steps, in order; a failure reports one of them. */
enum { STEP_SETPGID, STEP_NETWORK, STEP_STDIO, STEP_CHDIR, STEP_RLIMIT, STEP_CLOEXEC, STEP_EXEC };
static const char *const step_name[] = {
    "setpgid", "unshare (a network namespace of its own)", "redirecting stdin, stdout and stderr",
    "chdir to its temporary directory", "setrlimit", "marking descriptors close-on-exec", "execve",
};

/* A network namespace of its own: as root (CAP_SYS_ADMIN) directly; otherwise inside a new
 * user namespace, which unprivileged processes may create where the kernel allows it. */
static int isolate_network(void)
{
    if (unshare(CLONE_NEWNET) == 0) return 0;
    return unshare(CLONE_NEWUSER | CLONE_NEWNET);
}

/* Everything the child needs, prepared before fork. */
typedef struct {
    const sandbox_params *p;
    const char *dir;
    char *argv[4];
    char *envp[8];
    struct rlimit as, fsize, cpu, core;
    pid_t parent;
    int out_fd, status_fd;
} child_plan;

static _Noreturn void child_fail(const child_plan *c, int step)
{
    int msg[2] = { step, errno };
    (void)!write(c->status_fd, msg, sizeof msg);
    _exit(127);
}

static _Noreturn void child_run(const child_plan *c)
{
    if (setpgid(0, 0) != 0) child_fail(c, STEP_SETPGID);
    /* Dies with infernode (the parent might have died before this line). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != c->parent) _exit(127);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (!c->p->allow_network && isolate_network() != 0) child_fail(c, STEP_NETWORK);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(c->out_fd, STDOUT_FILENO) < 0 ||
        dup2(c->out_fd, STDERR_FILENO) < 0)
        child_fail(c, STEP_STDIO);
    if (chdir(c->dir) != 0) child_fail(c, STEP_CHDIR);
    if (setrlimit(RLIMIT_AS, &c->as) != 0 || setrlimit(RLIMIT_FSIZE, &c->fsize) != 0 ||
        setrlimit(RLIMIT_CPU, &c->cpu) != 0 || setrlimit(RLIMIT_CORE, &c->core) != 0)
        child_fail(c, STEP_RLIMIT);
    /* Whatever infernode has open (model files, MPI's sockets) stays out of the program. */
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0) {
        long max_fd = sysconf(_SC_OPEN_MAX);
        for (int fd = 3; fd < (max_fd > 0 && max_fd < 65536 ? max_fd : 65536); fd++)
            if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 && errno != EBADF) child_fail(c, STEP_CLOEXEC);
    }
    execve(c->argv[0], c->argv, c->envp);
    child_fail(c, STEP_EXEC);
}

ifn_status sandbox_check(const sandbox_params *p)
{
    if (access(p->python, X_OK) != 0)
        return ifn_error_set(IFN_ERR_NOT_FOUND, "--python %s: not an executable: %s", p->python, strerror(errno));
    if (p->allow_network) return IFN_OK;
    pid_t pid = fork();
    if (pid < 0) return ifn_error_set(IFN_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) _exit(isolate_network() == 0 ? 0 : errno > 0 && errno < 256 ? errno : 255);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return ifn_error_set(IFN_ERR_IO, "waitpid: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return IFN_OK;
    return ifn_error_set(IFN_ERR_UNSUPPORTED,
                         "the programs cannot be cut off from the network here: unshare(CLONE_NEWNET) and "
                         "unshare(CLONE_NEWUSER | CLONE_NEWNET) both failed (%s). Run as root or where unprivileged "
                         "user namespaces are allowed, or give --allow-network to run them with network access",
                         WIFEXITED(status) ? strerror(WEXITSTATUS(status)) : "the probe process was killed");
}

/* Keeps the last SANDBOX_OUTPUT_CAP bytes of what the program printed. */
static void keep_tail(sandbox_result *r, const char *b, size_t n)
{
    if (n >= SANDBOX_OUTPUT_CAP) {
        r->truncated |= n > SANDBOX_OUTPUT_CAP || r->output_len > 0;
        memcpy(r->output, b + n - SANDBOX_OUTPUT_CAP, SANDBOX_OUTPUT_CAP);
        r->output_len = SANDBOX_OUTPUT_CAP;
        return;
    }
    if (r->output_len + n > SANDBOX_OUTPUT_CAP) {
        size_t drop = r->output_len + n - SANDBOX_OUTPUT_CAP;
        memmove(r->output, r->output + drop, r->output_len - drop);
        r->output_len -= drop;
        r->truncated = true;
    }
    memcpy(r->output + r->output_len, b, n);
    r->output_len += n;
}

/* Reads what is there without blocking; true at end of file. */
static bool drain(int fd, sandbox_result *r)
{
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            keep_tail(r, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n == 0;
    }
}

/* Waits for the child until the deadline, reading its output meanwhile. Then kills its process
 * group (at the deadline, or whatever the program started and left running) while the leader
 * is not yet reaped, so that the group's id cannot belong to another process by then. */
static ifn_status wait_child(pid_t pid, int fd, double timeout, sandbox_result *r)
{
    const double deadline = ifn_seconds() + timeout;
    bool eof = false, timed_out = false;
    for (;;) {
        if (!eof) eof = drain(fd, r);
        siginfo_t info = { 0 };
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno != EINTR)
            return ifn_error_set(IFN_ERR_IO, "waitid: %s", strerror(errno));
        if (info.si_pid == pid) break;
        double left = deadline - ifn_seconds();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        poll(&pfd, eof ? 0 : 1, (int)fmin(POLL_MS, ceil(left * 1e3)));
    }
    killpg(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return ifn_error_set(IFN_ERR_IO, "waitpid: %s", strerror(errno));
    if (timed_out) {
        r->outcome = SANDBOX_TIMED_OUT;
    } else if (WIFEXITED(status)) {
        r->exit_status = WEXITSTATUS(status);
        r->outcome = r->exit_status == 0 ? SANDBOX_PASSED : SANDBOX_FAILED;
    } else {
        r->exit_status = WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
        r->outcome = SANDBOX_FAILED;
    }
    return IFN_OK;
}

static int unlock_dir(const char *path, const struct stat *sb, int type, struct FTW *f)
{
    if (type == FTW_D || type == FTW_DNR) chmod(path, S_IRWXU);
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *f)
{
    return remove(path) == 0 ? 0 : -1;
}

/* The directory and everything the program left in it (directories it made unreadable or
 * unwritable included). */
static ifn_status remove_dir(const char *dir)
{
    nftw(dir, unlock_dir, 16, FTW_PHYS);
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ifn_error_set(IFN_ERR_IO, "cannot remove the temporary directory %s: %s", dir, strerror(errno));
    return IFN_OK;
}

static ifn_status write_program(const char *dir, const char *program, size_t len)
{
    char path[PATH_MAX + sizeof PROGRAM_NAME + 1];
    snprintf(path, sizeof path, "%s/" PROGRAM_NAME, dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ifn_error_set(IFN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, program + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = errno;
            close(fd);
            return ifn_error_set(IFN_ERR_IO, "%s: write failed: %s", path, strerror(err));
        }
        done += (size_t)n;
    }
    if (close(fd) != 0) return ifn_error_set(IFN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return IFN_OK;
}

/* Forks the child and waits for it; dir holds the program. */
static ifn_status run_in(const sandbox_params *p, const char *dir, sandbox_result *r)
{
    char home[PATH_MAX + 8], tmp[PATH_MAX + 8];
    snprintf(home, sizeof home, "HOME=%s", dir);
    snprintf(tmp, sizeof tmp, "TMPDIR=%s", dir);
    const rlim_t cpu = (rlim_t)ceil(p->timeout) + 1;
    child_plan c = {
        .p = p, .dir = dir, .parent = getpid(),
        .argv = { (char *)p->python, "-I", PROGRAM_NAME, NULL },
        /* One thread for numerical libraries: the limits are per program, not per core. */
        .envp = { "PATH=/usr/local/bin:/usr/bin:/bin", home, tmp, "LANG=C.UTF-8", "OMP_NUM_THREADS=1",
                  "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1", NULL },
        .as = { SANDBOX_ADDRESS_SPACE, SANDBOX_ADDRESS_SPACE },
        .fsize = { SANDBOX_FILE_SIZE, SANDBOX_FILE_SIZE },
        .cpu = { cpu, cpu + 1 },
        .core = { 0, 0 },
    };
    int out[2], st[2];
    if (pipe2(out, O_CLOEXEC) != 0) return ifn_error_set(IFN_ERR_IO, "pipe: %s", strerror(errno));
    if (pipe2(st, O_CLOEXEC) != 0) {
        int err = errno;
        close(out[0]);
        close(out[1]);
        return ifn_error_set(IFN_ERR_IO, "pipe: %s", strerror(err));
    }
    c.out_fd = out[1];
    c.status_fd = st[1];
    pid_t pid = fork();
    if (pid == 0) child_run(&c);
    int fork_err = errno;
    close(out[1]);
    close(st[1]);
    ifn_status s = IFN_OK;
    if (pid < 0) {
        s = ifn_error_set(IFN_ERR_IO, "fork: %s", strerror(fork_err));
    } else {
        setpgid(pid, pid); /* also here, so that a kill at once reaches the group */
        int msg[2];
        ssize_t n;
        while ((n = read(st[0], msg, sizeof msg)) < 0 && errno == EINTR) {}
        if (n == (ssize_t)sizeof msg) {
            waitpid(pid, NULL, 0);
            s = ifn_error_set(IFN_ERR_IO, "cannot start %s for a program: %s failed: %s", p->python,
                              step_name[msg[0]], strerror(msg[1]));
        } else {
            fcntl(out[0], F_SETFL, O_NONBLOCK);
            s = wait_child(pid, out[0], p->timeout, r);
            drain(out[0], r); /* what came before the group was killed */
        }
    }
    close(out[0]);
    close(st[0]);
    return s;
}

ifn_status sandbox_run(const sandbox_params *p, const char *program, size_t len, sandbox_result *out)
{
    memset(out, 0, sizeof *out);
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/infernode-eval-XXXXXX", base) >= sizeof dir)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "TMPDIR %s is too long", base);
    if (!mkdtemp(dir)) return ifn_error_set(IFN_ERR_IO, "cannot create a temporary directory in %s: %s", base, strerror(errno));
    ifn_status s = write_program(dir, program, len);
    if (s == IFN_OK) s = run_in(p, dir, out);
    ifn_status r = remove_dir(dir);
    out->output[out->output_len] = '\0';
    return s != IFN_OK ? s : r;
}
