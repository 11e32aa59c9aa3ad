/* Runs an untrusted Python program for 'infernode eval humaneval': in its own process group,
 * in a fresh temporary directory that is removed afterwards with everything in it, with stdin
 * from /dev/null, stdout and stderr captured (the last SANDBOX_OUTPUT_CAP bytes kept), resource
 * limits (address space, file size, CPU time, no core files), a wall-clock limit after which
 * the whole process group is killed, and no network: the program runs in a network namespace
 * of its own (unshare(CLONE_NEWNET), or CLONE_NEWUSER | CLONE_NEWNET where only an
 * unprivileged user namespace is allowed) whose only interface, loopback, is down. */
#ifndef IFN_EVAL_SANDBOX_H
#define IFN_EVAL_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define SANDBOX_OUTPUT_CAP 4096
#define SANDBOX_ADDRESS_SPACE (2ull << 30) /* bytes */
#define SANDBOX_FILE_SIZE (16ull << 20)    /* bytes, per file written */

typedef struct {
    const char *python;  /* the interpreter, run as `python -I program.py` */
    double timeout;      /* wall-clock seconds; CPU time is limited to this + 1 */
    bool allow_network;  /* run without a network namespace of its own */
} sandbox_params;

typedef enum {
    SANDBOX_PASSED,    /* exit status 0 */
    SANDBOX_FAILED,    /* another exit status or a signal */
    SANDBOX_TIMED_OUT, /* still running at the time limit: its process group was killed */
} sandbox_outcome;

typedef struct {
    sandbox_outcome outcome;
    int exit_status;  /* FAILED: the exit status, or minus the signal that ended it */
    char output[SANDBOX_OUTPUT_CAP + 1]; /* stdout and stderr as they came, NUL-terminated */
    size_t output_len;
    bool truncated;   /* output holds only the last SANDBOX_OUTPUT_CAP bytes */
} sandbox_result;

/* Checks that the interpreter is executable and, unless allow_network, that a child process
 * can be put in a network namespace of its own here; IFN_ERR_UNSUPPORTED says why not. */
ifn_status sandbox_check(const sandbox_params *p);

/* Runs program[0..len) as described above and waits for it. An error (no temporary directory,
 * no fork, a failed isolation step in the child) is the harness's, not the program's. */
ifn_status sandbox_run(const sandbox_params *p, const char *program, size_t len, sandbox_result *out);

#endif
