/* Subcommands of the infernode CLI. Each returns the process exit status:
 * 0 success, 1 a runtime error (message on stderr), 2 a usage error. */
#ifndef IFN_CLI_H
#define IFN_CLI_H

#define CLI_EXIT_ERROR 1
#define CLI_EXIT_USAGE 2

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "comm.h"
#include "ops.h"

/* Every rank runs the same subcommand; rank 0 does the talking. */
int cli_generate(comm *c, int argc, char **argv);
int cli_bench(comm *c, int argc, char **argv);
int cli_serve(comm *c, int argc, char **argv);
/* Installs serve's stop-signal handler; main calls it first, before MPI starts, so that no
 * SIGTERM/SIGINT/SIGUSR1 is lost or fatal at any moment: while loading it ends the process at
 * once with status 1, once serving it starts rank 0's drain (the other ranks ignore it). */
void cli_serve_signals(void);
int cli_quantize(comm *c, int argc, char **argv);
int cli_eval(comm *c, int argc, char **argv);

/* A gRPC client of a running server: no model, no MPI, so it runs outside any rank. */
int cli_client(int argc, char **argv);

/* Option values (cli_args.c): the whole string must be the number; false otherwise. */
bool cli_parse_int(const char *s, long lo, long hi, int *out);
bool cli_parse_float(const char *s, float *out);
bool cli_parse_u64(const char *s, uint64_t *out);
/* -t/--threads N: sets the OpenMP team size when N is an integer in 1..4096; false otherwise
 * (then refuse it with cli_bad_value(..., CLI_THREADS_EXPECT)). */
#define CLI_THREADS_EXPECT "an integer in 1..4096"
bool cli_parse_threads(const char *s, int *out);
bool cli_set_threads(const char *s);
/* Without OMP_NUM_THREADS: sets the OpenMP team size to the CPUs the process may run on
 * (OpenMP counts its affinity mask), at most ceil(quota / period) of its cgroup's CPU quota
 * (cpu_quota.h), and says so on stderr when the quota is what limits it. The cgroup files are
 * read under $INFERNODE_CGROUP_ROOT (proc/self/... and the mount points) when it is set. -t
 * given later overrides it. */
void cli_default_threads(void);
/* A value an option refused: prints "infernode: error: OPTION: 'VALUE' is not EXPECT" (EXPECT
 * such as "a number" or "an integer in 1..4096") and returns CLI_EXIT_USAGE. OPTION is named as
 * getopt_long matched it: "--" opts[long_index].name when long_index >= 0 (its *longindex,
 * which the caller sets to -1 before each call), else "-" c. */
int cli_bad_value(const struct option *opts, int long_index, int c, const char *value, const char *expect);
/* A KV cache type by its name (ifn_kv_type_name: "f16", "bf16", "f32"); false for another. */
bool cli_parse_kv_type(const char *s, ifn_kv_type *out);
/* "1, 2,3" -> *ids (malloc'd, *n of them). On a bad item prints an error naming `option` and
 * the item and returns CLI_EXIT_USAGE (CLI_EXIT_ERROR without memory); 0 on success. */
int cli_parse_ids(const char *option, const char *list, int32_t **ids, size_t *n);

/* The text of a client option with the backslash escapes of bash's printf '%b' turned into
 * the bytes they stand for (*out malloc'd): \\ \a \b \e \E \f \n \r \t \v, \0NNN and \NNN
 * (octal, up to 3 digits, modulo 256), \xHH (1-2 hex digits), \uHHHH and \UHHHHHHHH (as
 * UTF-8), \c (the text ends there); a backslash before anything else, or at the end, stays.
 * Unlike printf, escapes that make a NUL byte, a surrogate, a code point beyond U+10FFFF or
 * bytes that are not UTF-8 (\\377) are refused (IFN_ERR_INVALID_ARG): the text goes into a
 * protobuf string. */
ifn_status cli_unescape(const char *s, char **out);

/* Writes s as a JSON string: quotes, backslashes and control characters escaped, bytes that
 * are not UTF-8 replaced by U+FFFD, so that the output is valid JSON whatever s holds. */
void cli_json_string(FILE *out, const char *s);

/* Reads a whole file into *text (malloc'd, NUL-terminated; *len bytes without the NUL).
 * Errors name the file. */
ifn_status cli_read_file(const char *path, char **text, size_t *len);

/* Prints "infernode: error: <detail>" for the pending error and returns CLI_EXIT_ERROR. */
int cli_fail(const char *context);

#endif
