/* Prometheus metrics: a small thread-safe registry (its HTTP endpoint: metrics_http.h).
 *
 * The registry holds counters (optionally with one label, e.g. status="OK"), gauges and
 * histograms with fixed bucket bounds. Any thread may update them; one mutex guards the whole
 * registry, which is cheap next to the work being counted (one update per request or step).
 * metrics_render() writes the Prometheus text exposition format, version 0.0.4: a `# HELP`
 * and a `# TYPE` line per metric, counters named `*_total`, histograms as cumulative
 * `_bucket{le="..."}` lines ending in `le="+Inf"`, then `_sum` and `_count`.
 *
 * A call that fails changes no state and leaves the detail in ifn_error_detail(). */
#ifndef IFN_METRICS_H
#define IFN_METRICS_H

#include "status.h"

typedef struct metrics metrics;

/* Most series a labelled counter keeps; an update that would add one more fails with
 * IFN_ERR_RANGE, so clients cannot grow the registry without bound. */
#define METRICS_MAX_SERIES 256

ifn_status metrics_create(metrics **out);
/* Frees everything (stop its metrics_http first). NULL is a no-op. */
void metrics_destroy(metrics *m);

/* Registration. name must match [a-zA-Z_:][a-zA-Z0-9_:]* and be new to the registry; help is
 * free text. Counter names must end in "_total". label_name (NULL = no label) must match
 * [a-zA-Z_][a-zA-Z0-9_]* and not start with "__". On success *id names the metric in updates. */
ifn_status metrics_counter(metrics *m, const char *name, const char *help, const char *label_name, int *id);
ifn_status metrics_gauge(metrics *m, const char *name, const char *help, int *id);
/* bounds[n]: the buckets' finite upper bounds, strictly increasing (n >= 1); the "+Inf"
 * bucket is added. */
ifn_status metrics_histogram(metrics *m, const char *name, const char *help, const double *bounds, int n, int *id);

/* Adds v to a counter (v >= 0) or a gauge (any finite v). label_value is required for a
 * labelled counter (any UTF-8 text; it is escaped when rendered) and must be NULL otherwise. */
ifn_status metrics_add(metrics *m, int id, const char *label_value, double v);
/* Sets a gauge. */
ifn_status metrics_set(metrics *m, int id, double v);
/* Records one observation in a histogram (v finite). */
ifn_status metrics_observe(metrics *m, int id, double v);

/* The whole registry in the text format; *text is malloc'd, the caller frees it. */
ifn_status metrics_render(metrics *m, char **text);

#endif
