#include "health.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

typedef struct {
    char *name;
    serving_status status;
} service_entry;

typedef struct watcher {
    struct watcher *next;
    rpc_call *call;
    char *service;
    serving_status sent; /* the last status streamed to this watcher */
} watcher;

struct health {
    pthread_mutex_t mu; /* guards everything below; taken before any call's own lock */
    service_entry *services; /* [n_services] */
    int n_services, cap_services;
    watcher *watchers;
    bool shut_down;
};

static service_entry *service_find(health *h, const char *name)
{
    for (int i = 0; i < h->n_services; i++)
        if (strcmp(h->services[i].name, name) == 0) return &h->services[i];
    return NULL;
}

static serving_status service_status(health *h, const char *name)
{
    const service_entry *e = service_find(h, name);
    return e ? e->status : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
}

static ifn_status response_send(rpc_call *call, serving_status status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = status;
    uint8_t buf[16]; /* one enum field: at most 11 bytes */
    size_t len = grpc__health__v1__health_check_response__pack(&resp, buf);
    return rpc_call_send(call, buf, len);
}

static void watcher_free(watcher *w)
{
    free(w->service);
    free(w);
}

/* Ends and drops the watches whose calls are gone, so that clients that cancel do not pile up
 * between status changes. */
static void watchers_prune_locked(health *h)
{
    for (watcher **p = &h->watchers; *p;) {
        watcher *w = *p;
        if (rpc_call_cancelled(w->call)) {
            *p = w->next;
            rpc_call_finish(w->call, GRPC_STATUS_CANCELLED, NULL);
            watcher_free(w);
        } else {
            p = &w->next;
        }
    }
}

/* Streams the service's current status to each of its watchers that has not seen it. */
static void watchers_push_locked(health *h, const char *service)
{
    for (watcher **p = &h->watchers; *p;) {
        watcher *w = *p;
        serving_status now = service_status(h, service);
        if (strcmp(w->service, service) != 0 || w->sent == now) {
            p = &w->next;
            continue;
        }
        ifn_status st = response_send(w->call, now);
        if (st == IFN_OK) {
            w->sent = now;
            p = &w->next;
            continue;
        }
        *p = w->next;
        rpc_call_finish(w->call, st == IFN_ERR_CANCELLED ? GRPC_STATUS_CANCELLED : GRPC_STATUS_UNAVAILABLE,
                        st == IFN_ERR_CANCELLED ? NULL : "health: out of memory");
        watcher_free(w);
    }
}

static void health_on_check(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    health *h = user;
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
    if (!req) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "cannot parse grpc.health.v1.HealthCheckRequest");
        return;
    }
    pthread_mutex_lock(&h->mu);
    watchers_prune_locked(h);
    const service_entry *e = service_find(h, req->service);
    serving_status status = e ? e->status : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN;
    pthread_mutex_unlock(&h->mu);

    if (!e) {
        char text[320];
        snprintf(text, sizeof text, "unknown service \"%.256s\"", req->service);
        rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, text);
    } else if (response_send(call, status) == IFN_OK) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    } else {
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "health: cannot answer");
    }
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
}

static void health_on_watch(void *user, rpc_call *call, const uint8_t *msg, size_t len)
{
    health *h = user;
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
    if (!req) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "cannot parse grpc.health.v1.HealthCheckRequest");
        return;
    }
    watcher *w = calloc(1, sizeof *w);
    if (w) w->service = strdup(req->service);
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    if (!w || !w->service) {
        free(w);
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "health: out of memory");
        return;
    }
    w->call = call;

    pthread_mutex_lock(&h->mu);
    watchers_prune_locked(h);
    w->sent = service_status(h, w->service);
    bool ok = response_send(call, w->sent) == IFN_OK;
    if (ok && !h->shut_down) {
        w->next = h->watchers;
        h->watchers = w;
        w = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    if (w) {
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, ok ? "the server is shutting down" : "health: cannot answer");
        watcher_free(w);
    }
}

ifn_status health_create(health **out)
{
    *out = NULL;
    health *h = calloc(1, sizeof *h);
    if (h) {
        h->cap_services = 4;
        h->services = calloc((size_t)h->cap_services, sizeof *h->services);
    }
    if (h && h->services) h->services[0].name = strdup("");
    if (!h || !h->services || !h->services[0].name) {
        if (h) free(h->services);
        free(h);
        return ifn_error_set(IFN_ERR_NOMEM, "no memory for the health service");
    }
    h->services[0].status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    h->n_services = 1;
    pthread_mutex_init(&h->mu, NULL);
    *out = h;
    return IFN_OK;
}

void health_methods(health *h, rpc_method out[2])
{
    out[0] = (rpc_method){ .path = "/grpc.health.v1.Health/Check", .kind = RPC_UNARY, .is_public = true,
                           .on_cq_thread = true, .handler = health_on_check, .user = h };
    out[1] = (rpc_method){ .path = "/grpc.health.v1.Health/Watch", .kind = RPC_SERVER_STREAMING, .is_public = true,
                           .on_cq_thread = true, .handler = health_on_watch, .user = h };
}

ifn_status health_set(health *h, const char *service, bool serving)
{
    serving_status status = serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    ifn_status st = IFN_OK;
    pthread_mutex_lock(&h->mu);
    service_entry *e = h->shut_down ? NULL : service_find(h, service);
    if (!h->shut_down && !e) {
        char *name = strdup(service);
        if (name && h->n_services == h->cap_services) {
            service_entry *bigger = realloc(h->services, 2 * (size_t)h->cap_services * sizeof *bigger);
            if (bigger) {
                h->services = bigger;
                h->cap_services *= 2;
            }
        }
        if (name && h->n_services < h->cap_services) {
            e = &h->services[h->n_services++];
            e->name = name;
            e->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        } else {
            free(name);
            st = ifn_error_set(IFN_ERR_NOMEM, "no memory to add health service \"%s\"", service);
        }
    }
    if (e) {
        e->status = status;
        watchers_prune_locked(h);
        watchers_push_locked(h, service);
    }
    pthread_mutex_unlock(&h->mu);
    return st;
}

void health_shutdown(health *h)
{
    pthread_mutex_lock(&h->mu);
    if (h->shut_down) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    h->shut_down = true;
    for (int i = 0; i < h->n_services; i++)
        h->services[i].status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    while (h->watchers) {
        watcher *w = h->watchers;
        h->watchers = w->next;
        serving_status now = service_status(h, w->service);
        if (w->sent != now) response_send(w->call, now);
        rpc_call_finish(w->call, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
        watcher_free(w);
    }
    pthread_mutex_unlock(&h->mu);
}

void health_destroy(health *h)
{
    if (!h) return;
    health_shutdown(h);
    for (int i = 0; i < h->n_services; i++) free(h->services[i].name);
    free(h->services);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
