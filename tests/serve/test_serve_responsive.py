"""Nothing slow on the completion-queue thread: health answers while a 4 MB Tokenize is being
tokenized and while 16 streams run (`infernode serve` under mpirun, python3-grpcio clients).

Health Check calls go out every 20 ms with a 1 s deadline (the kubelet's default) from their
own channel; every one must succeed, and the 99th percentile of their latency must stay under
250 ms, a bound generous enough for a loaded CI machine (the figures are printed). Before the
handlers left the completion-queue thread, a 3.9 MB Tokenize took 5.8 s there and every
health check sent meanwhile ended in DEADLINE_EXCEEDED.

usage: test_serve_responsive.py --infernode BIN --model GGUF --proto-dir DIR --grpc-proto DIR"""
import argparse
import concurrent.futures as cf
import random
import sys
import threading
import time

import grpc

import serve_util

FAILURES = []
P99_BOUND = 0.250


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def probe_health(addr, hpb, hpb_grpc, stop, out):
    """Health checks every 20 ms until stop; out gets (latency seconds or None on error)."""
    stub = hpb_grpc.HealthStub(grpc.insecure_channel(addr))
    while not stop.is_set():
        t = time.monotonic()
        try:
            stub.Check(hpb.HealthCheckRequest(service=""), timeout=1.0)
            out.append(time.monotonic() - t)
        except grpc.RpcError as e:
            out.append(None)
            print(f"health check failed: {e.code()} {e.details()!r}", flush=True)
        time.sleep(0.02)


def summarize(name, lat):
    ok = sorted(x for x in lat if x is not None)
    failed = sum(x is None for x in lat)
    check(len(lat) >= 5, f"{name}: only {len(lat)} health checks were made")
    check(failed == 0, f"{name}: {failed} of {len(lat)} health checks failed")
    if not ok:
        return
    p50, p99 = ok[len(ok) // 2], ok[min(len(ok) - 1, int(len(ok) * 0.99))]
    check(p99 < P99_BOUND, f"{name}: health p99 {p99 * 1e3:.0f} ms (bound {P99_BOUND * 1e3:.0f} ms)")
    print(f"{name}: {len(lat)} health checks, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
          f"max {ok[-1] * 1e3:.1f} ms", flush=True)


def while_probing(server, stubs, work):
    """Runs work() with health checks going; returns (work's result, latencies)."""
    _, _, hpb, hpb_grpc = stubs
    stop, lat = threading.Event(), []
    prober = threading.Thread(target=probe_health, args=(server.addr, hpb, hpb_grpc, stop, lat), daemon=True)
    prober.start()
    time.sleep(0.2)
    try:
        result = work()
    finally:
        stop.set()
        prober.join(5)
    return result, lat


def big_text(n_bytes):
    rng = random.Random(3)
    words = ["def", "return", "self", "import", "numpy", "x", "=", "(", ")", ":", "\n    ", "for", "in", "range",
             "if", "else", "print", "'hello'", "42", "#", "class", "lambda"]
    parts, size = [], 0
    while size < n_bytes:
        w = rng.choice(words) + " "
        parts.append(w)
        size += len(w)
    return "".join(parts)[:n_bytes]


def test_big_tokenize(server, stubs):
    pb, pb_grpc, _, _ = stubs
    inf = pb_grpc.InferenceStub(grpc.insecure_channel(server.addr))
    text = big_text(4 << 20)

    def work():
        t = time.monotonic()
        r = inf.Tokenize(pb.TokenizeRequest(text=text), timeout=300)
        return len(r.token_ids), time.monotonic() - t

    (n_ids, seconds), lat = while_probing(server, stubs, work)
    check(n_ids > 100000, f"4 MB Tokenize gave {n_ids} ids")
    print(f"a 4 MiB Tokenize: {n_ids} ids in {seconds:.2f} s", flush=True)
    summarize("during a 4 MiB Tokenize", lat)


def test_streams(server, stubs):
    pb, pb_grpc, _, _ = stubs
    inf = pb_grpc.InferenceStub(grpc.insecure_channel(server.addr))

    def one(i):
        req = pb.GenerateRequest(text=f"def f{i}(x):\n    ", max_new_tokens=96, ignore_eos=True)
        return sum(len(m.token_ids) for m in inf.GenerateStream(req, timeout=300))

    def work():
        with cf.ThreadPoolExecutor(16) as ex:
            return list(ex.map(one, range(16)))

    counts, lat = while_probing(server, stubs, work)
    check(counts == [96] * 16, f"16 streams gave {counts} tokens")
    summarize("during 16 streams", lat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    server = serve_util.Server(a.infernode, a.model, 1, ["--max-message-mib", "8", "--max-seqs", "16"])
    try:
        test_big_tokenize(server, stubs)
        test_streams(server, stubs)
    finally:
        server.kill()
    if FAILURES:
        print(f"{len(FAILURES)} failures", flush=True)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
