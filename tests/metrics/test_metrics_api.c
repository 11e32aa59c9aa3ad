/* The metrics registry's contract without HTTP: names, labels and bounds are checked, a failed
 * call changes nothing, the series cap holds, the rendered text is exact for a small registry,
 * and serving reports the port it bound or names the port it could not bind. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "metrics_http.h"

static int failures;

#define EXPECT(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

/* Expects `call` to fail with `want` and a detail containing `needle`. */
#define EXPECT_FAIL(call, want, needle)                                                                                \
    do {                                                                                                               \
        ifn_error_clear();                                                                                             \
        ifn_status st_ = (call);                                                                                       \
        EXPECT(st_ == (want), "%s: got %s, expected %s", #call, ifn_status_str(st_), ifn_status_str(want));            \
        EXPECT(strstr(ifn_error_detail(), (needle)) != NULL, "%s: detail '%s' lacks '%s'", #call, ifn_error_detail(), \
               (needle));                                                                                              \
    } while (0)

static char *render(metrics *m)
{
    char *text = NULL;
    ifn_error_clear();
    EXPECT(metrics_render(m, &text) == IFN_OK, "render: %s", ifn_error_detail());
    return text ? text : strdup("");
}

static void test_registration(void)
{
    metrics *m;
    EXPECT(metrics_create(&m) == IFN_OK, "create: %s", ifn_error_detail());
    int id, other;
    static const double bounds[] = { 0.5, 1, 2 };
    static const double unsorted[] = { 1, 1 };
    static const double inf[] = { 1, INFINITY };

    EXPECT_FAIL(metrics_counter(m, "requests", "h", NULL, &id), IFN_ERR_INVALID_ARG, "must end in _total");
    EXPECT_FAIL(metrics_counter(m, "9lives_total", "h", NULL, &id), IFN_ERR_INVALID_ARG, "not a valid metric name");
    EXPECT_FAIL(metrics_gauge(m, "a-b", "h", &id), IFN_ERR_INVALID_ARG, "'a-b' is not a valid metric name");
    EXPECT_FAIL(metrics_gauge(m, "", "h", &id), IFN_ERR_INVALID_ARG, "not a valid metric name");
    EXPECT_FAIL(metrics_counter(m, "x_total", "h", "__reserved", &id), IFN_ERR_INVALID_ARG, "not a valid label name");
    EXPECT_FAIL(metrics_counter(m, "x_total", "h", "with:colon", &id), IFN_ERR_INVALID_ARG, "not a valid label name");
    EXPECT_FAIL(metrics_gauge(m, "g", "bad \xff utf-8", &id), IFN_ERR_INVALID_ARG, "help must be UTF-8");
    EXPECT_FAIL(metrics_histogram(m, "h", "h", bounds, 0, &id), IFN_ERR_INVALID_ARG, "at least one bucket");
    EXPECT_FAIL(metrics_histogram(m, "h", "h", unsorted, 2, &id), IFN_ERR_INVALID_ARG, "increase strictly");
    EXPECT_FAIL(metrics_histogram(m, "h", "h", inf, 2, &id), IFN_ERR_INVALID_ARG, "not finite");
    EXPECT(id == -1, "a failed registration must give id -1, got %d", id);

    char *text = render(m);
    EXPECT(strcmp(text, "") == 0, "failed registrations must leave the registry empty, got:\n%s", text);
    free(text);

    EXPECT(metrics_gauge(m, "ns:gauge", "ok", &id) == IFN_OK, "gauge: %s", ifn_error_detail());
    EXPECT_FAIL(metrics_counter(m, "ns:gauge", "h", NULL, &other), IFN_ERR_INVALID_ARG, "must end in _total");
    EXPECT_FAIL(metrics_gauge(m, "ns:gauge", "again", &other), IFN_ERR_INVALID_ARG, "ns:gauge is already registered");
    EXPECT(metrics_histogram(m, "lat", "ok", bounds, 3, &other) == IFN_OK && other == id + 1, "histogram: %s",
           ifn_error_detail());
    metrics_destroy(m);
}

static void test_updates(void)
{
    metrics *m;
    EXPECT(metrics_create(&m) == IFN_OK, "create: %s", ifn_error_detail());
    int plain, labelled, gauge, hist;
    static const double bounds[] = { 0.5, 1, 2 };
    EXPECT(metrics_counter(m, "plain_total", "Plain.", NULL, &plain) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_counter(m, "calls_total", "Calls by code.", "code", &labelled) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_gauge(m, "depth", "Queue \\ depth\nsecond line.", &gauge) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_histogram(m, "lat_seconds", "Latency.", bounds, 3, &hist) == IFN_OK, "%s", ifn_error_detail());

    EXPECT_FAIL(metrics_add(m, plain, NULL, -1), IFN_ERR_INVALID_ARG, "counters only grow");
    EXPECT_FAIL(metrics_add(m, plain, NULL, NAN), IFN_ERR_INVALID_ARG, "cannot add");
    EXPECT_FAIL(metrics_add(m, plain, "x", 1), IFN_ERR_INVALID_ARG, "plain_total has no label");
    EXPECT_FAIL(metrics_add(m, labelled, NULL, 1), IFN_ERR_INVALID_ARG, "needs a value for its label code");
    EXPECT_FAIL(metrics_add(m, labelled, "bad \xc3", 1), IFN_ERR_INVALID_ARG, "UTF-8");
    EXPECT_FAIL(metrics_add(m, hist, NULL, 1), IFN_ERR_INVALID_ARG, "lat_seconds is not a counter or gauge");
    EXPECT_FAIL(metrics_add(m, 99, NULL, 1), IFN_ERR_INVALID_ARG, "no metric has id 99");
    EXPECT_FAIL(metrics_set(m, plain, 1), IFN_ERR_INVALID_ARG, "plain_total is not a gauge");
    EXPECT_FAIL(metrics_observe(m, gauge, 1), IFN_ERR_INVALID_ARG, "depth is not a histogram");
    EXPECT_FAIL(metrics_observe(m, hist, INFINITY), IFN_ERR_INVALID_ARG, "cannot observe");

    EXPECT(metrics_add(m, plain, NULL, 2.5) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_add(m, labelled, "OK", 3) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_add(m, labelled, "a\"b\\c\nd", 1) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_add(m, labelled, "OK", 1) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_set(m, gauge, 7) == IFN_OK, "%s", ifn_error_detail());
    EXPECT(metrics_add(m, gauge, NULL, -9.25) == IFN_OK, "%s", ifn_error_detail());
    static const double obs[] = { 0.25, 0.5, 0.75, 2, 3, -1 };
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        EXPECT(metrics_observe(m, hist, obs[i]) == IFN_OK, "%s", ifn_error_detail());

    static const char want[] = "# HELP plain_total Plain.\n"
                               "# TYPE plain_total counter\n"
                               "plain_total 2.5\n"
                               "# HELP calls_total Calls by code.\n"
                               "# TYPE calls_total counter\n"
                               "calls_total{code=\"OK\"} 4\n"
                               "calls_total{code=\"a\\\"b\\\\c\\nd\"} 1\n"
                               "# HELP depth Queue \\\\ depth\\nsecond line.\n"
                               "# TYPE depth gauge\n"
                               "depth -2.25\n"
                               "# HELP lat_seconds Latency.\n"
                               "# TYPE lat_seconds histogram\n"
                               "lat_seconds_bucket{le=\"0.5\"} 3\n"
                               "lat_seconds_bucket{le=\"1\"} 4\n"
                               "lat_seconds_bucket{le=\"2\"} 5\n"
                               "lat_seconds_bucket{le=\"+Inf\"} 6\n"
                               "lat_seconds_sum 5.5\n"
                               "lat_seconds_count 6\n";
    char *text = render(m);
    EXPECT(strcmp(text, want) == 0, "rendered text differs; got:\n%s\nexpected:\n%s", text, want);
    free(text);

    /* The series cap: new label values fail once it is reached, known ones still count. */
    char label[32];
    for (int i = 2; i < METRICS_MAX_SERIES; i++) {
        snprintf(label, sizeof label, "v%d", i);
        EXPECT(metrics_add(m, labelled, label, 1) == IFN_OK, "series %d: %s", i, ifn_error_detail());
    }
    EXPECT_FAIL(metrics_add(m, labelled, "one-too-many", 1), IFN_ERR_RANGE, "already has 256 series");
    EXPECT(metrics_add(m, labelled, "OK", 1) == IFN_OK, "a known series must still count: %s", ifn_error_detail());
    text = render(m);
    EXPECT(strstr(text, "calls_total{code=\"OK\"} 5\n") && !strstr(text, "one-too-many"), "after the cap:\n%.300s", text);
    free(text);
    metrics_destroy(m);
}

/* Integers print as integers (Prometheus reads both, people and simple scrapers want 10, not
 * 1e+01); other values as the shortest decimal that reads back the same. */
static void test_numbers(void)
{
    static const struct { double v; const char *text; } cases[] = {
        { 10, "10" }, { 112680, "112680" }, { 0, "0" }, { -0.0, "0" }, { -3, "-3" },
        { 9007199254740992.0, "9007199254740992" }, { 1e20, "100000000000000000000" }, { 1e25, "1e+25" },
        { 0.1, "0.1" }, { 2.5, "2.5" }, { 1.5e-7, "1.5e-07" }, { 1.0 / 3, "0.3333333333333333" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        metrics *m;
        int id;
        EXPECT(metrics_create(&m) == IFN_OK && metrics_gauge(m, "g", "h", &id) == IFN_OK, "%s", ifn_error_detail());
        EXPECT(metrics_set(m, id, cases[i].v) == IFN_OK, "%s", ifn_error_detail());
        char *text = render(m), want[64];
        snprintf(want, sizeof want, "\ng %s\n", cases[i].text);
        EXPECT(strstr(text, want) != NULL, "%.17g must render as '%s', got:\n%s", cases[i].v, cases[i].text, text);
        free(text);
        metrics_destroy(m);
    }
}

static void test_serve(void)
{
    metrics *m;
    metrics_http *a = NULL, *b = NULL;
    EXPECT(metrics_create(&m) == IFN_OK, "create: %s", ifn_error_detail());
    ifn_error_clear();
    EXPECT(metrics_http_start(m, &(metrics_http_options){ .port = 0 }, &a) == IFN_OK, "serve on port 0: %s",
           ifn_error_detail());
    int port = a ? metrics_http_port(a) : 0;
    EXPECT(port > 0 && port < 65536, "port 0 must give the real port, got %d", port);
    char needle[64];
    snprintf(needle, sizeof needle, "127.0.0.1:%d", port); /* no host: 127.0.0.1 */
    EXPECT_FAIL(metrics_http_start(m, &(metrics_http_options){ .host = "127.0.0.1", .port = port }, &b), IFN_ERR_IO,
                needle);
    EXPECT(b == NULL, "a failed start must leave no endpoint");
    EXPECT_FAIL(metrics_http_start(m, &(metrics_http_options){ .port = 70000 }, &b), IFN_ERR_INVALID_ARG,
                "port 70000 is out of range");
    EXPECT_FAIL(metrics_http_start(m, &(metrics_http_options){ .host = "not an address" }, &b), IFN_ERR_INVALID_ARG,
                "not an address");
    EXPECT_FAIL(metrics_http_start(m, &(metrics_http_options){ .tls_cert_file = "c.pem" }, &b), IFN_ERR_INVALID_ARG,
                "both a certificate and a key");
    EXPECT_FAIL(metrics_http_start(m, &(metrics_http_options){ .tls_cert_file = "/nonexistent/c.pem",
                                                               .tls_key_file = "/nonexistent/k.pem" }, &b),
                IFN_ERR_IO, "/nonexistent/c.pem");
    metrics_http_stop(a);
    metrics_destroy(m);
}

int main(void)
{
    test_registration();
    test_updates();
    test_numbers();
    test_serve();
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("metrics api: all checks passed\n");
    return 0;
}
