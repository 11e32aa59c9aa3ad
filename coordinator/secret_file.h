/* Secrets the servers read from files: TLS certificates and keys (PEM) and the bearer token.
 * Each file is read whole, and a file that is not what it should be is refused with a message
 * naming it and what is wrong, never cut short or used in part. */
#ifndef IFN_SECRET_FILE_H
#define IFN_SECRET_FILE_H

#include "status.h"

/* The whole PEM file at path as a NUL-terminated string (malloc'd; free with secret_free).
 * what ("certificate", "key") names the file in errors. Fails if it cannot be read, holds a
 * NUL byte or has no "-----BEGIN " line. */
ifn_status secret_file_read_pem(const char *what, const char *path, char **out);

/* The bearer token in the file at path (malloc'd; free with secret_free): the whole file, one
 * line, a final "\n" or "\r\n" allowed. Fails naming the file when it is empty, longer than
 * SECRET_TOKEN_MAX bytes, or has a NUL byte, a second line, or a byte that RFC 6750's token
 * syntax does not allow (only letters, digits and -._~+/=). */
#define SECRET_TOKEN_MAX 4096
ifn_status secret_file_read_token(const char *path, char **out);

/* Overwrites a secret with zeros, then frees it (NULL is a no-op): a key or token does not
 * linger in freed memory. */
void secret_free(char *s);

#endif
