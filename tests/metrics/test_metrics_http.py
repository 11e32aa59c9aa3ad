"""GET /metrics from metrics_server (threads updating a registry while it serves) parsed by
the Prometheus project's own Python parser (Debian's python3-prometheus-client) as the
independent reference, plus the exposition rules that parser does not enforce: a family's
HELP and TYPE come before its samples, buckets are cumulative and end in le="+Inf", _count
equals the +Inf bucket. Scrapes made while the threads run must parse and be consistent; the
last one must equal what the update pattern adds up to.

usage: test_metrics_http.py METRICS_SERVER"""
import math
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

THREADS, ITERATIONS = 4, 20000
# Keep in step with metrics_server.c.
CODES = ["OK", "INVALID_ARGUMENT", 'quote " backslash \\ newline \n end', "unicode \u00e9\u2713"]
BOUNDS = [0.005, 0.01, 0.1, 1, 10]
OBSERVED = [0.001, 0.005, 0.0075, 0.01, 0.05, 0.5, 1, 5, 10, 50]
QUEUE_HELP = "Requests waiting.\nA second line with a \\ backslash."

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL", msg)


def expected():
    requests = {c: 0 for c in CODES}
    observations = []
    for t in range(THREADS):
        for i in range(ITERATIONS):
            requests[CODES[(t + i) % len(CODES)]] += 1
            observations.append(OBSERVED[(7 * t + i) % len(OBSERVED)])
    buckets = [sum(1 for v in observations if v <= b) for b in BOUNDS] + [len(observations)]
    return {
        "requests": requests,
        "tokens": 0.5 * THREADS * ITERATIONS,
        "depth": 42.0,
        "buckets": buckets,
        "sum": math.fsum(observations),
        "count": len(observations),
    }


def fetch(port, path, method="GET"):
    """(status, content type, body) of one request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8")


def check_layout(text):
    """Rules of the text format the reference parser is lenient about."""
    described = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            described.add(("HELP", line.split(" ")[2]))
        elif line.startswith("# TYPE "):
            name, kind = line.split(" ")[2:4]
            check(("HELP", name) in described, f"TYPE before HELP for {name}")
            described.add(("TYPE", name))
            check(kind in ("counter", "gauge", "histogram"), f"unknown type {kind}")
            check(kind != "counter" or name.endswith("_total"), f"counter {name} does not end in _total")
        elif line:
            name = line.split("{")[0].split(" ")[0]
            family = next((f for f in (name, name.rsplit("_", 1)[0]) if ("TYPE", f) in described), None)
            check(family is not None, f"sample before its TYPE line: {line!r}")
    check(text.endswith("\n"), "the exposition must end with a newline")


def parse(text):
    """{family name: family} from the reference parser, with the consistency checks."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families.get("ifn_request_seconds")
    if hist is None:
        check(False, "no ifn_request_seconds family")
        return families
    buckets = [s for s in hist.samples if s.name == "ifn_request_seconds_bucket"]
    les = [float(s.labels["le"]) for s in buckets]
    check(les == BOUNDS + [math.inf], f"bucket bounds {les}")
    counts = [s.value for s in buckets]
    check(all(a <= b for a, b in zip(counts, counts[1:])), f"buckets not cumulative: {counts}")
    count = [s.value for s in hist.samples if s.name == "ifn_request_seconds_count"]
    check(count == counts[-1:], f"_count {count} differs from the +Inf bucket {counts[-1:]}")
    return families


def sample_value(families, family, sample, labels=None):
    for s in families[family].samples:
        if s.name == sample and s.labels == (labels or {}):
            return s.value
    return None


def check_final(text):
    check_layout(text)
    families = parse(text)
    want = expected()
    check(set(families) == {"ifn_requests", "ifn_generated_tokens", "ifn_queue_depth", "ifn_request_seconds"},
          f"families {sorted(families)}")
    check(families["ifn_requests"].type == "counter", "ifn_requests_total is not a counter")
    check(families["ifn_request_seconds"].type == "histogram", "ifn_request_seconds is not a histogram")
    check(families["ifn_queue_depth"].type == "gauge", "ifn_queue_depth is not a gauge")
    check(families["ifn_queue_depth"].documentation == QUEUE_HELP,
          f"HELP text came back as {families['ifn_queue_depth'].documentation!r}")
    got_codes = {s.labels["code"]: s.value for s in families["ifn_requests"].samples}
    check(got_codes == {c: float(n) for c, n in want["requests"].items()},
          f"ifn_requests_total by code {got_codes}, expected {want['requests']}")
    tokens = sample_value(families, "ifn_generated_tokens", "ifn_generated_tokens_total")
    check(tokens == want["tokens"], f"ifn_generated_tokens_total {tokens}, expected {want['tokens']}")
    depth = sample_value(families, "ifn_queue_depth", "ifn_queue_depth")
    check(depth == want["depth"], f"ifn_queue_depth {depth}")
    buckets = [s.value for s in families["ifn_request_seconds"].samples if s.name.endswith("_bucket")]
    check(buckets == [float(b) for b in want["buckets"]], f"buckets {buckets}, expected {want['buckets']}")
    total = sample_value(families, "ifn_request_seconds", "ifn_request_seconds_sum")
    check(total is not None and math.isclose(total, want["sum"], rel_tol=1e-12),
          f"ifn_request_seconds_sum {total}, expected {want['sum']}")
    count = sample_value(families, "ifn_request_seconds", "ifn_request_seconds_count")
    check(count == want["count"], f"ifn_request_seconds_count {count}, expected {want['count']}")


def main():
    server = subprocess.Popen([sys.argv[1], str(THREADS), str(ITERATIONS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in server.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=10)
        check(first.startswith("port "), f"first line {first!r}")
        port = int(first.split()[1])
        check(0 < port < 65536, f"port {port}")

        # Scrapes while the threads update: each must parse and be consistent, counters
        # never go down between scrapes.
        scrapes, last_tokens, done = 0, 0.0, False
        deadline = time.monotonic() + 30
        while not done and time.monotonic() < deadline:
            try:
                done = lines.get_nowait() == "done"
            except queue.Empty:
                pass
            status, _, text = fetch(port, "/metrics")
            check(status == 200, f"scrape status {status}")
            families = parse(text)
            tokens = sample_value(families, "ifn_generated_tokens", "ifn_generated_tokens_total")
            check(tokens is not None and tokens >= last_tokens, f"tokens went from {last_tokens} to {tokens}")
            last_tokens = tokens or 0.0
            scrapes += 1
        check(done, "the update threads did not finish within 30 s")
        print(f"{scrapes} scrapes during and after the updates")

        status, ctype, text = fetch(port, "/metrics")
        check(status == 200, f"GET /metrics: {status}")
        check(ctype.startswith("text/plain") and "version=0.0.4" in ctype, f"Content-Type {ctype!r}")
        check_final(text)
        status, _, query_text = fetch(port, "/metrics?format=text")
        check(status == 200 and query_text == text, "a query string must not change the answer")
        for path in ("/", "/metric", "/metrics/", "/metricsx", "/other"):
            status, _, _ = fetch(port, path)
            check(status == 404, f"GET {path}: {status}, expected 404")
        status, _, _ = fetch(port, "/metrics", method="POST")
        check(status == 405, f"POST /metrics: {status}, expected 405")
        status, _, body = fetch(port, "/metrics", method="HEAD")
        check(status == 200 and body == "", f"HEAD /metrics: {status} with {len(body)} bytes")
    finally:
        server.stdin.close()
        try:
            rc = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            rc = "killed"
    check(rc == 0, f"metrics_server exited with {rc}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("metrics http: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
