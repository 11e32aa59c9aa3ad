/* Notes: how a sample is confined, and why this way.
 *
 * Tool. bubblewrap (Debian's bubblewrap, /usr/bin/bwrap, the sandbox under Flatpak) makes the
 * namespaces and the mounts. That is some hundreds of lines of clone, uid_map, pivot_root and
 * mount code in which every mistake is an escape, and which bubblewrap has had reviewed and
 * hardened for years; running it unprivileged also keeps every privileged step out of our
 * process. What bubblewrap does not do is done here: the uid it starts as, the seccomp filter
 * (built with libseccomp in eval_seccomp.c, handed over as BPF in a memfd: --seccomp, which
 * bwrap loads into PID 1 and into the program just before exec, with no_new_privs), the task
 * limit, the kill at the time limit and the wait until every process is gone. Not chosen:
 * nsjail (not in Debian 12), firejail (setuid, with a large profile language to get right),
 * systemd-run (needs a running systemd, which containers lack).
 *
 * Uid. bwrap maps the sandbox's uid onto the uid that starts it. Started by root, the sample
 * would be root outside for file permissions (/etc/shadow belongs to root) and exempt from
 * RLIMIT_NPROC, so a root evaluator's child becomes SANDBOX_UID with no supplementary groups
 * before it execs bwrap. Inside, the program is uid and gid 1000 without capabilities, and
 * cannot make further user namespaces (--disable-userns, and the filter). Started by another
 * user (unprivileged user namespaces needed), the sample has that user's file permissions,
 * supplementary groups included, on the read-only view below.
 *
 * View. /usr and /etc read-only; /bin, /sbin and /lib* as the symlinks into /usr they are on
 * Debian (read-only binds where they are directories); the interpreter's prefix read-only when
 * outside those; a /proc of the sample's PID namespace; a minimal /dev, made read-only; a
 * tmpfs of SANDBOX_DISK bytes at /tmp, the only writable place (working directory, HOME,
 * TMPDIR, program.py); the sandbox's own root made read-only last. Absent: /home, /root, /run,
 * /var, /sys and the host's /tmp, so no socket file and no file of the evaluator. Abstract
 * sockets and ports belong to the network namespace, which is new (loopback only).
 *
 * Tasks. Since Linux 5.14 RLIMIT_NPROC counts tasks per (user namespace, uid), so a limit set
 * inside the sample's own user namespace counts that sample alone. Set before bwrap starts, it
 * would also count at the outer uid, which other processes share; so bwrap stops at the end of
 * its setup (--block-fd), in the sandbox's PID 1 before any code of the sample exists; its pid
 * came on --info-fd; we pin it with a pidfd, prlimit() it, then let it go on. The program and
 * all its descendants inherit the limit.
 *
 * The end. The sandbox's PID 1 is bwrap's init: when it dies the kernel kills every process of
 * the PID namespace, and setsid(), double forks or signals do not get out of that. bwrap exits
 * as soon as the program's main process ends, while daemons it started may still run; so at
 * the time limit and after a normal end alike, PID 1 is killed through its pidfd, and the
 * pidfd awaited: it becomes readable only once the namespace is empty. --die-with-parent kills
 * the sandbox if the evaluator itself dies. The sample cannot signal the evaluator: no pid
 * outside its namespace is visible to it, and its uid differs. What it can reach is bwrap's
 * PID 1 (same uid: its /proc/1/mem), which holds nothing of ours and has the same filter and
 * no capabilities. One window is left: should the evaluator die by SIGKILL between bwrap's
 * start and the release (milliseconds), PID 1 reads end of file, loses its parent before it
 * arms --die-with-parent and runs the program without the task limit or a time limit; it is
 * still confined otherwise. SIGINT and SIGTERM are caught by the caller (p->stop), not fatal.
 *
 * Memory. RLIMIT_AS bounds each process and SANDBOX_TASKS their number; oom_score_adj 1000
 * makes the kernel's OOM killer choose the sample's processes before the evaluator. The tmpfs's
 * size bounds all the files together; RLIMIT_FSIZE each one.
 *
 * Refusal. A namespace the kernel refuses makes bwrap fail, which sandbox_check reports.
 * Nothing runs unconfined unless the caller asked for unsafe_no_sandbox, which keeps only the
 * limits, a temporary directory on the host and a process group.
 *
 * Between fork and exec the child uses only system calls (the parent has OpenMP threads, so
 * nothing that may take a lock); a failed step sends the step and errno back over a
 * close-on-exec pipe, which closes empty when exec succeeds. */
#define _GNU_SOURCE
#include "eval_sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "eval_seccomp.h"
#include "json.h"

#define BWRAP "/usr/bin/bwrap"
#define BOX_DIR "/tmp"
#define PROGRAM_NAME "program.py"
#define BOX_ID "1000" /* uid and gid inside */
#define POLL_MS 10
#define SETUP_SECONDS 30.0 /* bwrap's setup, before the time limit starts */
#define END_SECONDS 30.0   /* for the killed processes to be gone */
#define MAX_ARGS 128
#define STR_(x) #x
#define STR(x) STR_(x)

/* The descriptors bwrap's arguments name, as the child arranges them. */
#define FD_INFO 3
#define FD_BLOCK 4
#define FD_SECCOMP 5
#define FD_PROGRAM 6
#define N_PASS 4

/* Directories outside /usr that the interpreter and its libraries may come from. */
static const char *const system_dirs[] = { "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32" };
#define N_SYSTEM_DIRS (sizeof system_dirs / sizeof system_dirs[0])

/* One thread for numerical libraries: the limits are per program, not per core. */
static const char *const box_env[][2] = {
    { "PATH", "/usr/local/bin:/usr/bin:/bin" }, { "LANG", "C.UTF-8" }, { "OMP_NUM_THREADS", "1" },
    { "OPENBLAS_NUM_THREADS", "1" }, { "MKL_NUM_THREADS", "1" },
};
#define N_BOX_ENV (sizeof box_env / sizeof box_env[0])

/* The child's setup steps, in order; a failure reports one of them. */
enum { STEP_SETPGID, STEP_STDIO, STEP_FDS, STEP_OOM, STEP_USER, STEP_CHDIR, STEP_RLIMIT, STEP_CLOEXEC, STEP_EXEC };
static const char *const step_name[] = {
    "setpgid", "redirecting stdin, stdout and stderr", "passing descriptors to bwrap",
    "writing /proc/self/oom_score_adj", "changing to uid " STR(SANDBOX_UID), "chdir", "setrlimit",
    "marking descriptors close-on-exec", "execve",
};

/* Everything the child needs, prepared before fork. */
typedef struct {
    char *argv[MAX_ARGS];
    int argc;
    char *envp[N_BOX_ENV + 3];
    char links[N_SYSTEM_DIRS][PATH_MAX];  /* targets of the system directories that are symlinks */
    char prefixes[2][PATH_MAX];           /* the interpreter's, bound when outside the system */
    char home[PATH_MAX + 8], tmp[PATH_MAX + 8];
    char env[N_BOX_ENV][64]; /* NAME=value */
    char disk[24];           /* SANDBOX_DISK in decimal */
    const char *dir;                      /* the working directory before exec */
    struct rlimit as, fsize, cpu, core;
    bool drop_root;
    pid_t parent;
    int out_fd, status_fd;
    int pass[N_PASS]; /* become FD_INFO.. in the child; -1: none */
} child_plan;

static _Noreturn void child_fail(const child_plan *c, int step)
{
    int msg[2] = { step, errno };
    (void)!write(c->status_fd, msg, sizeof msg);
    _exit(127);
}

/* Puts the descriptors for bwrap at FD_INFO.., by way of copies above them all, so that no
 * dup2 overwrites one still to be moved. The status pipe moves up out of their way too. */
static int pass_fds(child_plan *c)
{
    int high[N_PASS];
    if ((c->status_fd = fcntl(c->status_fd, F_DUPFD_CLOEXEC, 16)) < 0) return -1;
    for (int i = 0; i < N_PASS; i++)
        if (c->pass[i] >= 0 && (high[i] = fcntl(c->pass[i], F_DUPFD_CLOEXEC, 16)) < 0) return -1;
    for (int i = 0; i < N_PASS; i++)
        if (c->pass[i] >= 0 && dup2(high[i], FD_INFO + i) < 0) return -1;
    return 0;
}

static int become_unprivileged(void)
{
    gid_t g = SANDBOX_GID;
    uid_t u = SANDBOX_UID;
    if (setgroups(0, NULL) != 0 || setresgid(g, g, g) != 0 || setresuid(u, u, u) != 0) return -1;
    return 0;
}

static _Noreturn void child_run(child_plan *c)
{
    if (setpgid(0, 0) != 0) child_fail(c, STEP_SETPGID);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(c->out_fd, STDOUT_FILENO) < 0 ||
        dup2(c->out_fd, STDERR_FILENO) < 0)
        child_fail(c, STEP_STDIO);
    if (pass_fds(c) != 0) child_fail(c, STEP_FDS);
    /* Before the uid changes: that makes /proc/self root's. */
    int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom < 0 || write(oom, "1000", 4) != 4) child_fail(c, STEP_OOM);
    close(oom);
    if (c->drop_root && become_unprivileged() != 0) child_fail(c, STEP_USER);
    /* Dies with infernode (the parent might have died before this line). After the uid change,
     * which clears it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != c->parent) _exit(127);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (chdir(c->dir) != 0) child_fail(c, STEP_CHDIR);
    if (setrlimit(RLIMIT_AS, &c->as) != 0 || setrlimit(RLIMIT_FSIZE, &c->fsize) != 0 ||
        setrlimit(RLIMIT_CPU, &c->cpu) != 0 || setrlimit(RLIMIT_CORE, &c->core) != 0)
        child_fail(c, STEP_RLIMIT);
    /* Whatever infernode has open (model files, MPI's sockets) stays out of the program. */
    const unsigned first = c->pass[0] >= 0 ? FD_INFO + N_PASS : STDERR_FILENO + 1;
    if (close_range(first, ~0u, CLOSE_RANGE_CLOEXEC) != 0) child_fail(c, STEP_CLOEXEC);
    execve(c->argv[0], c->argv, c->envp);
    child_fail(c, STEP_EXEC);
}

/* ---------------------------------------------------------------- the plan */

static void add(child_plan *c, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        char *a = va_arg(ap, char *);
        if (c->argc < MAX_ARGS - 1) c->argv[c->argc++] = a;
    }
    va_end(ap);
}

static bool in_system(const char *path)
{
    static const char *const roots[] = { "/usr/", "/etc/" };
    for (size_t i = 0; i < 2; i++)
        if (strncmp(path, roots[i], strlen(roots[i])) == 0) return true;
    for (size_t i = 0; i < N_SYSTEM_DIRS; i++) {
        size_t n = strlen(system_dirs[i]);
        if (strncmp(path, system_dirs[i], n) == 0 && path[n] == '/') return true;
    }
    return false;
}

/* An interpreter outside the system directories (a virtual environment, /opt/python) brings
 * its prefix, two levels up from it: PREFIX/bin/python3. */
static ifn_status add_interpreter(child_plan *c, const char *path, int slot)
{
    if (in_system(path)) return IFN_OK;
    char *pre = c->prefixes[slot];
    snprintf(pre, PATH_MAX, "%s", path);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(pre, '/');
        if (!slash || slash == pre)
            return ifn_error_set(IFN_ERR_UNSUPPORTED, "--python %s: the sandbox shows an interpreter outside /usr "
                                 "only with its prefix (PREFIX/bin/python), which %s does not have", path, path);
        *slash = '\0';
    }
    if (slot == 1 && strcmp(pre, c->prefixes[0]) == 0) return IFN_OK;
    add(c, 3, "--ro-bind", pre, pre);
    return IFN_OK;
}

static ifn_status add_view(child_plan *c, const sandbox_params *p)
{
    add(c, 6, "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc");
    for (size_t i = 0; i < N_SYSTEM_DIRS; i++) {
        struct stat st;
        if (lstat(system_dirs[i], &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            add(c, 3, "--ro-bind", system_dirs[i], system_dirs[i]);
        } else if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(system_dirs[i], c->links[i], PATH_MAX - 1);
            if (n <= 0) return ifn_error_set(IFN_ERR_IO, "readlink %s: %s", system_dirs[i], strerror(errno));
            c->links[i][n] = '\0';
            add(c, 3, "--symlink", c->links[i], system_dirs[i]);
        }
    }
    char real[PATH_MAX];
    if (p->python[0] != '/')
        return ifn_error_set(IFN_ERR_INVALID_ARG, "--python %s: give the interpreter's absolute path (the sandbox "
                             "shows it at that path)", p->python);
    if (!realpath(p->python, real)) return ifn_error_set(IFN_ERR_NOT_FOUND, "--python %s: %s", p->python, strerror(errno));
    snprintf(c->disk, sizeof c->disk, "%llu", SANDBOX_DISK);
    add(c, 8, "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--size", c->disk);
    add(c, 7, "--tmpfs", BOX_DIR, "--perms", "0644", "--file", STR(FD_PROGRAM), BOX_DIR "/" PROGRAM_NAME);
    /* After the tmpfs, which would hide an interpreter under /tmp. */
    CHECK(add_interpreter(c, p->python, 0));
    CHECK(add_interpreter(c, real, 1));
    add(c, 2, "--remount-ro", "/");
    return IFN_OK;
}

/* bwrap's command line: namespaces, view, environment, the descriptors, the program. */
static ifn_status plan_sandbox(child_plan *c, const sandbox_params *p)
{
    add(c, 6, BWRAP, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try");
    if (!p->allow_network) add(c, 1, "--unshare-net");
    add(c, 8, "--disable-userns", "--die-with-parent", "--new-session", "--uid", BOX_ID, "--gid", BOX_ID, "--hostname");
    add(c, 1, "sandbox");
    CHECK(add_view(c, p));
    add(c, 8, "--chdir", BOX_DIR, "--clearenv", "--setenv", "HOME", BOX_DIR, "--setenv", "TMPDIR");
    add(c, 1, BOX_DIR);
    for (size_t i = 0; i < N_BOX_ENV; i++) add(c, 3, "--setenv", box_env[i][0], box_env[i][1]);
    add(c, 6, "--info-fd", STR(FD_INFO), "--block-fd", STR(FD_BLOCK), "--seccomp", STR(FD_SECCOMP));
    add(c, 4, "--", (char *)p->python, "-I", PROGRAM_NAME);
    if (c->argc >= MAX_ARGS - 1) return ifn_error_set(IFN_ERR_INTERNAL, "bwrap's command line is longer than %d", MAX_ARGS);
    c->envp[0] = "PATH=/usr/bin:/bin";
    c->dir = "/";
    c->drop_root = geteuid() == 0;
    return IFN_OK;
}

/* The interpreter itself, in dir on the host. */
static void plan_unsafe(child_plan *c, const sandbox_params *p, const char *dir)
{
    add(c, 3, (char *)p->python, "-I", PROGRAM_NAME);
    snprintf(c->home, sizeof c->home, "HOME=%s", dir);
    snprintf(c->tmp, sizeof c->tmp, "TMPDIR=%s", dir);
    c->envp[0] = c->home;
    c->envp[1] = c->tmp;
    for (size_t i = 0; i < N_BOX_ENV; i++) {
        snprintf(c->env[i], sizeof c->env[i], "%s=%s", box_env[i][0], box_env[i][1]);
        c->envp[2 + i] = c->env[i];
    }
    c->dir = dir;
}

static void plan_limits(child_plan *c, const sandbox_params *p)
{
    const rlim_t cpu = (rlim_t)ceil(p->timeout) + 1;
    c->as = (struct rlimit){ SANDBOX_ADDRESS_SPACE, SANDBOX_ADDRESS_SPACE };
    c->fsize = (struct rlimit){ SANDBOX_FILE_SIZE, SANDBOX_FILE_SIZE };
    c->cpu = (struct rlimit){ cpu, cpu + 1 };
    c->core = (struct rlimit){ 0, 0 };
    c->parent = getpid();
    for (int i = 0; i < N_PASS; i++) c->pass[i] = -1;
}

/* ---------------------------------------------------------------- running it */

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

/* The last line of what bwrap (or the program) printed, for an error message. */
static const char *last_line(sandbox_result *r)
{
    r->output[r->output_len] = '\0';
    char *end = r->output + r->output_len;
    while (end > r->output && (end[-1] == '\n' || end[-1] == ' ')) *--end = '\0';
    char *start = end;
    while (start > r->output && start[-1] != '\n') start--;
    return *start ? start : "(nothing printed)";
}

static bool exited(pid_t pid)
{
    siginfo_t info = { 0 };
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

static int reap(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return status;
}

/* Forks the child; an error is a step of its setup that failed (it is reaped then). */
static ifn_status spawn(child_plan *c, const char *what, pid_t *pid)
{
    int st[2];
    if (pipe2(st, O_CLOEXEC) != 0) return ifn_error_set(IFN_ERR_IO, "pipe: %s", strerror(errno));
    c->status_fd = st[1];
    *pid = fork();
    if (*pid == 0) child_run(c);
    int fork_err = errno;
    close(st[1]);
    ifn_status s = IFN_OK;
    if (*pid < 0) {
        s = ifn_error_set(IFN_ERR_IO, "fork: %s", strerror(fork_err));
    } else {
        setpgid(*pid, *pid); /* also here, so that a kill at once reaches the group */
        int msg[2];
        ssize_t n;
        while ((n = read(st[0], msg, sizeof msg)) < 0 && errno == EINTR) {}
        if (n == (ssize_t)sizeof msg) {
            reap(*pid);
            s = ifn_error_set(IFN_ERR_IO, "cannot start %s for a program: %s failed: %s", what, step_name[msg[0]],
                              strerror(msg[1]));
        }
    }
    close(st[0]);
    return s;
}

/* bwrap's --info-fd: a JSON object with "child-pid", the pid of the sandbox's PID 1, written
 * before the sandbox is set up; end of file without it means bwrap failed first. */
static ifn_status read_info(int fd, pid_t *init)
{
    char buf[4096];
    size_t len = 0;
    const double deadline = ifn_seconds() + SETUP_SECONDS;
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        double left = deadline - ifn_seconds();
        if (left <= 0) return ifn_error_set(IFN_ERR_IO, "bwrap gave no pid within %g s", SETUP_SECONDS);
        if (poll(&pfd, 1, (int)ceil(left * 1e3)) < 0 && errno != EINTR)
            return ifn_error_set(IFN_ERR_IO, "poll: %s", strerror(errno));
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof buf - 1) break;
    }
    json_value *v;
    int64_t pid;
    if (len == 0 || json_parse(buf, len, "bwrap --info-fd", &v) != IFN_OK) return IFN_ERR_IO;
    bool ok = json_integer(json_get(v, "child-pid"), 2, INT_MAX, &pid);
    json_free(v);
    if (!ok) return ifn_error_set(IFN_ERR_IO, "bwrap --info-fd: no \"child-pid\" in %.*s", (int)len, buf);
    *init = (pid_t)pid;
    return IFN_OK;
}

/* The parent of pid, from /proc; 0 if it is gone. */
static pid_t parent_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *pp = strstr(buf, "\nPPid:");
    return pp ? (pid_t)strtol(pp + 6, NULL, 10) : 0;
}

/* prlimit() on another process needs CAP_SYS_RESOURCE or its uid and gid. A root evaluator may
 * lack the capability (container runtimes drop it), so a child of ours takes the sandbox's uid
 * to do it. */
static ifn_status limit_tasks(pid_t init)
{
    const struct rlimit tasks = { SANDBOX_TASKS, SANDBOX_TASKS };
    int err = 0;
    if (geteuid() != 0) {
        err = prlimit(init, RLIMIT_NPROC, &tasks, NULL) == 0 ? 0 : errno;
    } else {
        pid_t pid = fork();
        if (pid == 0) _exit(become_unprivileged() == 0 && prlimit(init, RLIMIT_NPROC, &tasks, NULL) == 0 ? 0 : errno);
        if (pid < 0) return ifn_error_set(IFN_ERR_IO, "fork: %s", strerror(errno));
        int status = reap(pid);
        err = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
    }
    if (err) return ifn_error_set(IFN_ERR_IO, "prlimit(RLIMIT_NPROC) on the sandbox's PID 1: %s", strerror(err));
    return IFN_OK;
}

/* Pins the sandbox's PID 1 with a pidfd (checked to be bwrap's child: a pid read from the info
 * could have been reused had PID 1 died in its setup) and gives it the task limit. */
static ifn_status adopt_init(pid_t bwrap, pid_t init, int *init_fd)
{
    *init_fd = pidfd_open(init, 0);
    if (*init_fd < 0) return ifn_error_set(IFN_ERR_IO, "the sandbox's PID 1 (%d) is gone: %s", (int)init, strerror(errno));
    if (parent_of(init) != bwrap) {
        close(*init_fd);
        *init_fd = -1;
        return ifn_error_set(IFN_ERR_IO, "the sandbox's PID 1 (%d) is gone", (int)init);
    }
    return limit_tasks(init);
}

static bool stopped(const sandbox_params *p)
{
    return p->stop && *p->stop;
}

/* Waits for our child until the deadline, reading the output meanwhile; *ended if it ended.
 * A stop request ends the wait (IFN_ERR_CANCELLED). */
static ifn_status wait_until(const sandbox_params *p, pid_t pid, int fd, sandbox_result *r, bool *ended)
{
    const double deadline = ifn_seconds() + p->timeout;
    bool eof = false;
    *ended = false;
    for (;;) {
        if (!eof) eof = drain(fd, r);
        if (exited(pid)) {
            *ended = true;
            return IFN_OK;
        }
        if (stopped(p)) return ifn_error_set(IFN_ERR_CANCELLED, "stopped by a signal");
        double left = deadline - ifn_seconds();
        if (left <= 0) return IFN_OK;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, eof ? 0 : 1, (int)fmin(POLL_MS, ceil(left * 1e3))) < 0 && errno != EINTR)
            return ifn_error_set(IFN_ERR_IO, "poll: %s", strerror(errno));
    }
}

/* Kills the sandbox's PID 1, so the kernel kills all of the sample, and waits until its pidfd
 * says the namespace is empty; then bwrap, already gone or going, is reaped. */
static ifn_status end_sandbox(pid_t bwrap, int init_fd, int *status)
{
    ifn_status s = IFN_OK;
    if (init_fd >= 0) {
        pidfd_send_signal(init_fd, SIGKILL, NULL, 0);
        struct pollfd pfd = { .fd = init_fd, .events = POLLIN };
        int n;
        const double deadline = ifn_seconds() + END_SECONDS;
        while ((n = poll(&pfd, 1, (int)ceil(fmax(0, deadline - ifn_seconds()) * 1e3))) < 0 && errno == EINTR) {}
        if (n <= 0)
            s = ifn_error_set(IFN_ERR_IO, "the sample's processes were still there %g s after SIGKILL", END_SECONDS);
    }
    kill(bwrap, SIGKILL); /* unreaped, so the pid is still bwrap's */
    *status = reap(bwrap);
    return s;
}

/* status: of bwrap when sandboxed (a signal reported as 128 + N), else of the interpreter. */
static void set_outcome(sandbox_result *r, bool ended, int status, bool sandboxed)
{
    if (!ended) {
        r->outcome = SANDBOX_TIMED_OUT;
        return;
    }
    if (WIFEXITED(status)) {
        r->exit_status = WEXITSTATUS(status);
        if (sandboxed && r->exit_status > 128 && r->exit_status < 128 + NSIG) r->exit_status = 128 - r->exit_status;
    } else {
        r->exit_status = WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
    }
    r->outcome = r->exit_status == 0 ? SANDBOX_PASSED : SANDBOX_FAILED;
}

static ifn_status memfd_with(const char *name, const char *data, size_t len, int *fd)
{
    *fd = memfd_create(name, MFD_CLOEXEC);
    if (*fd < 0) return ifn_error_set(IFN_ERR_IO, "memfd_create: %s", strerror(errno));
    for (size_t done = 0; done < len;) {
        ssize_t n = write(*fd, data + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return ifn_error_set(IFN_ERR_IO, "writing the program to a memfd: %s", strerror(errno));
        done += (size_t)n;
    }
    return IFN_OK;
}

/* The descriptors of one sandboxed run; -1 when not open. */
typedef struct {
    int program, filter, out[2], info[2], block[2], init;
} box_fds;

static ifn_status open_fds(const sandbox_params *p, const char *program, size_t len, box_fds *f)
{
    CHECK(memfd_with("infernode-program", program, len, &f->program));
    CHECK(memfd_with("infernode-seccomp", "", 0, &f->filter));
    CHECK(sandbox_filter_write(p->allow_network, f->filter));
    if (lseek(f->program, 0, SEEK_SET) != 0 || lseek(f->filter, 0, SEEK_SET) != 0)
        return ifn_error_set(IFN_ERR_IO, "lseek on a memfd: %s", strerror(errno));
    if (pipe2(f->out, O_CLOEXEC) != 0 || pipe2(f->info, O_CLOEXEC) != 0 || pipe2(f->block, O_CLOEXEC) != 0)
        return ifn_error_set(IFN_ERR_IO, "pipe: %s", strerror(errno));
    return IFN_OK;
}

static void close_fds(box_fds *f)
{
    int *all[] = { &f->program, &f->filter, &f->out[0], &f->out[1], &f->info[0], &f->info[1], &f->block[0],
                   &f->block[1], &f->init };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i] >= 0) {
            close(*all[i]);
            *all[i] = -1;
        }
}

/* From bwrap's start to the release of the program: the pid of PID 1, its pidfd and task
 * limit, then the byte on --block-fd. The parent keeps the pipe's read end too, so that the
 * write cannot fail, and so that a byte still in it at the end shows that PID 1 never got
 * as far as reading it: its setup failed. */
static ifn_status release(pid_t bwrap, box_fds *f)
{
    pid_t init = 0;
    CHECK(read_info(f->info[0], &init));
    CHECK(adopt_init(bwrap, init, &f->init));
    if (write(f->block[1], "x", 1) != 1) return ifn_error_set(IFN_ERR_IO, "write: %s", strerror(errno));
    return IFN_OK;
}

/* A failed setup, with bwrap's own message (the last line it printed). */
static ifn_status setup_failed(sandbox_result *r)
{
    char why[512];
    snprintf(why, sizeof why, "%s", ifn_error_detail());
    ifn_error_clear();
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "the sandbox could not be set up: %s%s%s%s", last_line(r),
                         *why ? " (" : "", why, *why ? ")" : "");
}

/* bwrap is running: release the program, wait, end, and tell what happened. */
static ifn_status supervise(const sandbox_params *p, pid_t pid, box_fds *f, sandbox_result *r)
{
    bool ended = false;
    int status = 0, queued = 0;
    ifn_status s = IFN_OK, setup = release(pid, f);
    if (setup == IFN_OK) s = wait_until(p, pid, f->out[0], r, &ended);
    ifn_status e = end_sandbox(pid, f->init, &status);
    drain(f->out[0], r); /* what came before the end */
    if (s == IFN_OK) s = e;
    if (setup == IFN_OK && s == IFN_OK && ended && ioctl(f->block[0], FIONREAD, &queued) == 0 && queued > 0)
        setup = IFN_ERR_UNSUPPORTED;
    if (setup != IFN_OK) return setup_failed(r);
    if (s == IFN_OK) set_outcome(r, ended, status, true);
    return s;
}

static ifn_status run_sandboxed(const sandbox_params *p, const char *program, size_t len, sandbox_result *r)
{
    box_fds f = { -1, -1, { -1, -1 }, { -1, -1 }, { -1, -1 }, -1 };
    child_plan *c = calloc(1, sizeof *c);
    if (!c) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the sandbox's plan");
    plan_limits(c, p);
    ifn_status s = open_fds(p, program, len, &f);
    if (s == IFN_OK) s = plan_sandbox(c, p);
    pid_t pid = -1;
    if (s == IFN_OK) {
        c->out_fd = f.out[1];
        const int pass[N_PASS] = { f.info[1], f.block[0], f.filter, f.program };
        memcpy(c->pass, pass, sizeof pass);
        s = spawn(c, BWRAP, &pid);
    }
    free(c);
    if (s == IFN_OK) {
        /* Only bwrap holds these now: end of file on info and output once it is done. */
        close(f.out[1]);
        close(f.info[1]);
        f.out[1] = f.info[1] = -1;
        fcntl(f.out[0], F_SETFL, O_NONBLOCK);
        s = supervise(p, pid, &f, r);
    }
    close_fds(&f);
    return s;
}

/* ---------------------------------------------------------------- unsafe: no sandbox */

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
    for (size_t done = 0; done < len;) {
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

/* The interpreter in its process group, in dir; the group is killed at the end while the
 * interpreter is not yet reaped, so that the group's id cannot belong to another process. */
static ifn_status run_in(const sandbox_params *p, const char *dir, sandbox_result *r)
{
    child_plan *c = calloc(1, sizeof *c);
    int out[2];
    if (!c) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the program's plan");
    plan_limits(c, p);
    plan_unsafe(c, p, dir);
    if (pipe2(out, O_CLOEXEC) != 0) {
        free(c);
        return ifn_error_set(IFN_ERR_IO, "pipe: %s", strerror(errno));
    }
    c->out_fd = out[1];
    pid_t pid;
    ifn_status s = spawn(c, p->python, &pid);
    free(c);
    close(out[1]);
    if (s == IFN_OK) {
        bool ended = false;
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        s = wait_until(p, pid, out[0], r, &ended);
        killpg(pid, SIGKILL);
        int status = reap(pid);
        drain(out[0], r);
        if (s == IFN_OK) set_outcome(r, ended, status, false);
    }
    close(out[0]);
    return s;
}

static ifn_status run_unsafe(const sandbox_params *p, const char *program, size_t len, sandbox_result *r)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/infernode-eval-XXXXXX", base) >= sizeof dir)
        return ifn_error_set(IFN_ERR_INVALID_ARG, "TMPDIR %s is too long", base);
    if (!mkdtemp(dir)) return ifn_error_set(IFN_ERR_IO, "cannot create a temporary directory in %s: %s", base, strerror(errno));
    ifn_status s = write_program(dir, program, len);
    if (s == IFN_OK) s = run_in(p, dir, r);
    ifn_status e = remove_dir(dir);
    return s != IFN_OK ? s : e;
}

/* ---------------------------------------------------------------- API */

ifn_status sandbox_run(const sandbox_params *p, const char *program, size_t len, sandbox_result *out)
{
    memset(out, 0, sizeof *out);
    if (stopped(p)) return ifn_error_set(IFN_ERR_CANCELLED, "stopped by a signal");
    ifn_status s = p->unsafe_no_sandbox ? run_unsafe(p, program, len, out) : run_sandboxed(p, program, len, out);
    for (size_t i = 0; i < out->output_len; i++)
        if (out->output[i] == '\0') out->output[i] = '?'; /* readers take it as a C string */
    out->output[out->output_len] = '\0';
    return s;
}

ifn_status sandbox_check(const sandbox_params *p)
{
    if (access(p->python, X_OK) != 0)
        return ifn_error_set(IFN_ERR_NOT_FOUND, "--python %s: not an executable: %s", p->python, strerror(errno));
    if (p->unsafe_no_sandbox) return IFN_OK;
    static const char advice[] = "Give --unsafe-no-sandbox to run the programs unconfined, at your own risk";
    if (access(BWRAP, X_OK) != 0)
        return ifn_error_set(IFN_ERR_UNSUPPORTED, "the programs run in a sandbox made by bubblewrap, and %s is missing "
                             "(apt-get install bubblewrap). %s", BWRAP, advice);
    static const char probe[] = "import sys\n";
    sandbox_result *r = malloc(sizeof *r);
    if (!r) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the sandbox's check");
    ifn_status s = sandbox_run(p, probe, sizeof probe - 1, r);
    if (s == IFN_OK && r->outcome != SANDBOX_PASSED)
        s = ifn_error_set(IFN_ERR_UNSUPPORTED, "a trivial program failed in the sandbox: %s", last_line(r));
    free(r);
    if (s == IFN_OK) return IFN_OK;
    if (s == IFN_ERR_CANCELLED) return s;
    char why[1024];
    snprintf(why, sizeof why, "%s", ifn_error_detail());
    ifn_error_clear();
    size_t n = strlen(why);
    if (n > 0 && why[n - 1] == '.') why[n - 1] = '\0';
    return ifn_error_set(IFN_ERR_UNSUPPORTED, "%s. %s", why, advice);
}
