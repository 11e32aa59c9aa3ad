#!/usr/bin/env python3
"""rpc_server and the health service against a real client (Debian's python3-grpcio).

Starts rpc_echo_server (see its header for the methods) and checks: unary and streaming calls,
bidirectional streams (answers interleaved with requests, in order; the end of the client's
stream; the server ending first; a client cancel and a message over the limit mid-stream),
32 concurrent calls, UNIMPLEMENTED for unknown paths, the bearer token, the public health
service (Check, Watch and pushed transitions), client cancels and deadlines seen by the server,
the message size limit both ways, TLS with a self-signed certificate made by openssl, start-up
errors that name the address or the file, and a graceful shutdown on SIGTERM.

The health stubs are generated at test time from Debian's grpc-proto with grpc_tools.protoc.
"""
import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from grpc_stubs import compile_stubs  # noqa: E402

TOKEN = "s3cret-token"
AUTH = [("authorization", "Bearer " + TOKEN)]
MAX_BYTES = 65536
GRACE = 2.0
TIMEOUT = 10  # seconds, for every call that should answer

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def expect_code(fn, code, what, details_has=None):
    try:
        fn()
    except grpc.RpcError as e:
        ok = e.code() == code and (details_has is None or details_has in (e.details() or ""))
        return check(ok, f"{what}: want {code} ({details_has}), got {e.code()} {e.details()!r}")
    return check(False, f"{what}: want {code}, the call succeeded")


class Server:
    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(line.split()[1])

    def stop(self, timeout=15):
        """SIGTERM; returns (exit code, stdout rest, stderr, seconds)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            return None, out, err, time.monotonic() - t0
        return self.proc.returncode, out, err, time.monotonic() - t0


def sanitizer_clean(err, what):
    """Under INFERNODE_SANITIZE=ON the server reports leaks and errors on stderr."""
    return check("Sanitizer" not in err and "runtime error" not in err, f"{what}: sanitizer report:\n{err}")


def plain_channel(port):
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])


class Events:
    """The server's event log, kept across reads (each read clears the server's copy)."""

    def __init__(self, channel):
        self.call = channel.unary_unary("/test.Echo/Events")
        self.lines = []

    def wait_for(self, prefix, timeout=5.0):
        end = time.monotonic() + timeout
        while True:
            self.lines += [l for l in self.call(b"", metadata=AUTH, timeout=TIMEOUT).decode().split("\n") if l]
            hit = [l for l in self.lines if l.startswith(prefix)]
            if hit or time.monotonic() > end:
                return hit[0] if hit else None
            time.sleep(0.05)


def test_calls(ch):
    unary = ch.unary_unary("/test.Echo/Unary")
    check(unary(b"hello", metadata=AUTH, timeout=TIMEOUT) == b"hello", "unary echo")
    check(unary(b"", metadata=AUTH, timeout=TIMEOUT) == b"", "unary echo of an empty message")
    blob = os.urandom(60000)
    check(unary(blob, metadata=AUTH, timeout=TIMEOUT) == blob, "unary echo of 60000 random bytes")

    stream = ch.unary_stream("/test.Echo/Stream")
    got = list(stream(b"5 20 abc", metadata=AUTH, timeout=TIMEOUT))
    check(got == [f"abc {i}".encode() for i in range(5)], f"stream of 5 in order: {got}")
    check(list(stream(b"0 0 none", metadata=AUTH, timeout=TIMEOUT)) == [], "stream of 0 messages")
    got = list(stream(b"2000 0 burst", metadata=AUTH, timeout=TIMEOUT))
    check(got == [f"burst {i}".encode() for i in range(2000)], f"burst of 2000 queued messages in order: {len(got)}")
    expect_code(lambda: list(stream(b"garbage", metadata=AUTH, timeout=TIMEOUT)), grpc.StatusCode.INVALID_ARGUMENT,
                "stream with a bad request", "COUNT")

    results = [None] * 32

    def one(i):
        try:
            if i % 2:
                results[i] = unary(f"u{i}".encode(), metadata=AUTH, timeout=TIMEOUT) == f"u{i}".encode()
            else:
                want = [f"s{i} {k}".encode() for k in range(4)]
                results[i] = list(stream(f"4 10 s{i}".encode(), metadata=AUTH, timeout=TIMEOUT)) == want
        except grpc.RpcError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(r is True for r in results), f"32 concurrent calls: {results}")

    expect_code(lambda: ch.unary_unary("/nope.Service/Missing")(b"x", metadata=AUTH, timeout=TIMEOUT),
                grpc.StatusCode.UNIMPLEMENTED, "unknown method", "/nope.Service/Missing")


def test_bidi(ch, events):
    chat = ch.stream_stream("/test.Echo/Chat")
    got = list(chat(iter([b"a", b"bb", b"", b"ccc"]), metadata=AUTH, timeout=TIMEOUT))
    check(got == [b"a!", b"bb!", b"!", b"ccc!", b"end after 4"], f"bidi: four messages and the end: {got}")
    check(list(chat(iter([]), metadata=AUTH, timeout=TIMEOUT)) == [b"end after 0"], "bidi: no message")
    got = list(chat(iter([b"x", b"finish", b"never seen"]), metadata=AUTH, timeout=TIMEOUT))
    check(got == [b"x!", b"finished after 1"], f"bidi: the server ends first: {got}")

    # Interleaved: each answer arrives before the next request is sent.
    requests = queue.Queue()
    call = chat(iter(requests.get, None), metadata=AUTH, timeout=TIMEOUT)
    answers = []
    for word in (b"one", b"two", b"three"):
        requests.put(word)
        answers.append(next(call))
    requests.put(None)
    answers += list(call)
    check(answers == [b"one!", b"two!", b"three!", b"end after 3"], f"bidi: interleaved: {answers}")

    # A client cancel mid-stream: the handler sees the end with the call cancelled.
    requests = queue.Queue()
    call = chat(iter(requests.get, None), metadata=AUTH, timeout=TIMEOUT)
    requests.put(b"q")
    check(next(call) == b"q!", "bidi: first answer before the cancel")
    call.cancel()
    requests.put(None)
    check(events.wait_for("chat broken after 1") is not None, f"bidi: cancel not seen by the handler: {events.lines}")

    # A message over the limit mid-stream: RESOURCE_EXHAUSTED from the server, handler told.
    big = b"y" * (MAX_BYTES + 100)
    expect_code(lambda: list(chat(iter([b"ok", b"ok2", big, b"after"]), metadata=AUTH, timeout=TIMEOUT)),
                grpc.StatusCode.RESOURCE_EXHAUSTED, "bidi: a message over the limit", "limit")
    check(events.wait_for("chat broken after 2") is not None, "bidi: the handler did not get the end after the limit")
    expect_code(lambda: list(chat(iter([b"a"]), timeout=TIMEOUT)), grpc.StatusCode.UNAUTHENTICATED,
                "bidi without the token")
    results = [None] * 16

    def one(i):
        words = [f"c{i}-{k}".encode() for k in range(5)]
        try:
            results[i] = list(chat(iter(words), metadata=AUTH, timeout=TIMEOUT)) == \
                [w + b"!" for w in words] + [b"end after 5"]
        except grpc.RpcError as e:
            results[i] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(r is True for r in results), f"bidi: 16 concurrent streams: {results}")


def test_auth(ch):
    unary = ch.unary_unary("/test.Echo/Unary")
    expect_code(lambda: unary(b"x", timeout=TIMEOUT), grpc.StatusCode.UNAUTHENTICATED, "no token")
    expect_code(lambda: unary(b"x", metadata=[("authorization", "Bearer wrong")], timeout=TIMEOUT),
                grpc.StatusCode.UNAUTHENTICATED, "wrong token")
    expect_code(lambda: unary(b"x", metadata=[("authorization", TOKEN)], timeout=TIMEOUT),
                grpc.StatusCode.UNAUTHENTICATED, "token without 'Bearer '")
    expect_code(lambda: list(ch.unary_stream("/test.Echo/Stream")(b"1 0 a", timeout=TIMEOUT)),
                grpc.StatusCode.UNAUTHENTICATED, "streaming method without a token")
    check(unary(b"ok", metadata=AUTH, timeout=TIMEOUT) == b"ok", "right token")


def test_health(ch, pb, pb_grpc):
    S = pb.HealthCheckResponse
    health = pb_grpc.HealthStub(ch)
    set_health = ch.unary_unary("/test.Echo/SetHealth")
    check(health.Check(pb.HealthCheckRequest(service=""), timeout=TIMEOUT).status == S.SERVING,
          "health Check of the server without a token")
    expect_code(lambda: health.Check(pb.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT),
                grpc.StatusCode.NOT_FOUND, "health Check of an unknown service", "no.such.Service")

    watch = health.Watch(pb.HealthCheckRequest(service="infer"), timeout=TIMEOUT)
    check(next(watch).status == S.SERVICE_UNKNOWN, "Watch of a service not set yet: SERVICE_UNKNOWN")
    set_health(b"1 infer", metadata=AUTH, timeout=TIMEOUT)
    check(next(watch).status == S.SERVING, "Watch: SERVING pushed")
    check(health.Check(pb.HealthCheckRequest(service="infer"), timeout=TIMEOUT).status == S.SERVING,
          "Check after set SERVING")
    set_health(b"1 infer", metadata=AUTH, timeout=TIMEOUT)  # no change: nothing pushed
    set_health(b"0 infer", metadata=AUTH, timeout=TIMEOUT)
    check(next(watch).status == S.NOT_SERVING, "Watch: SERVING -> NOT_SERVING pushed (no duplicate SERVING)")
    check(health.Check(pb.HealthCheckRequest(service="infer"), timeout=TIMEOUT).status == S.NOT_SERVING,
          "Check after set NOT_SERVING")
    watch.cancel()

    # A watcher of the whole server sees it flip and flip back; a cancelled one is dropped.
    whole = health.Watch(pb.HealthCheckRequest(service=""), timeout=TIMEOUT)
    check(next(whole).status == S.SERVING, "Watch of the server: SERVING")
    for _ in range(5):  # watchers that go away between changes do not pile up
        w = health.Watch(pb.HealthCheckRequest(service=""), timeout=TIMEOUT)
        next(w)
        w.cancel()
    set_health(b"0", metadata=AUTH, timeout=TIMEOUT)
    check(next(whole).status == S.NOT_SERVING, "Watch of the server: NOT_SERVING pushed")
    set_health(b"1", metadata=AUTH, timeout=TIMEOUT)
    check(next(whole).status == S.SERVING, "Watch of the server: SERVING pushed again")
    whole.cancel()


def test_cancel_and_deadline(ch, events):
    hang = ch.unary_unary("/test.Echo/Hang")
    fut = hang.future(b"c1", metadata=AUTH)
    time.sleep(0.3)
    fut.cancel()
    line = events.wait_for("hang c1 ")
    check(line == "hang c1 cancel inf", f"server saw the client cancel (no deadline): {line!r}")
    fut = hang.future(b"c2", metadata=AUTH, timeout=5)
    time.sleep(0.3)
    fut.cancel()
    line = events.wait_for("hang c2 ")
    check(line == "hang c2 cancel 5.0", f"server saw the client cancel well before its deadline: {line!r}")

    t0 = time.monotonic()
    expect_code(lambda: hang(b"d1", metadata=AUTH, timeout=0.5), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline")
    line = events.wait_for("hang d1 ")
    ok = line is not None and line.split()[2] == "deadline" and 0.2 < float(line.split()[3]) <= 0.5
    check(ok, f"server saw the deadline pass, with ~0.5 s left at the start: {line!r}")
    check(time.monotonic() - t0 < 3, "deadline detected promptly")

    it = ch.unary_stream("/test.Echo/Stream")(b"1000 5 sc", metadata=AUTH, timeout=TIMEOUT)
    for _ in range(3):
        next(it)
    it.cancel()
    line = events.wait_for("stream sc cancelled")
    check(line is not None, "server saw a streaming call cancelled mid-way")

    # Cancelled with thousands of messages still queued: they are dropped, the server goes on.
    it = ch.unary_stream("/test.Echo/Stream")(b"50000 0 flood", metadata=AUTH, timeout=TIMEOUT)
    next(it)
    it.cancel()
    check(ch.unary_unary("/test.Echo/Unary")(b"after", metadata=AUTH, timeout=TIMEOUT) == b"after",
          "server serves after a cancel with a full send queue")


def test_limits(ch):
    unary = ch.unary_unary("/test.Echo/Unary")
    grow = ch.unary_unary("/test.Echo/Grow")
    big = b"y" * (MAX_BYTES + 100)
    expect_code(lambda: unary(big, metadata=AUTH, timeout=TIMEOUT), grpc.StatusCode.RESOURCE_EXHAUSTED,
                "request over the receive limit")
    expect_code(lambda: grow(str(MAX_BYTES + 100).encode(), metadata=AUTH, timeout=TIMEOUT),
                grpc.StatusCode.RESOURCE_EXHAUSTED, "answer over the send limit")
    check(len(grow(str(MAX_BYTES - 100).encode(), metadata=AUTH, timeout=TIMEOUT)) == MAX_BYTES - 100,
          "answer under the send limit")
    check(unary(b"still", metadata=AUTH, timeout=TIMEOUT) == b"still", "server still serves after limit errors")


def test_graceful_shutdown(server, ch, pb, pb_grpc):
    S = pb.HealthCheckResponse
    watch = pb_grpc.HealthStub(ch).Watch(pb.HealthCheckRequest(service=""), timeout=TIMEOUT)
    check(next(watch).status == S.SERVING, "Watch before shutdown")
    stream = ch.unary_stream("/test.Echo/Stream")(b"8 100 g", metadata=AUTH, timeout=TIMEOUT)
    hang = ch.unary_unary("/test.Echo/Hang").future(b"s1 hold", metadata=AUTH)
    first = next(stream)
    code, out, err, secs = server.stop()
    rest = [first]
    try:
        rest += list(stream)
        stream_ok = True
    except grpc.RpcError as e:
        stream_ok = e
    check(stream_ok is True and rest == [f"g {i}".encode() for i in range(8)],
          f"a stream in flight runs to its end within the grace: {stream_ok} {rest}")
    got = []
    try:
        for m in watch:
            got.append(m.status)
        watch_end = grpc.StatusCode.OK
    except grpc.RpcError as e:
        watch_end = e.code()
    check(got == [S.NOT_SERVING] and watch_end == grpc.StatusCode.UNAVAILABLE,
          f"Watch on shutdown: NOT_SERVING then UNAVAILABLE (got {got}, {watch_end})")
    try:
        hang.result(timeout=TIMEOUT)
        check(False, "a call that never answers ends when the grace runs out")
    except grpc.RpcError as e:
        check(e.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE),
              f"a call that never answers is cancelled after the grace: {e.code()}")
    check(code == 0, f"server exits 0 on SIGTERM (got {code}); stderr:\n{err}")
    check(GRACE - 0.5 < secs < GRACE + 3, f"shutdown waited about the grace for the hanging call: {secs:.2f} s")
    check("held s1: send cancelled, finished\nstopped" in out,
          f"a call held past rpc_server_shutdown refuses sends, then finishes before destroy: {out!r}")
    sanitizer_clean(err, "graceful shutdown")


def test_idle_shutdown(binary):
    # An idle client connection does not hold the shutdown for the grace period.
    server = Server(binary, "--grace", "10")
    ch = plain_channel(server.port)
    ch.unary_unary("/test.Echo/Unary")(b"x", timeout=TIMEOUT)
    code, _, err, secs = server.stop()
    check(code == 0 and secs < 2, f"shutdown with only an idle connection is quick: exit {code}, {secs:.2f} s {err}")
    sanitizer_clean(err, "idle shutdown")
    ch.close()


def test_startup_errors(binary, port_in_use, work):
    def fails(args, needle, what):
        p = subprocess.run([binary, *args], capture_output=True, text=True, timeout=TIMEOUT)
        check(p.returncode == 1 and needle in p.stderr, f"{what}: exit {p.returncode}, stderr {p.stderr!r}")
        sanitizer_clean(p.stderr, what)

    fails(["--addr", f"127.0.0.1:{port_in_use}"], f"127.0.0.1:{port_in_use}", "bind to a port in use names it")
    missing = os.path.join(work, "missing.pem")
    fails(["--tls-cert", missing, "--tls-key", missing], missing, "missing certificate file is named")
    junk = os.path.join(work, "junk.pem")
    with open(junk, "w") as f:
        f.write("not a certificate\n")
    fails(["--tls-cert", junk, "--tls-key", junk], junk, "non-PEM certificate file is named")
    fails(["--tls-cert", junk], "both", "certificate without key")


def test_tls(binary, work, pb, pb_grpc):
    if not shutil.which("openssl"):
        print("SKIP: TLS part (openssl not found)", flush=True)
        return
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    other_key = os.path.join(work, "other_key.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", other_key], check=True, capture_output=True)
    p = subprocess.run([binary, "--tls-cert", cert, "--tls-key", other_key], capture_output=True, text=True,
                       timeout=TIMEOUT)
    check(p.returncode == 1 and other_key in p.stderr and "valid pair" in p.stderr,
          f"a key that does not match the certificate is refused at start: {p.returncode} {p.stderr!r}")
    sanitizer_clean(p.stderr, "mismatched TLS key")

    server = Server(binary, "--tls-cert", cert, "--tls-key", key)
    with open(cert, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ch = grpc.secure_channel(f"localhost:{server.port}", creds, options=[("grpc.enable_http_proxy", 0)])
    check(ch.unary_unary("/test.Echo/Unary")(b"over tls", timeout=TIMEOUT) == b"over tls",
          "TLS unary (no token configured: none needed)")
    check(pb_grpc.HealthStub(ch).Check(pb.HealthCheckRequest(), timeout=TIMEOUT).status == pb.HealthCheckResponse.SERVING,
          "TLS health Check")
    plain = plain_channel(server.port)
    expect_code(lambda: plain.unary_unary("/test.Echo/Unary")(b"x", timeout=3), grpc.StatusCode.UNAVAILABLE,
                "plaintext client to a TLS server")
    plain.close()
    ch.close()
    code, _, err, _ = server.stop()
    check(code == 0, f"TLS server exits 0 on SIGTERM: {code} {err}")
    sanitizer_clean(err, "TLS server")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="the rpc_echo_server binary")
    ap.add_argument("--grpc-proto", default="/usr/share/grpc-proto")
    args = ap.parse_args()
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="ifn_rpc_")
    try:
        pb, pb_grpc = compile_stubs(work, args.grpc_proto)[2:]
        server = Server(args.server, "--token", TOKEN, "--max-bytes", str(MAX_BYTES), "--grace", str(GRACE))
        ch = plain_channel(server.port)
        for name, fn in [("calls", lambda: test_calls(ch)), ("auth", lambda: test_auth(ch)),
                         ("health", lambda: test_health(ch, pb, pb_grpc)),
                         ("cancel and deadline", lambda: test_cancel_and_deadline(ch, Events(ch))),
                         ("limits", lambda: test_limits(ch)),
                         ("bidirectional streams", lambda: test_bidi(ch, Events(ch))),
                         ("startup errors", lambda: test_startup_errors(args.server, server.port, work)),
                         ("tls", lambda: test_tls(args.server, work, pb, pb_grpc)),
                         ("idle shutdown", lambda: test_idle_shutdown(args.server)),
                         ("graceful shutdown", lambda: test_graceful_shutdown(server, ch, pb, pb_grpc))]:
            t0 = time.monotonic()
            before = len(failures)
            try:
                fn()
            except Exception as e:  # a hung or broken part must not hide the others
                check(False, f"{name}: {type(e).__name__}: {e}")
            print(f"{'ok  ' if len(failures) == before else 'FAIL'} {name} ({time.monotonic() - t0:.2f} s)", flush=True)
        if server.proc.poll() is None:
            server.proc.kill()
        ch.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(failures)} failure(s) in {time.monotonic() - t_start:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
