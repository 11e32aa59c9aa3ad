/* The system-call filter of the HumanEval sandbox (eval_sandbox.c): a seccomp BPF program,
 * built with libseccomp, that bubblewrap loads (--seccomp FD) into every process of a sample,
 * its PID 1 included, just before exec. */
#ifndef IFN_EVAL_SECCOMP_H
#define IFN_EVAL_SECCOMP_H

#include <stdbool.h>

#include "status.h"

/* Writes the filter, as raw BPF for this machine's architecture, to fd at its current
 * offset. allow_network keeps socket() open to every address family (else AF_UNIX only). */
ifn_status sandbox_filter_write(bool allow_network, int fd);

#endif
