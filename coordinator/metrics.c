#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"

typedef enum { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_kind;

typedef struct {
    char *label_value;
    double value;
} metric_series;

typedef struct {
    metric_kind kind;
    char *name;
    char *help;
    char *label_name;       /* labelled counters only; NULL = one unlabelled value */
    double value;           /* unlabelled counter, gauge */
    metric_series *series;  /* [n_series], labelled counter */
    int n_series;
    double *bounds;         /* [n_bounds], histogram */
    uint64_t *buckets;      /* [n_bounds + 1], observations per bucket (not cumulative); last = +Inf */
    int n_bounds;
    double sum;
    uint64_t count;
} metric;

struct metrics {
    pthread_mutex_t mu;     /* guards everything below */
    metric *items;          /* [n_items], in registration order */
    int n_items;
    int cap_items;
};

/* ---- registry ------------------------------------------------------------------------- */

ifn_status metrics_create(metrics **out)
{
    *out = NULL;
    metrics *m = calloc(1, sizeof *m);
    if (!m) return ifn_error_set(IFN_ERR_NOMEM, "no memory for the metrics registry");
    int rc = pthread_mutex_init(&m->mu, NULL);
    if (rc != 0) {
        free(m);
        return ifn_error_set(IFN_ERR_INTERNAL, "metrics: pthread_mutex_init: %s", strerror(rc));
    }
    *out = m;
    return IFN_OK;
}

static void metric_free(metric *it)
{
    for (int i = 0; i < it->n_series; i++) free(it->series[i].label_value);
    free(it->series);
    free(it->bounds);
    free(it->buckets);
    free(it->label_name);
    free(it->help);
    free(it->name);
}

void metrics_destroy(metrics *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_items; i++) metric_free(&m->items[i]);
    free(m->items);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static bool is_name_char(char c, bool first, bool colon_ok)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
    if (c == ':') return colon_ok;
    return !first && c >= '0' && c <= '9';
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++)
        if (!is_name_char(*p, p == s, colon_ok)) return false;
    return true;
}

static bool valid_utf8(const char *s)
{
    size_t n = strlen(s);
    const unsigned char *p = (const unsigned char *)s;
    while (n > 0) {
        uint32_t cp;
        size_t len;
        if (unicode_utf8_classify(p, n, &cp, &len) != UTF8_VALID) return false;
        p += len;
        n -= len;
    }
    return true;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Checks what every metric needs; the caller holds m->mu. */
static ifn_status check_new_metric(const metrics *m, const char *name, const char *help)
{
    if (!valid_name(name, true))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: '%s' is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                             name ? name : "(null)");
    if (!help || !valid_utf8(help))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s: help must be UTF-8 text", name);
    for (int i = 0; i < m->n_items; i++)
        if (strcmp(m->items[i].name, name) == 0)
            return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s is already registered", name);
    return IFN_OK;
}

/* Appends *it (whose strings and arrays the registry then owns) and returns its id; the
 * caller holds m->mu. On failure nothing is kept and *it is left to the caller to free. */
static ifn_status append_metric(metrics *m, metric *it, int *id)
{
    if (m->n_items == m->cap_items) {
        int cap = m->cap_items ? 2 * m->cap_items : 16;
        metric *items = realloc(m->items, (size_t)cap * sizeof *items);
        if (!items) return ifn_error_set(IFN_ERR_NOMEM, "metrics: no memory for %s", it->name);
        m->items = items;
        m->cap_items = cap;
    }
    m->items[m->n_items] = *it;
    *id = m->n_items++;
    return IFN_OK;
}

static ifn_status register_metric(metrics *m, metric *it, int *id)
{
    pthread_mutex_lock(&m->mu);
    ifn_status st = check_new_metric(m, it->name, it->help);
    if (st == IFN_OK) st = append_metric(m, it, id);
    pthread_mutex_unlock(&m->mu);
    if (st != IFN_OK) metric_free(it);
    return st;
}

static ifn_status copy_names(metric *it, const char *name, const char *help)
{
    it->name = strdup(name ? name : "");
    it->help = strdup(help ? help : "");
    if (!it->name || !it->help) return ifn_error_set(IFN_ERR_NOMEM, "metrics: no memory for %s", name ? name : "a metric");
    return IFN_OK;
}

ifn_status metrics_counter(metrics *m, const char *name, const char *help, const char *label_name, int *id)
{
    *id = -1;
    if (name && !has_suffix(name, "_total"))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: counter %s: a counter's name must end in _total", name);
    if (label_name && (!valid_name(label_name, false) || strncmp(label_name, "__", 2) == 0))
        return ifn_error_set(IFN_ERR_INVALID_ARG,
                             "metrics: counter %s: '%s' is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                             name ? name : "(null)", label_name);
    metric it = { .kind = METRIC_COUNTER };
    ifn_status st = copy_names(&it, name, help);
    if (st == IFN_OK && label_name && !(it.label_name = strdup(label_name)))
        st = ifn_error_set(IFN_ERR_NOMEM, "metrics: no memory for %s", name);
    if (st != IFN_OK) {
        metric_free(&it);
        return st;
    }
    return register_metric(m, &it, id);
}

ifn_status metrics_gauge(metrics *m, const char *name, const char *help, int *id)
{
    *id = -1;
    metric it = { .kind = METRIC_GAUGE };
    ifn_status st = copy_names(&it, name, help);
    if (st != IFN_OK) {
        metric_free(&it);
        return st;
    }
    return register_metric(m, &it, id);
}

ifn_status metrics_histogram(metrics *m, const char *name, const char *help, const double *bounds, int n, int *id)
{
    *id = -1;
    const char *shown = name ? name : "(null)";
    if (n < 1 || !bounds) return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: histogram %s needs at least one bucket bound", shown);
    for (int i = 0; i < n; i++) {
        if (!isfinite(bounds[i]))
            return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: histogram %s: bound %d is not finite (+Inf is implied)", shown, i);
        if (i > 0 && !(bounds[i] > bounds[i - 1]))
            return ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: histogram %s: bounds must increase strictly (bound %d is %g after %g)",
                                 shown, i, bounds[i], bounds[i - 1]);
    }
    metric it = { .kind = METRIC_HISTOGRAM, .n_bounds = n };
    ifn_status st = copy_names(&it, name, help);
    if (st == IFN_OK) {
        it.bounds = malloc((size_t)n * sizeof *it.bounds);
        it.buckets = calloc((size_t)n + 1, sizeof *it.buckets);
        if (!it.bounds || !it.buckets) st = ifn_error_set(IFN_ERR_NOMEM, "metrics: no memory for %s", shown);
    }
    if (st != IFN_OK) {
        metric_free(&it);
        return st;
    }
    memcpy(it.bounds, bounds, (size_t)n * sizeof *bounds);
    return register_metric(m, &it, id);
}

/* ---- updates -------------------------------------------------------------------------- */

/* The metric with this id if it is of kind `kind` (or gauge too, when `gauge_ok`); the
 * caller holds m->mu. */
static metric *lookup(metrics *m, int id, metric_kind kind, bool gauge_ok, const char *op, ifn_status *st)
{
    if (id < 0 || id >= m->n_items) {
        *st = ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s: no metric has id %d", op, id);
        return NULL;
    }
    metric *it = &m->items[id];
    if (it->kind != kind && !(gauge_ok && it->kind == METRIC_GAUGE)) {
        *st = ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s: %s is not a %s", op, it->name,
                            kind == METRIC_HISTOGRAM ? "histogram" : kind == METRIC_GAUGE ? "gauge" : "counter or gauge");
        return NULL;
    }
    *st = IFN_OK;
    return it;
}

/* The value slot of a labelled counter's series, added if new; the caller holds m->mu. */
static double *series_slot(metric *it, const char *label_value, ifn_status *st)
{
    for (int i = 0; i < it->n_series; i++)
        if (strcmp(it->series[i].label_value, label_value) == 0) return &it->series[i].value;
    if (!valid_utf8(label_value)) {
        *st = ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s: label values must be UTF-8 text", it->name);
        return NULL;
    }
    if (it->n_series == METRICS_MAX_SERIES) {
        *st = ifn_error_set(IFN_ERR_RANGE, "metrics: %s already has %d series; not adding %s=\"%s\"", it->name,
                            METRICS_MAX_SERIES, it->label_name, label_value);
        return NULL;
    }
    metric_series *grown = realloc(it->series, (size_t)(it->n_series + 1) * sizeof *grown);
    char *copy = strdup(label_value);
    if (grown) it->series = grown;
    if (!grown || !copy) {
        free(copy);
        *st = ifn_error_set(IFN_ERR_NOMEM, "metrics: no memory for a series of %s", it->name);
        return NULL;
    }
    it->series[it->n_series] = (metric_series){ .label_value = copy, .value = 0.0 };
    return &it->series[it->n_series++].value;
}

ifn_status metrics_add(metrics *m, int id, const char *label_value, double v)
{
    ifn_status st;
    pthread_mutex_lock(&m->mu);
    metric *it = lookup(m, id, METRIC_COUNTER, true, "add", &st);
    double *slot = NULL;
    if (it) {
        if (!isfinite(v) || (it->kind == METRIC_COUNTER && v < 0))
            st = ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s: cannot add %g (%s)", it->name, v,
                               it->kind == METRIC_COUNTER ? "counters only grow" : "not finite");
        else if (!it->label_name != !label_value)
            st = ifn_error_set(IFN_ERR_INVALID_ARG, it->label_name ? "metrics: %s needs a value for its label %s"
                                                                   : "metrics: %s has no label%s",
                               it->name, it->label_name ? it->label_name : "");
        else
            slot = it->label_name ? series_slot(it, label_value, &st) : &it->value;
    }
    if (slot) *slot += v;
    pthread_mutex_unlock(&m->mu);
    return st;
}

ifn_status metrics_set(metrics *m, int id, double v)
{
    ifn_status st;
    pthread_mutex_lock(&m->mu);
    metric *it = lookup(m, id, METRIC_GAUGE, false, "set", &st);
    if (it) it->value = v;
    pthread_mutex_unlock(&m->mu);
    return st;
}

ifn_status metrics_observe(metrics *m, int id, double v)
{
    ifn_status st;
    pthread_mutex_lock(&m->mu);
    metric *it = lookup(m, id, METRIC_HISTOGRAM, false, "observe", &st);
    if (it && !isfinite(v)) {
        st = ifn_error_set(IFN_ERR_INVALID_ARG, "metrics: %s: cannot observe %g", it->name, v);
    } else if (it) {
        int b = 0;
        while (b < it->n_bounds && v > it->bounds[b]) b++; /* le: the first bound >= v */
        it->buckets[b]++;
        it->sum += v;
        it->count++;
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}

/* ---- the text exposition format ------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} text_buf;

static void buf_reserve(text_buf *b, size_t more)
{
    if (b->failed || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n);
    if (b->failed) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Writes s with backslash and newline escaped, and double quotes too when `quote` (label
 * values); HELP text escapes only the first two. */
static void buf_escaped(text_buf *b, const char *s, bool quote)
{
    buf_reserve(b, 2 * strlen(s));
    if (b->failed) return;
    for (; *s; s++) {
        if (*s == '\\') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = '\\';
        } else if (*s == '\n') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = 'n';
        } else if (*s == '"' && quote) {
            b->p[b->len++] = '\\';
            b->p[b->len++] = '"';
        } else {
            b->p[b->len++] = *s;
        }
    }
    b->p[b->len] = '\0';
}

/* Integers as integers (counters, token counts: 10, not 1e+01), other values as the shortest
 * decimal that reads back as v, and +Inf/-Inf/NaN as the format spells them. */
static void format_value(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e21) { /* below 1e21 "%.0f" has at most 22 characters */
        snprintf(out, 32, "%.0f", v == 0 ? 0.0 : v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void render_header(text_buf *b, const metric *it, const char *type)
{
    buf_printf(b, "# HELP %s ", it->name);
    buf_escaped(b, it->help, false);
    buf_printf(b, "\n# TYPE %s %s\n", it->name, type);
}

static void render_metric(text_buf *b, const metric *it)
{
    char num[32];
    switch (it->kind) {
    case METRIC_COUNTER:
        render_header(b, it, "counter");
        if (!it->label_name) {
            format_value(it->value, num);
            buf_printf(b, "%s %s\n", it->name, num);
        }
        for (int i = 0; it->label_name && i < it->n_series; i++) {
            buf_printf(b, "%s{%s=\"", it->name, it->label_name);
            buf_escaped(b, it->series[i].label_value, true);
            format_value(it->series[i].value, num);
            buf_printf(b, "\"} %s\n", num);
        }
        break;
    case METRIC_GAUGE:
        render_header(b, it, "gauge");
        format_value(it->value, num);
        buf_printf(b, "%s %s\n", it->name, num);
        break;
    case METRIC_HISTOGRAM: {
        render_header(b, it, "histogram");
        uint64_t cumulative = 0;
        for (int i = 0; i <= it->n_bounds; i++) {
            cumulative += it->buckets[i];
            if (i < it->n_bounds) format_value(it->bounds[i], num);
            else strcpy(num, "+Inf");
            buf_printf(b, "%s_bucket{le=\"%s\"} %llu\n", it->name, num, (unsigned long long)cumulative);
        }
        format_value(it->sum, num);
        buf_printf(b, "%s_sum %s\n%s_count %llu\n", it->name, num, it->name, (unsigned long long)it->count);
        break;
    }
    }
}

ifn_status metrics_render(metrics *m, char **text)
{
    *text = NULL;
    text_buf b = { 0 };
    buf_reserve(&b, 0);
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_items; i++) render_metric(&b, &m->items[i]);
    pthread_mutex_unlock(&m->mu);
    if (b.failed) {
        free(b.p);
        return ifn_error_set(IFN_ERR_NOMEM, "metrics: no memory to render the registry");
    }
    b.p[b.len] = '\0';
    *text = b.p;
    return IFN_OK;
}
