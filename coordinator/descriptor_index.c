#include "descriptor_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Field numbers of google/protobuf/descriptor.proto that the index reads. */
enum {
    SET_FILE = 1,                                                          /* FileDescriptorSet */
    FILE_NAME = 1, FILE_PACKAGE = 2, FILE_DEPENDENCY = 3, FILE_MESSAGE = 4, FILE_ENUM = 5, FILE_SERVICE = 6,
    MESSAGE_NAME = 1, MESSAGE_FIELD = 2, MESSAGE_NESTED = 3, MESSAGE_ENUM = 4, /* DescriptorProto */
    ENUM_NAME = 1, ENUM_VALUE = 2,                                         /* EnumDescriptorProto */
    SERVICE_NAME = 1, SERVICE_METHOD = 2,                                  /* ServiceDescriptorProto */
    NAME = 1, /* FieldDescriptorProto, EnumValueDescriptorProto, MethodDescriptorProto */
};
enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

typedef struct {
    char *name;
    int file;
    bool is_message, is_service;
} symbol;

typedef struct {
    const uint8_t *bytes; /* the serialized FileDescriptorProto, inside ix->set */
    size_t len;
    char *name;
    char **dep_names; /* [n_deps] */
    int *deps;        /* [n_deps] file indexes */
    int n_deps;
} file_entry;

struct descriptor_index {
    uint8_t *set;
    size_t len;
    file_entry *files; /* [n_files] */
    int n_files;
    symbol *syms;      /* [n_syms] in the order of the files */
    int n_syms, cap_syms;
};

/* A message's bytes being read; base is the set's start, for offsets in errors. */
typedef struct {
    const uint8_t *p, *end, *base;
} wire;

typedef struct {
    uint32_t number;
    int type;
    wire value; /* WIRE_LEN: the field's bytes */
} wire_field;

static bool wire_varint(wire *w, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && w->p < w->end; shift += 7) {
        uint8_t b = *w->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* The next field of w: 1, 0 at its end, or an IFN_ERR_FORMAT error naming the offset. */
static int wire_next(wire *w, wire_field *f)
{
    if (w->p == w->end) return 0;
    uint64_t key = 0, n = 0;
    bool ok = wire_varint(w, &key);
    f->number = (uint32_t)(key >> 3);
    f->type = (int)(key & 7);
    if (ok && f->type == WIRE_VARINT) ok = wire_varint(w, &n);
    else if (ok && f->type == WIRE_I64) n = 8;
    else if (ok && f->type == WIRE_I32) n = 4;
    else if (ok && f->type == WIRE_LEN) ok = wire_varint(w, &n);
    else ok = false;
    if (!ok || (f->type != WIRE_VARINT && n > (uint64_t)(w->end - w->p))) {
        ifn_error_set(IFN_ERR_FORMAT, "descriptor set: bad protobuf data at byte %td", w->p - w->base);
        return -1;
    }
    if (f->type != WIRE_VARINT) {
        f->value = (wire){ w->p, w->p + n, w->base };
        w->p += n;
    }
    return 1;
}

/* The string field `number` of message m (its last occurrence), malloc'd; "" when unset. NULL
 * with an error set on bad data or no memory. */
static char *wire_string(wire m, uint32_t number)
{
    wire_field f;
    wire found = { NULL, NULL, NULL };
    int r;
    while ((r = wire_next(&m, &f)) == 1)
        if (f.number == number && f.type == WIRE_LEN) found = f.value;
    if (r < 0) return NULL;
    size_t n = (size_t)(found.end - found.p);
    char *s = malloc(n + 1);
    if (!s) {
        ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
        return NULL;
    }
    if (n) memcpy(s, found.p, n);
    s[n] = '\0';
    return s;
}

/* Adds scope.name (or name without a scope) as a symbol of file. */
static ifn_status add_symbol(descriptor_index *ix, const char *scope, const char *name, int file, bool is_message,
                             bool is_service)
{
    if (ix->n_syms == ix->cap_syms) {
        int cap = ix->cap_syms ? 2 * ix->cap_syms : 64;
        symbol *bigger = realloc(ix->syms, (size_t)cap * sizeof *bigger);
        if (!bigger) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
        ix->syms = bigger;
        ix->cap_syms = cap;
    }
    size_t n = strlen(scope) + strlen(name) + 2;
    char *full = malloc(n);
    if (!full) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
    snprintf(full, n, "%s%s%s", scope, scope[0] ? "." : "", name);
    ix->syms[ix->n_syms++] = (symbol){ .name = full, .file = file, .is_message = is_message, .is_service = is_service };
    return IFN_OK;
}

/* Adds the name of every element `number` of m (fields, enum values, methods) in scope. */
static ifn_status index_names(descriptor_index *ix, wire m, uint32_t number, const char *scope, int file)
{
    wire_field f;
    int r;
    while ((r = wire_next(&m, &f)) == 1) {
        if (f.number != number || f.type != WIRE_LEN) continue;
        char *name = wire_string(f.value, NAME);
        if (!name) return IFN_ERR_FORMAT;
        ifn_status st = add_symbol(ix, scope, name, file, false, false);
        free(name);
        CHECK(st);
    }
    return r < 0 ? IFN_ERR_FORMAT : IFN_OK;
}

/* An enum, message or service (kind: the field of its parent) and what it holds. */
static ifn_status index_type(descriptor_index *ix, wire m, int kind, const char *scope, int file)
{
    char *name = wire_string(m, MESSAGE_NAME); /* field 1 in all three */
    if (!name) return IFN_ERR_FORMAT;
    ifn_status st = add_symbol(ix, scope, name, file, kind == FILE_MESSAGE, kind == FILE_SERVICE);
    free(name);
    CHECK(st);
    const char *full = ix->syms[ix->n_syms - 1].name; /* stable: syms holds pointers */
    if (kind == FILE_ENUM) return index_names(ix, m, ENUM_VALUE, scope, file); /* values: the enum's scope */
    if (kind == FILE_SERVICE) return index_names(ix, m, SERVICE_METHOD, full, file);
    CHECK(index_names(ix, m, MESSAGE_FIELD, full, file));
    wire_field f;
    int r;
    while ((r = wire_next(&m, &f)) == 1) {
        if (f.type != WIRE_LEN) continue;
        if (f.number == MESSAGE_NESTED) CHECK(index_type(ix, f.value, FILE_MESSAGE, full, file));
        else if (f.number == MESSAGE_ENUM) CHECK(index_type(ix, f.value, FILE_ENUM, full, file));
    }
    return r < 0 ? IFN_ERR_FORMAT : IFN_OK;
}

/* One FileDescriptorProto: its name, dependencies' names and symbols. */
static ifn_status index_file(descriptor_index *ix, wire m, int file)
{
    file_entry *fe = &ix->files[file];
    fe->bytes = m.p;
    fe->len = (size_t)(m.end - m.p);
    fe->name = wire_string(m, FILE_NAME);
    char *package = fe->name ? wire_string(m, FILE_PACKAGE) : NULL;
    if (!package) return IFN_ERR_FORMAT;
    ifn_status st = IFN_OK;
    wire_field f;
    int r;
    for (wire w = m; st == IFN_OK && (r = wire_next(&w, &f)) == 1;) {
        if (f.type != WIRE_LEN) continue;
        if (f.number == FILE_MESSAGE || f.number == FILE_ENUM || f.number == FILE_SERVICE) {
            st = index_type(ix, f.value, (int)f.number, package, file);
        } else if (f.number == FILE_DEPENDENCY) {
            char **bigger = realloc(fe->dep_names, (size_t)(fe->n_deps + 1) * sizeof *bigger);
            size_t n = (size_t)(f.value.end - f.value.p);
            char *dep = bigger ? malloc(n + 1) : NULL;
            if (bigger) fe->dep_names = bigger;
            if (!dep) {
                st = ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
                break;
            }
            memcpy(dep, f.value.p, n);
            dep[n] = '\0';
            fe->dep_names[fe->n_deps++] = dep;
        }
    }
    free(package);
    return st != IFN_OK ? st : r < 0 ? IFN_ERR_FORMAT : IFN_OK;
}

/* Every file's dependencies as indexes. */
static ifn_status link_deps(descriptor_index *ix)
{
    for (int i = 0; i < ix->n_files; i++) {
        file_entry *fe = &ix->files[i];
        fe->deps = calloc((size_t)fe->n_deps + 1, sizeof *fe->deps);
        if (!fe->deps) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
        for (int j = 0; j < fe->n_deps; j++) {
            fe->deps[j] = descriptor_index_find_file(ix, fe->dep_names[j]);
            if (fe->deps[j] < 0)
                return ifn_error_set(IFN_ERR_FORMAT, "descriptor set: %s imports %s, which it does not hold", fe->name,
                                     fe->dep_names[j]);
        }
    }
    return IFN_OK;
}

ifn_status descriptor_index_create(const uint8_t *set, size_t len, descriptor_index **out)
{
    *out = NULL;
    descriptor_index *ix = calloc(1, sizeof *ix);
    if (ix) ix->set = malloc(len ? len : 1);
    if (!ix || !ix->set) {
        free(ix);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
    }
    memcpy(ix->set, set, len);
    ix->len = len;
    wire w = { ix->set, ix->set + len, ix->set };
    wire_field f;
    int r, n = 0;
    while ((r = wire_next(&w, &f)) == 1) n += f.number == SET_FILE && f.type == WIRE_LEN;
    ix->files = calloc((size_t)n + 1, sizeof *ix->files);
    ifn_status st = r < 0        ? IFN_ERR_FORMAT
                    : ix->files ? IFN_OK
                                : ifn_error_set(IFN_ERR_NOMEM, "no memory for the descriptor index");
    w = (wire){ ix->set, ix->set + len, ix->set };
    while (st == IFN_OK && wire_next(&w, &f) == 1)
        if (f.number == SET_FILE && f.type == WIRE_LEN) st = index_file(ix, f.value, ix->n_files++);
    if (st == IFN_OK) st = link_deps(ix);
    if (st != IFN_OK) {
        descriptor_index_destroy(ix);
        return st;
    }
    *out = ix;
    return IFN_OK;
}

void descriptor_index_destroy(descriptor_index *ix)
{
    if (!ix) return;
    for (int i = 0; i < ix->n_files; i++) {
        file_entry *fe = &ix->files[i];
        for (int j = 0; j < fe->n_deps; j++) free(fe->dep_names[j]);
        free(fe->dep_names);
        free(fe->deps);
        free(fe->name);
    }
    for (int i = 0; i < ix->n_syms; i++) free(ix->syms[i].name);
    free(ix->syms);
    free(ix->files);
    free(ix->set);
    free(ix);
}

int descriptor_index_n_files(const descriptor_index *ix) { return ix->n_files; }

int descriptor_index_find_file(const descriptor_index *ix, const char *name)
{
    for (int i = 0; i < ix->n_files; i++)
        if (ix->files[i].name && strcmp(ix->files[i].name, name) == 0) return i;
    return -1;
}

int descriptor_index_find_symbol(const descriptor_index *ix, const char *symbol_name, bool *is_message)
{
    for (int i = 0; i < ix->n_syms; i++)
        if (strcmp(ix->syms[i].name, symbol_name) == 0) {
            *is_message = ix->syms[i].is_message;
            return ix->syms[i].file;
        }
    *is_message = false;
    return -1;
}

const char *descriptor_index_file_name(const descriptor_index *ix, int i) { return ix->files[i].name; }

void descriptor_index_file_bytes(const descriptor_index *ix, int i, const uint8_t **bytes, size_t *len)
{
    *bytes = ix->files[i].bytes;
    *len = ix->files[i].len;
}

int descriptor_index_n_deps(const descriptor_index *ix, int i) { return ix->files[i].n_deps; }

int descriptor_index_dep(const descriptor_index *ix, int i, int j) { return ix->files[i].deps[j]; }

int descriptor_index_n_services(const descriptor_index *ix)
{
    int n = 0;
    for (int i = 0; i < ix->n_syms; i++) n += ix->syms[i].is_service;
    return n;
}

const char *descriptor_index_service(const descriptor_index *ix, int i)
{
    for (int k = 0; k < ix->n_syms; k++)
        if (ix->syms[k].is_service && i-- == 0) return ix->syms[k].name;
    return NULL;
}
