/* A small JSON writer (RFC 8259) into a growing buffer, for the HTTP API's responses: objects
 * and arrays nest, commas and colons are placed by the writer, strings are escaped and always
 * valid UTF-8 (bytes that form no character become U+FFFD, as in gRPC's text fields).
 *
 * A writer that runs out of memory remembers it; every later call does nothing, and
 * json_writer_take reports the failure once at the end, so callers check one place. */
#ifndef IFN_JSON_WRITER_H
#define IFN_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define JSON_WRITER_MAX_DEPTH 32

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed;
    int depth;
    bool first[JSON_WRITER_MAX_DEPTH]; /* no member or item written yet at this level */
    bool after_key;                    /* the next value follows a key */
} json_writer;

void json_writer_init(json_writer *w);
/* The text (malloc'd, NUL-terminated; *len its bytes, may be NULL); the writer is empty after.
 * IFN_ERR_NOMEM if any call ran out of memory (nothing is returned then). */
ifn_status json_writer_take(json_writer *w, char **out, size_t *len);
void json_writer_free(json_writer *w);

void json_object_begin(json_writer *w);
void json_object_end(json_writer *w);
void json_array_begin(json_writer *w);
void json_array_end(json_writer *w);
/* A member's key inside an object; its value comes next. */
void json_key(json_writer *w, const char *key);
void json_string(json_writer *w, const char *s);
void json_string_n(json_writer *w, const char *s, size_t n);
void json_int(json_writer *w, int64_t v);
/* A finite number with 9 significant digits (enough to read back any float exactly); NaN
 * and infinities, which JSON cannot carry, are written as null. */
void json_float(json_writer *w, double v);
void json_bool(json_writer *w, bool v);
void json_null(json_writer *w);

/* Shorthands for a member: json_key then the value. */
void json_kv_string(json_writer *w, const char *key, const char *s);
void json_kv_int(json_writer *w, const char *key, int64_t v);

#endif
