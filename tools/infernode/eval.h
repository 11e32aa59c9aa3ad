/* The parts of 'infernode eval' (eval.c dispatches). */
#ifndef IFN_EVAL_H
#define IFN_EVAL_H

#include <stdbool.h>
#include <stddef.h>

#include "comm.h"
#include "status.h"

/* 'eval ppl' (kl false) and 'eval kl': perplexity, or KL and top-1 agreement against a
 * reference, over sliding windows of text files or token ids (eval_text.c). */
int eval_text(comm *c, int argc, char **argv, bool kl);

/* 'eval humaneval': pass@k of generated or given completions, each program run in a sandbox
 * (eval_humaneval.c, eval_sandbox.c). */
int eval_humaneval(comm *c, int argc, char **argv);

/* Calls fn(arg, line, its number from 1) for each line of text[0..len) that is not blank
 * (only spaces and tabs), NUL-terminated in place without its '\n' or "\r\n"; text[len] must
 * be writable (cli_read_file's NUL). Stops at fn's first non-zero return and returns it. */
int eval_for_lines(char *text, size_t len, int (*fn)(void *arg, char *line, int no), void *arg);

#endif
