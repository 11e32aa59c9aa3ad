/* One status type for the whole project (NCCL's ncclResult_t, ggml's ggml_status).
 *
 * Library functions return an ifn_status and, on failure, leave a human-readable detail in a
 * thread-local "last error" string. Only main() decides to exit. During teardown the first
 * error is kept: ifn_error_set() does not overwrite a detail that is already pending unless
 * the caller cleared it with ifn_error_clear(). */
#ifndef IFN_STATUS_H
#define IFN_STATUS_H

typedef enum {
    IFN_OK = 0,
    IFN_ERR_INVALID_ARG,   /* a caller passed something out of range or malformed */
    IFN_ERR_IO,            /* open/read/mmap failed */
    IFN_ERR_FORMAT,        /* a file's content is not what its format promises */
    IFN_ERR_UNSUPPORTED,   /* well-formed, but a feature this build does not handle */
    IFN_ERR_NOMEM,         /* allocation failed */
    IFN_ERR_RANGE,         /* a size or index exceeds a limit (context, vocab, ...) */
    IFN_ERR_NOT_FOUND,     /* a named thing (tensor, key, file) does not exist */
    IFN_ERR_INTERNAL,      /* an invariant broke: a bug in infernode */
    IFN_ERR_CANCELLED,     /* the operation's caller went away (a cancelled call) */
    IFN_ERR_BUSY,          /* the thing is in use by another operation (a session with a request running) */
    IFN_ERR_UNAVAILABLE,   /* the service is shutting down and takes no more work */
} ifn_status;

/* Stable lower-case name of a status, e.g. "format error". Never NULL. */
const char *ifn_status_str(ifn_status s);

/* Records a formatted detail for the calling thread and returns s, so that callers can write
 * `return ifn_error_set(IFN_ERR_FORMAT, "%s: ...", path);`. If a detail is already pending
 * (the first error of a teardown), it is kept and the new one is dropped. */
ifn_status ifn_error_set(ifn_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The pending detail of the calling thread, "" if none. Valid until the next set/clear. */
const char *ifn_error_detail(void);

/* Forgets the pending detail (call before starting an independent operation). */
void ifn_error_clear(void);

/* CHECK(expr): return the status of expr if it failed.
 * CHECK_GOTO(expr, st, label): store the status in st and jump to label if it failed. */
#define CHECK(expr)                                                                           \
    do {                                                                                      \
        ifn_status check_st_ = (expr);                                                        \
        if (check_st_ != IFN_OK) return check_st_;                                            \
    } while (0)

#define CHECK_GOTO(expr, st, label)                                                           \
    do {                                                                                      \
        (st) = (expr);                                                                        \
        if ((st) != IFN_OK) goto label;                                                       \
    } while (0)

#endif
