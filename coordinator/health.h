/* The standard gRPC health service (grpc.health.v1.Health) over rpc_server.
 *
 * Check answers the status of a service, NOT_FOUND for a service never set. Watch streams the
 * status of a service now and at every change (SERVICE_UNKNOWN while the service was never
 * set; it keeps watching). The empty service name "" stands for the whole server and starts
 * SERVING. Both methods are public: load balancers and orchestrators probe without a token.
 *
 * Order at the end: health_shutdown (watchers see NOT_SERVING, then their streams end with
 * UNAVAILABLE), rpc_server_shutdown, rpc_server_destroy, health_destroy. Thread-safe. */
#ifndef IFN_HEALTH_H
#define IFN_HEALTH_H

#include <stdbool.h>

#include "rpc_server.h"
#include "status.h"

typedef struct health health;

ifn_status health_create(health **out);
/* Fills out[0] (Check, unary) and out[1] (Watch, server-streaming) for rpc_server_create. */
void health_methods(health *h, rpc_method out[2]);
/* Sets a service's status and pushes a change to every Watch of it. Fails (changing nothing)
 * only when out of memory for a new service name. Ignored after health_shutdown. */
ifn_status health_set(health *h, const char *service, bool serving);
/* Every service turns NOT_SERVING; every Watch gets that and ends with UNAVAILABLE, and Watch
 * calls that arrive later end at once. */
void health_shutdown(health *h);
/* Frees. Runs health_shutdown first if it was not called (then it must come before
 * rpc_server_destroy, which needs every Watch finished). NULL is a no-op. */
void health_destroy(health *h);

#endif
