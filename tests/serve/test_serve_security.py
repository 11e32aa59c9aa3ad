"""The server's safe defaults and wire data (issue: security and robustness), through a real
`infernode serve` and Debian's python3-grpcio as the client.

- Addresses: with no --host, gRPC and /metrics listen on 127.0.0.1 only (read from the kernel's
  /proc/net/tcp, not from the server's log); --metrics-host moves /metrics alone.
- /metrics follows the gRPC port's security: with --tls-cert/--tls-key it is HTTPS with the
  same certificate (Python's ssl verifies it against that certificate as the CA; plain HTTP
  gets no answer), and with --auth-token-file it answers 401 without the bearer token.
- ModelInfo gives the model's file name, never its path.
- Detokenize never puts invalid UTF-8 in its string field (python's protobuf refuses such a
  message): text equals Python's own decode of text_bytes with errors="replace" (the Unicode
  "maximal subpart" practice) for every id of the vocabulary and for random id sequences.
- infernode_errors_total counts every non-OK status the server sends, by code: an unknown
  method (UNIMPLEMENTED), gRPC's own message-too-large (RESOURCE_EXHAUSTED), a bad token
  (UNAUTHENTICATED), a bad request (INVALID_ARGUMENT); every value that is an integer prints
  as one.
- --auth-token-file: the whole file is one token; an empty file, a NUL byte, a second line, a
  space or an oversized file is refused at start with exit 2 and a message naming the file and
  the problem.
"""
import argparse
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc

import serve_util

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def listen_addresses(port):
    """The local addresses of the TCP sockets listening on port, from /proc/net/tcp{,6}; an
    IPv4-mapped IPv6 address (gRPC's dual-stack socket) as its IPv4 address."""
    out = []
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(name).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, p = fields[1].split(":")
            if fields[3] == "0A" and int(p, 16) == port:  # 0A: TCP_LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    out.append(socket.inet_ntop(socket.AF_INET6, words).removeprefix("::ffff:"))
    return out


def metrics_text(port, scheme="http", token=None, context=None):
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def errors_by_code(text):
    return {m.group(1): m.group(2) for m in re.finditer(r'^infernode_errors_total\{code="([A-Z_]+)"\} (\S+)$', text, re.M)}


def check_integers(text):
    """Counters and token counts print as integers: no exponent on a whole number."""
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        value = line.rsplit(" ", 1)[1]
        if value in ("+Inf", "-Inf", "NaN"):
            continue
        v = float(value)
        if v == int(v) and abs(v) < 1e21:
            check(re.fullmatch(r"-?\d+", value) is not None, f"/metrics: the integer {v} prints as {value!r}")


def test_defaults(a, stubs):
    pb, pb_grpc, _, _ = stubs
    server = serve_util.Server(a.infernode, a.model, 1, ["--max-message-mib", "1"])
    try:
        check(listen_addresses(server.port) == ["127.0.0.1"],
              f"gRPC listens on {listen_addresses(server.port)}, expected 127.0.0.1 only")
        check(listen_addresses(server.metrics_port) == ["127.0.0.1"],
              f"/metrics listens on {listen_addresses(server.metrics_port)}, expected 127.0.0.1 only")
        channel = grpc.insecure_channel(server.addr)
        inf = pb_grpc.InferenceStub(channel)
        info = inf.ModelInfo(pb.ModelInfoRequest(), timeout=10)
        check(info.file_name == os.path.basename(a.model), f"ModelInfo.file_name {info.file_name!r}")
        check("/" not in str(info), "ModelInfo carries no path")
        test_detokenize(pb, inf, info.vocab_size)
        test_error_counts(pb, inf, channel, server)
    finally:
        server.kill()


def as_text(raw):
    """What Detokenize's text must be: Python's decode with errors="replace", NUL (which a C
    string cannot carry) as U+FFFD too."""
    return raw.decode("utf-8", errors="replace").replace("\0", "\ufffd")


def test_detokenize(pb, inf, vocab):
    invalid = []
    for i in range(vocab):
        d = inf.Detokenize(pb.DetokenizeRequest(token_ids=[i]), timeout=10)
        check(d.text == as_text(d.text_bytes), f"Detokenize([{i}]): {d.text!r} {d.text_bytes!r}")
        try:
            d.text_bytes.decode("utf-8")
        except UnicodeDecodeError:
            invalid.append(i)
    check(len(invalid) >= 64, f"only {len(invalid)} ids render to bytes that are not UTF-8: the test needs a byte vocabulary")
    rng = random.Random(7)
    pool = invalid + list(range(vocab))
    formed = 0
    for _ in range(300):
        ids = [rng.choice(invalid if rng.random() < 0.7 else pool) for _ in range(rng.randint(2, 6))]
        d = inf.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=10)
        check(d.text == as_text(d.text_bytes), f"Detokenize({ids}): {d.text!r} {d.text_bytes!r}")
        formed += any(ord(ch) > 127 and ch != "\ufffd" for ch in d.text)
    check(formed > 0, "no random sequence of byte tokens formed a character")
    print(f"Detokenize: {vocab} ids ({len(invalid)} not UTF-8 alone) and 300 sequences ({formed} forming characters)")


def test_error_counts(pb, inf, channel, server):
    before = errors_by_code(metrics_text(server.metrics_port)[1])
    code, _ = code_of(lambda: channel.unary_unary("/infernode.v1.Inference/Nope")(b"", timeout=10))
    check(code == grpc.StatusCode.UNIMPLEMENTED, f"unknown method: {code}")
    code, details = code_of(lambda: inf.Tokenize(pb.TokenizeRequest(text="x" * (2 << 20)), timeout=30))
    check(code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"a 2 MiB message to a 1 MiB server: {code} {details!r}")
    code, details = code_of(lambda: inf.Tokenize(pb.TokenizeRequest(text="x" * 100), timeout=10,
                                                 compression=grpc.Compression.Gzip))
    check(code == grpc.StatusCode.UNIMPLEMENTED, f"a gzip-compressed request: {code} {details!r}")
    code, _ = code_of(lambda: inf.Detokenize(pb.DetokenizeRequest(token_ids=[-1]), timeout=10))
    check(code == grpc.StatusCode.INVALID_ARGUMENT, f"Detokenize([-1]): {code}")
    text = metrics_text(server.metrics_port)[1]
    after = errors_by_code(text)
    for name in ("UNIMPLEMENTED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"):
        got = int(after.get(name, "0")) - int(before.get(name, "0"))
        check(got == 1, f"infernode_errors_total{{code=\"{name}\"}} went up by {got}, expected 1")
    check_integers(text)


def make_cert(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_token(a, stubs, work):
    pb, pb_grpc, _, _ = stubs
    cert, key = make_cert(work)
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write("s3cret-Token_1.~+/=\r\n")
    token = "s3cret-Token_1.~+/="
    server = serve_util.Server(a.infernode, a.model, 1, ["--tls-cert", cert, "--tls-key", key, "--auth-token-file",
                                                          token_file, "--metrics-host", "0.0.0.0"])
    try:
        check(listen_addresses(server.port) == ["127.0.0.1"], f"gRPC listens on {listen_addresses(server.port)}")
        check(listen_addresses(server.metrics_port) == ["0.0.0.0"],
              f"--metrics-host 0.0.0.0: /metrics listens on {listen_addresses(server.metrics_port)}")
        ctx = ssl.create_default_context(cafile=cert)
        status, text = metrics_text(server.metrics_port, "https", token, ctx)
        check(status == 200 and "infernode_errors_total" in text, f"HTTPS /metrics with the token: {status}")
        status, body = metrics_text(server.metrics_port, "https", None, ctx)
        check(status == 401 and "bearer token" in body, f"HTTPS /metrics without a token: {status} {body!r}")
        status, _ = metrics_text(server.metrics_port, "https", "wrong", ctx)
        check(status == 401, f"HTTPS /metrics with a wrong token: {status}")
        try:
            status, _ = metrics_text(server.metrics_port, "http", token)
            check(False, f"plain HTTP to the HTTPS /metrics port answered {status}")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        creds = grpc.ssl_channel_credentials(open(cert, "rb").read())
        channel = grpc.secure_channel(server.addr, creds)
        inf = pb_grpc.InferenceStub(channel)
        code, _ = code_of(lambda: inf.ModelInfo(pb.ModelInfoRequest(), timeout=10))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"gRPC over TLS without the token: {code}")
        info = inf.ModelInfo(pb.ModelInfoRequest(), timeout=10, metadata=[("authorization", f"Bearer {token}")])
        check(info.vocab_size > 0, "gRPC over TLS with the token")
        errors = errors_by_code(metrics_text(server.metrics_port, "https", token, ctx)[1])
        check(errors.get("UNAUTHENTICATED") == "1", f"UNAUTHENTICATED counted: {errors}")
    finally:
        server.kill()


def test_token_files(a, work):
    cases = [("empty", b"", "is empty"), ("newline only", b"\n", "is empty"),
             ("NUL", b"abc\0def\n", "NUL byte"), ("two lines", b"abc\ndef\n", "more than one line"),
             ("a space", b"abc def\n", "space"), ("oversized", b"a" * 5000, "more than 4096 bytes"), ("huge", b"a" * (2 << 20), "larger than"),
             ("a quote", b'ab"c\n', "cannot hold")]
    for name, content, why in cases:
        path = os.path.join(work, "bad-token")
        with open(path, "wb") as f:
            f.write(content)
        r = subprocess.run([a.infernode, "serve", "-m", a.model, "--port", "0", "--auth-token-file", path],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 2 and path in r.stderr and why in r.stderr,
              f"token file with {name}: exit {r.returncode}, {r.stderr.strip()!r}")
    r = subprocess.run([a.infernode, "serve", "-m", a.model, "--auth-token-file", os.path.join(work, "missing")],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "missing" in r.stderr and "No such file" in r.stderr,
          f"missing token file: exit {r.returncode}, {r.stderr.strip()!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ifn_security_") as work:
        test_token_files(a, work)
        print(f"token files: done ({time.time() - t0:.1f} s)", flush=True)
        test_defaults(a, stubs)
        print(f"defaults, Detokenize, error counts: done ({time.time() - t0:.1f} s)", flush=True)
        test_tls_token(a, stubs, work)
        print(f"TLS and token on gRPC and /metrics: done ({time.time() - t0:.1f} s)", flush=True)
    if FAILURES:
        print(f"{len(FAILURES)} failures", flush=True)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
