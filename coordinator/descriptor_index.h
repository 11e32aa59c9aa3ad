/* What gRPC reflection needs to know of a serialized google.protobuf.FileDescriptorSet: each
 * file's serialized FileDescriptorProto, its name and dependencies, the services it defines,
 * and the full names of the symbols it defines (packages' messages, nested messages, their
 * fields, enums and their values, services and their methods), read with a small protobuf wire
 * reader (the C packages ship no descriptor.proto to compile).
 *
 * Names are full names without a leading dot: "infernode.v1.Inference.Generate". Enum values
 * are named in their enum's scope, as protobuf does ("infernode.v1.FINISH_REASON_STOP").
 * Read-only after creation, so it may be shared by threads. */
#ifndef IFN_DESCRIPTOR_INDEX_H
#define IFN_DESCRIPTOR_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct descriptor_index descriptor_index;

/* Indexes set[len] (copied). IFN_ERR_FORMAT naming the byte offset when it is not a
 * FileDescriptorSet, or a file's dependency is not in it; IFN_ERR_NOMEM. */
ifn_status descriptor_index_create(const uint8_t *set, size_t len, descriptor_index **out);
void descriptor_index_destroy(descriptor_index *ix);

int descriptor_index_n_files(const descriptor_index *ix);
/* The file named name ("infernode.proto"), or -1. */
int descriptor_index_find_file(const descriptor_index *ix, const char *name);
/* The file defining the symbol, or -1; *is_message tells whether it is a message type. */
int descriptor_index_find_symbol(const descriptor_index *ix, const char *symbol, bool *is_message);
/* File i's name ("grpc/health/v1/health.proto"). */
const char *descriptor_index_file_name(const descriptor_index *ix, int i);
/* File i's serialized FileDescriptorProto. */
void descriptor_index_file_bytes(const descriptor_index *ix, int i, const uint8_t **bytes, size_t *len);
/* File i's dependencies, as file indexes. */
int descriptor_index_n_deps(const descriptor_index *ix, int i);
int descriptor_index_dep(const descriptor_index *ix, int i, int j);

/* Every service's full name, files in order. */
int descriptor_index_n_services(const descriptor_index *ix);
const char *descriptor_index_service(const descriptor_index *ix, int i);

#endif
