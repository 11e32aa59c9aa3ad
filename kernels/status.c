#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

const char *ifn_status_str(ifn_status s)
{
    switch (s) {
    case IFN_OK: return "ok";
    case IFN_ERR_INVALID_ARG: return "invalid argument";
    case IFN_ERR_IO: return "i/o error";
    case IFN_ERR_FORMAT: return "format error";
    case IFN_ERR_UNSUPPORTED: return "unsupported";
    case IFN_ERR_NOMEM: return "out of memory";
    case IFN_ERR_RANGE: return "out of range";
    case IFN_ERR_NOT_FOUND: return "not found";
    case IFN_ERR_INTERNAL: return "internal error";
    case IFN_ERR_CANCELLED: return "cancelled";
    case IFN_ERR_BUSY: return "busy";
    case IFN_ERR_UNAVAILABLE: return "unavailable";
    }
    return "unknown status";
}

ifn_status ifn_error_set(ifn_status s, const char *fmt, ...)
{
    if (last_error[0] != '\0') return s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

const char *ifn_error_detail(void) { return last_error; }

void ifn_error_clear(void) { last_error[0] = '\0'; }
