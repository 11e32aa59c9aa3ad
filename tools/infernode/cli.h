/* Subcommands of the infernode CLI. Each returns the process exit status:
 * 0 success, 1 a runtime error (message on stderr), 2 a usage error. */
#ifndef IFN_CLI_H
#define IFN_CLI_H

#define CLI_EXIT_ERROR 1
#define CLI_EXIT_USAGE 2

#include "comm.h"

/* Every rank runs the same subcommand; rank 0 does the talking. */
int cli_generate(comm *c, int argc, char **argv);
int cli_bench(comm *c, int argc, char **argv);

/* Prints "infernode: error: <detail>" for the pending error and returns CLI_EXIT_ERROR. */
int cli_fail(const char *context);

#endif
