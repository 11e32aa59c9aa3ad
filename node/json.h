/* A small JSON parser (RFC 8259) building a tree: enough for config.json, safetensors headers
 * and tokenizer.json. Strings are unescaped to UTF-8 (\uXXXX with surrogate pairs) and
 * NUL-terminated; `len` counts bytes and may include embedded NULs from \u0000. Object member
 * order is kept. Nesting deeper than 512 levels is refused. */
#ifndef IFN_JSON_H
#define IFN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_kind;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_kind kind;
    union {
        bool boolean;
        double number;
        struct { char *ptr; size_t len; } string;
        struct { json_value *items; size_t n; } array;
        struct { json_member *members; size_t n; } object;
    } u;
};

struct json_member {
    char *key; /* NUL-terminated */
    size_t key_len;
    json_value value;
};

/* Parses text[0..len). `what` names the source in error messages ("config.json", a path).
 * On failure *out is NULL and the message gives line and column. */
ifn_status json_parse(const char *text, size_t len, const char *what, json_value **out);
/* Reads and parses a whole file. */
ifn_status json_parse_file(const char *path, json_value **out);
void json_free(json_value *v);

/* Member of an object by key (the last one if repeated); NULL if v is not an object or the
 * key is absent. */
const json_value *json_get(const json_value *v, const char *key);

/* A string member: NULL when absent or of another kind. */
const char *json_get_string(const json_value *v, const char *key);

const char *json_kind_name(json_kind k);

/* The value of v if it is a JSON number without a fraction within [min, max]; false for
 * anything else, including the infinity that a literal such as 1e999 parses to. Readers take
 * integers through this: the range is checked on the double before it is converted, because
 * converting a double outside an integer type's range is undefined behaviour. */
bool json_integer(const json_value *v, int64_t min, int64_t max, int64_t *out);

#endif
