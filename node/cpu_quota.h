/* The CPU quota of this process's cgroup: how many CPUs' worth of time the scheduler lets it
 * use (a container's or a Kubernetes pod's `cpu` limit), as read from the cgroup files.
 *
 * cgroup v2: `cpu.max` ("max 100000": no limit; "150000 100000": 1.5 CPUs) in the process's
 * cgroup (the "0::/path" line of /proc/self/cgroup, under the cgroup2 mount) and in each of
 * its ancestors up to the mount's root. cgroup v1: `cpu.cfs_quota_us` (-1: no limit) over
 * `cpu.cfs_period_us` in the cpu controller's cgroup ("N:cpu,cpuacct:/path", under the mount
 * of type cgroup whose options name `cpu`) and its ancestors. Mount points come from
 * /proc/self/mountinfo. Every limit found counts; the smallest wins. */
#ifndef IFN_CPU_QUOTA_H
#define IFN_CPU_QUOTA_H

typedef struct {
    int cpus;                 /* ceil(quota / period) of the smallest limit (at least 1); 0: no limit */
    long long quota, period;  /* that limit, in microseconds (0 when there is none) */
    char source[512];         /* the file that holds it, "" when there is none */
    char note[1024];          /* what was skipped as unreadable or malformed ("" if nothing), for a
                                 warning: "/sys/fs/cgroup/x/cpu.max: 'abc' is not 'max [PERIOD]'
                                 or 'QUOTA PERIOD'" */
} cpu_quota;

/* Reads the quota. proc_root holds self/cgroup and self/mountinfo ("/proc" on a real system);
 * fs_root is prepended to the mount points that mountinfo names ("" on a real system), so a
 * test can point both at a fake tree. Never fails: a missing quota file is a level without a
 * limit, and a file that cannot be read or parsed is skipped and named in note. */
void cpu_quota_read(const char *proc_root, const char *fs_root, cpu_quota *out);

#endif
