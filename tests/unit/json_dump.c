/* Test driver: parses a JSON file with infernode's parser and writes it back as JSON, so that
 * test_json.py can compare the tree with Python's json module. Exit 1 with the parser's
 * message on stderr when the input is rejected. */
#include <stdio.h>

#include "json.h"

static void put_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void put_value(const json_value *v)
{
    switch (v->kind) {
    case JSON_NULL: fputs("null", stdout); break;
    case JSON_BOOL: fputs(v->u.boolean ? "true" : "false", stdout); break;
    case JSON_NUMBER: printf("%.17g", v->u.number); break;
    case JSON_STRING: put_string(v->u.string.ptr, v->u.string.len); break;
    case JSON_ARRAY:
        putchar('[');
        for (size_t i = 0; i < v->u.array.n; i++) {
            if (i) putchar(',');
            put_value(&v->u.array.items[i]);
        }
        putchar(']');
        break;
    case JSON_OBJECT:
        putchar('{');
        for (size_t i = 0; i < v->u.object.n; i++) {
            if (i) putchar(',');
            put_string(v->u.object.members[i].key, v->u.object.members[i].key_len);
            putchar(':');
            put_value(&v->u.object.members[i].value);
        }
        putchar('}');
        break;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    json_value *v;
    if (json_parse_file(argv[1], &v) != IFN_OK) {
        fprintf(stderr, "%s\n", ifn_error_detail());
        return 1;
    }
    put_value(v);
    json_free(v);
    return 0;
}
