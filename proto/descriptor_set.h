/* The serialized google.protobuf.FileDescriptorSet of every .proto file the server serves
 * (infernode.proto, grpc/health/v1/health.proto and grpc/reflection/v1 and v1alpha's
 * reflection.proto), with their imports: written by protoc-c --descriptor_set_out at build time
 * and embedded by proto/embed_bytes.cmake, for the reflection service (grpc_reflection.h). */
#ifndef IFN_DESCRIPTOR_SET_H
#define IFN_DESCRIPTOR_SET_H

#include <stddef.h>

extern const unsigned char ifn_descriptor_set[];
extern const size_t ifn_descriptor_set_len;

#endif
