/* Runs an untrusted Python program for 'infernode eval humaneval' in a sandbox made by
 * bubblewrap (eval_sandbox.c says how and why): new user, mount, PID, IPC, UTS and network
 * namespaces, an unprivileged uid, a read-only view of the system, a size-limited tmpfs as its
 * only writable directory (program.py in it, the working directory, HOME and TMPDIR), a /proc
 * of its own, the system-call filter of eval_seccomp.h, resource limits (address space and
 * file size per process, CPU time, no core files, a number of tasks per sample), stdin from
 * /dev/null, stdout and stderr captured (the last SANDBOX_OUTPUT_CAP bytes kept), and a
 * wall-clock limit at which the sandbox's PID 1 is killed, which kills every process of the
 * sample. Nothing is left on the host's disks afterwards. */
#ifndef IFN_EVAL_SANDBOX_H
#define IFN_EVAL_SANDBOX_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define SANDBOX_OUTPUT_CAP 4096
#define SANDBOX_ADDRESS_SPACE (2ull << 30) /* bytes, per process */
#define SANDBOX_FILE_SIZE (16ull << 20)    /* bytes, per file written */
#define SANDBOX_DISK (64ull << 20)         /* bytes, the tmpfs: all files written, together */
#define SANDBOX_TASKS 32                   /* processes and threads of one sample, its PID 1 included */
#define SANDBOX_UID 65534                  /* nobody: the uid a root evaluator runs samples as */
#define SANDBOX_GID 65534                  /* nogroup */

typedef struct {
    const char *python;     /* the interpreter, run as `python -I program.py` */
    double timeout;         /* wall-clock seconds; CPU time is limited to this + 1 */
    bool allow_network;     /* share the evaluator's network namespace; sockets of any family */
    bool unsafe_no_sandbox; /* no namespaces, no filter, no uid change: only the limits, a
                             * temporary directory on the host and a process group killed at the
                             * time limit (which the program can leave); for machines where
                             * the sandbox cannot be made, at the caller's explicit risk */
    /* NULL, or a flag a signal handler sets: once it is non-zero, a program starting or running
     * is ended (all its processes) and sandbox_run returns IFN_ERR_CANCELLED. */
    const volatile sig_atomic_t *stop;
} sandbox_params;

typedef enum {
    SANDBOX_PASSED,    /* exit status 0 */
    SANDBOX_FAILED,    /* another exit status or a signal */
    SANDBOX_TIMED_OUT, /* still running at the time limit: all its processes were killed */
} sandbox_outcome;

typedef struct {
    sandbox_outcome outcome;
    /* FAILED: the exit status, or minus the signal that ended it. In the sandbox, bubblewrap
     * reports a death by signal N as status 128 + N, as a shell does, so a status above 128
     * reads as a signal. */
    int exit_status;
    char output[SANDBOX_OUTPUT_CAP + 1]; /* stdout and stderr as they came, NUL-terminated
                                          * (a NUL byte the program printed shows as '?') */
    size_t output_len;
    bool truncated;   /* output holds only the last SANDBOX_OUTPUT_CAP bytes */
} sandbox_result;

/* Checks that the interpreter is executable and, unless unsafe_no_sandbox, that the sandbox
 * can be made here by running a trivial program in it; IFN_ERR_UNSUPPORTED says why not
 * (bubblewrap missing, a namespace the kernel refuses, an interpreter outside its view). */
ifn_status sandbox_check(const sandbox_params *p);

/* Runs program[0..len) as described above and waits for it. An error (no fork, a sandbox that
 * could not be set up, IFN_ERR_CANCELLED by p->stop) is the harness's, not the program's.
 * Nothing the program does ends or stops the caller. */
ifn_status sandbox_run(const sandbox_params *p, const char *program, size_t len, sandbox_result *out);

#endif
