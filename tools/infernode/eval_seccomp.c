/* A deny list, not an allow list: a test program may use whatever Python and its standard
 * library do on an ordinary machine (threads, subprocesses, pipes, files in its own directory),
 * so everything is allowed except what reaches past the sandbox's walls or into the kernel's
 * attack surface, which a test never needs. Denied calls fail with EPERM, so that the program
 * sees a PermissionError instead of dying. The namespaces and mounts already hide most of the
 * machine; the filter closes what they do not: other processes' memory (ptrace and friends),
 * new namespaces or mounts (a nested user namespace would give the program the right to mount
 * a tmpfs without a size limit), kernel loaders (modules, kexec, BPF, perf, io_uring, whose
 * operations seccomp cannot see), keyrings, file handles, and sockets other than AF_UNIX.
 * clone3 passes its flags in memory, which a filter cannot read, so it fails with ENOSYS and
 * glibc falls back to clone, whose flags are checked. Calls of another architecture (32-bit
 * x86 through int 0x80) are killed: libseccomp's default for a foreign architecture. */
#define _GNU_SOURCE
#include "eval_seccomp.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static const int denied[] = {
    /* other processes */
    SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(kcmp),
    SCMP_SYS(pidfd_getfd),
    /* namespaces and mounts */
    SCMP_SYS(unshare), SCMP_SYS(setns), SCMP_SYS(mount), SCMP_SYS(umount2), SCMP_SYS(pivot_root),
    SCMP_SYS(chroot), SCMP_SYS(open_tree), SCMP_SYS(move_mount), SCMP_SYS(fsopen), SCMP_SYS(fsconfig),
    SCMP_SYS(fsmount), SCMP_SYS(fspick), SCMP_SYS(mount_setattr),
    /* the kernel itself */
    SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(init_module), SCMP_SYS(finit_module),
    SCMP_SYS(delete_module), SCMP_SYS(bpf), SCMP_SYS(perf_event_open), SCMP_SYS(userfaultfd),
    SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register), SCMP_SYS(reboot),
    SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(acct), SCMP_SYS(quotactl), SCMP_SYS(syslog),
    SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(uselib), SCMP_SYS(lookup_dcookie), SCMP_SYS(vhangup),
    SCMP_SYS(settimeofday), SCMP_SYS(clock_settime), SCMP_SYS(clock_adjtime), SCMP_SYS(adjtimex),
    SCMP_SYS(sethostname), SCMP_SYS(setdomainname), SCMP_SYS(fanotify_init),
    /* keyrings and file handles */
    SCMP_SYS(keyctl), SCMP_SYS(add_key), SCMP_SYS(request_key), SCMP_SYS(name_to_handle_at),
    SCMP_SYS(open_by_handle_at),
};

/* clone() with any of these flags would make a new namespace. */
static const unsigned long clone_ns_flags[] = {
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
};

static ifn_status rule_failed(int rc, const char *what)
{
    return ifn_error_set(IFN_ERR_INTERNAL, "seccomp filter: adding the rule for %s failed: %s", what, strerror(-rc));
}

static ifn_status add_rules(scmp_filter_ctx ctx, bool allow_network)
{
    const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
    int rc;
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++)
        if ((rc = seccomp_rule_add(ctx, eperm, denied[i], 0)) != 0) {
            char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, denied[i]);
            ifn_status s = rule_failed(rc, name ? name : "a system call");
            free(name);
            return s;
        }
    for (size_t i = 0; i < sizeof clone_ns_flags / sizeof clone_ns_flags[0]; i++)
        if ((rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
                                   SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]))) != 0)
            return rule_failed(rc, "clone");
    if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) != 0)
        return rule_failed(rc, "clone3");
    /* Typing into a terminal; the kernel reads the request as 32 bits, so compare only those. */
    if ((rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI))) ||
        (rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX))))
        return rule_failed(rc, "ioctl");
    if (!allow_network && (rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX))))
        return rule_failed(rc, "socket");
    return IFN_OK;
}

ifn_status sandbox_filter_write(bool allow_network, int fd)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return ifn_error_set(IFN_ERR_NOMEM, "seccomp filter: seccomp_init failed");
    ifn_status s = add_rules(ctx, allow_network);
    int rc;
    if (s == IFN_OK && (rc = seccomp_export_bpf(ctx, fd)) != 0)
        s = ifn_error_set(IFN_ERR_IO, "seccomp filter: writing its BPF failed: %s", strerror(-rc));
    seccomp_release(ctx);
    return s;
}
