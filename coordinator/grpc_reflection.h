/* gRPC server reflection (grpc.reflection.v1 and v1alpha ServerReflection) over rpc_server, so
 * that grpcurl, Postman and the reflection clients of grpcio and grpc-js can list the services
 * and describe and call their methods without the .proto files.
 *
 * The descriptors come from a serialized FileDescriptorSet (serve passes the one embedded at
 * build time, proto/descriptor_set.h). Each request on the stream gets one response:
 * list_services names every service in the set; file_by_filename and file_containing_symbol
 * (a package's message, field, enum, enum value, service or method) answer the file with its
 * transitive imports; all_extension_numbers_of_type answers an empty list for a known message
 * (the served files declare no extensions); file_containing_extension and unknown names get an
 * error_response NOT_FOUND, a request with nothing set UNIMPLEMENTED. v1alpha is served from
 * the same code: its messages are v1's on the wire. Thread-safe: the index is read-only. */
#ifndef IFN_GRPC_REFLECTION_H
#define IFN_GRPC_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "rpc_server.h"
#include "status.h"

#define GRPC_REFLECTION_N_METHODS 2

typedef struct grpc_reflection grpc_reflection;

/* Indexes set[len] (copied); fails as descriptor_index_create does. */
ifn_status grpc_reflection_create(const uint8_t *set, size_t len, grpc_reflection **out);
/* Fills out[0] (v1) and out[1] (v1alpha) ServerReflectionInfo, bidirectional streams, not
 * public: with a bearer token configured, reflection needs it like the service it describes. */
void grpc_reflection_methods(grpc_reflection *r, rpc_method out[GRPC_REFLECTION_N_METHODS]);
/* After rpc_server_destroy. NULL is a no-op. */
void grpc_reflection_destroy(grpc_reflection *r);

#endif
