/* What this machine does for a decode step, measured once and kept in a file, so that every
 * later start of the server (and of the benchmarks) plans speculation from the very same
 * figures: read bandwidth by working-set size, the f16 matrix kernel's compute rate at
 * verification's row counts, and the cost of one OpenMP parallel region.
 *
 * The file (machine_profile_path) is keyed by the CPU model, the ISA level and the thread
 * count; a file for another key is measured again and replaced. Figures are rounded to two
 * significant digits before use, so a start that measured and a start that read the file use
 * equal numbers. */
#ifndef IFN_MACHINE_PROFILE_H
#define IFN_MACHINE_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

/* Working-set sizes whose read bandwidth is measured: 4, 16, 64 and 256 MiB. */
#define MACHINE_BW_POINTS 4

typedef struct {
    char key[160];                  /* "cpu model|isa|threads" */
    int threads;
    double bw_gbs[MACHINE_BW_POINTS]; /* read bandwidth, GB/s, at machine_profile_bw_bytes(i) */
    double gflops;                  /* the f16 kernel at 8 rows over an in-cache matrix, GFLOP/s */
    double region_us;               /* one parallel region of `threads` threads, microseconds */
    bool measured;                  /* this start measured it (else read the file) */
    char path[512];                 /* the file it came from or went to ("" if none) */
} machine_profile;

size_t machine_profile_bw_bytes(int i);

/* The profile file's path: $INFERNODE_MACHINE_PROFILE, else
 * $XDG_CACHE_HOME/infernode/machine-profile, else $HOME/.cache/infernode/machine-profile.
 * Empty if none of them is set. */
void machine_profile_path(char *buf, size_t cap);

/* Reads the profile of this machine and `threads` threads from path, or measures it (a few
 * seconds) and writes it there when the file is missing, unreadable or for another key. A file
 * that cannot be written is not an error: the measured figures are used and *out says so
 * (out->path empty). path NULL or "": measure, write nothing. */
ifn_status machine_profile_get(const char *path, int threads, machine_profile *out);

/* Read bandwidth for a working set of `bytes`, GB/s: interpolated on log size between the
 * measured points, the nearest point's outside them. */
double machine_profile_bandwidth(const machine_profile *p, double bytes);

/* One line for logs: "bandwidth 4M 110 16M 95 64M 31 256M 28 GB/s, f16 kernel 150 GFLOP/s, ...". */
void machine_profile_describe(const machine_profile *p, char *buf, size_t cap);

#endif
