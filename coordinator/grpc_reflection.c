#include "grpc_reflection.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor_index.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_request;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_response;

struct grpc_reflection {
    descriptor_index *ix;
};

/* Packs and sends one response; false if it could not be sent. */
static bool response_send(rpc_call *call, const refl_response *resp)
{
    size_t len = grpc__reflection__v1__server_reflection_response__get_packed_size(resp);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return false;
    grpc__reflection__v1__server_reflection_response__pack(resp, buf);
    bool ok = rpc_call_send(call, buf, len) == IFN_OK;
    free(buf);
    return ok;
}

static bool send_error(rpc_call *call, refl_response *resp, grpc_status_code code, const char *fmt, const char *name)
{
    char text[512];
    snprintf(text, sizeof text, fmt, name);
    Grpc__Reflection__V1__ErrorResponse err = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    err.error_code = (int32_t)code;
    err.error_message = text;
    resp->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = &err;
    return response_send(call, resp);
}

/* Adds file f and, depth first, the files it imports to order[*n] unless seen. */
static void collect_files(const descriptor_index *ix, int f, bool *seen, int *order, int *n)
{
    if (seen[f]) return;
    seen[f] = true;
    order[(*n)++] = f;
    for (int j = 0; j < descriptor_index_n_deps(ix, f); j++)
        collect_files(ix, descriptor_index_dep(ix, f, j), seen, order, n);
}

/* Answers file f with its transitive imports, f first. */
static bool send_files(rpc_call *call, refl_response *resp, const descriptor_index *ix, int f)
{
    int n_files = descriptor_index_n_files(ix), n = 0;
    bool *seen = calloc((size_t)n_files, sizeof *seen);
    int *order = calloc((size_t)n_files, sizeof *order);
    ProtobufCBinaryData *protos = calloc((size_t)n_files, sizeof *protos);
    bool ok = seen && order && protos;
    if (ok) {
        collect_files(ix, f, seen, order, &n);
        for (int i = 0; i < n; i++) {
            const uint8_t *bytes;
            descriptor_index_file_bytes(ix, order[i], &bytes, &protos[i].len);
            protos[i].data = (uint8_t *)bytes;
        }
        Grpc__Reflection__V1__FileDescriptorResponse files = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
        files.n_file_descriptor_proto = (size_t)n;
        files.file_descriptor_proto = protos;
        resp->message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp->file_descriptor_response = &files;
        ok = response_send(call, resp);
    }
    free(protos);
    free(order);
    free(seen);
    return ok;
}

static bool send_services(rpc_call *call, refl_response *resp, const descriptor_index *ix)
{
    int n = descriptor_index_n_services(ix);
    Grpc__Reflection__V1__ServiceResponse *items = calloc((size_t)n + 1, sizeof *items);
    Grpc__Reflection__V1__ServiceResponse **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    bool ok = items && ptrs;
    if (ok) {
        for (int i = 0; i < n; i++) {
            items[i] = (Grpc__Reflection__V1__ServiceResponse)GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;
            items[i].name = (char *)descriptor_index_service(ix, i);
            ptrs[i] = &items[i];
        }
        Grpc__Reflection__V1__ListServiceResponse list = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
        list.n_service = (size_t)n;
        list.service = ptrs;
        resp->message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp->list_services_response = &list;
        ok = response_send(call, resp);
    }
    free(ptrs);
    free(items);
    return ok;
}

/* The one response to a request; false if it could not be sent. */
static bool answer(const descriptor_index *ix, rpc_call *call, refl_request *req)
{
    refl_response resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host;
    resp.original_request = req;
    bool is_message;
    int f;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        return send_services(call, &resp, ix);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        f = descriptor_index_find_file(ix, req->file_by_filename);
        if (f < 0)
            return send_error(call, &resp, GRPC_STATUS_NOT_FOUND, "unknown file \"%.256s\"", req->file_by_filename);
        return send_files(call, &resp, ix, f);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        f = descriptor_index_find_symbol(ix, req->file_containing_symbol, &is_message);
        if (f < 0)
            return send_error(call, &resp, GRPC_STATUS_NOT_FOUND, "unknown symbol \"%.256s\"",
                              req->file_containing_symbol);
        return send_files(call, &resp, ix, f);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        return send_error(call, &resp, GRPC_STATUS_NOT_FOUND,
                          "no extension of \"%.256s\" (the served files declare none)",
                          req->file_containing_extension ? req->file_containing_extension->containing_type : "");
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
        f = descriptor_index_find_symbol(ix, req->all_extension_numbers_of_type, &is_message);
        if (f < 0 || !is_message)
            return send_error(call, &resp, GRPC_STATUS_NOT_FOUND, "unknown message type \"%.256s\"",
                              req->all_extension_numbers_of_type);
        Grpc__Reflection__V1__ExtensionNumberResponse numbers = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
        numbers.base_type_name = req->all_extension_numbers_of_type;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
        resp.all_extension_numbers_response = &numbers;
        return response_send(call, &resp);
    }
    default:
        return send_error(call, &resp, GRPC_STATUS_UNIMPLEMENTED, "%s", "the request sets no known message_request");
    }
}

/* One request of the stream (msg NULL: the client's stream ended). */
static void reflection_on_message(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    grpc_reflection *r = user;
    if (!msg) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        return;
    }
    refl_request *req = grpc__reflection__v1__server_reflection_request__unpack(NULL, len, msg);
    if (!req) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "cannot parse grpc.reflection.v1.ServerReflectionRequest");
        return;
    }
    if (!answer(r->ix, call, req))
        rpc_call_finish(call, rpc_call_cancelled(call) ? GRPC_STATUS_CANCELLED : GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "reflection: the response could not be sent");
    grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
}

ifn_status grpc_reflection_create(const uint8_t *set, size_t len, grpc_reflection **out)
{
    *out = NULL;
    grpc_reflection *r = calloc(1, sizeof *r);
    if (!r) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the reflection service");
    ifn_status st = descriptor_index_create(set, len, &r->ix);
    if (st != IFN_OK) {
        free(r);
        return st;
    }
    *out = r;
    return IFN_OK;
}

void grpc_reflection_methods(grpc_reflection *r, rpc_method out[GRPC_REFLECTION_N_METHODS])
{
    out[0] = (rpc_method){ .path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                           .kind = RPC_BIDI_STREAMING, .handler = reflection_on_message, .user = r };
    out[1] = (rpc_method){ .path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                           .kind = RPC_BIDI_STREAMING, .handler = reflection_on_message, .user = r };
}

void grpc_reflection_destroy(grpc_reflection *r)
{
    if (!r) return;
    descriptor_index_destroy(r->ix);
    free(r);
}
