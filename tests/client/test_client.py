"""`infernode client` against a fake grpcio server (fake_server.py): each command sends the
request fields its options say (and none it was not given), with the bearer token as
metadata; the answers are printed as text or JSON; gRPC errors print
'infernode: error: STATUS: details' and exit 1; usage errors exit 2; stream deltas are
flushed as they arrive; --fim-prefix/--fim-suffix send a FimPrompt instead of text; --timeout
and TLS (--tls-ca) work; --new-session asks for a session and its id is printed, --session
continues one, delete-session ID deletes one; -p, --stop and --fim-* are sent as bash's
printf '%b' prints them.

usage: test_client.py INFERNODE PROTO_DIR GRPC_PROTO_DIR"""
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_server import MODEL_INFO, FakeServer  # noqa: E402

INFERNODE, PROTO_DIR, GRPC_PROTO_DIR = sys.argv[1:4]
failures = []
checks = 0


def check(cond, msg):
    global checks
    checks += 1
    if not cond:
        failures.append(msg)
        print("FAIL", msg)


def client(*args, env=None, timeout=15):
    run_env = {k: v for k, v in os.environ.items() if k != "INFERNODE_TOKEN"}
    run_env.update(env or {})
    r = subprocess.run([INFERNODE, "client", *args], capture_output=True, timeout=timeout, env=run_env)
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def f32(x):
    """x as the float32 the request carries."""
    return struct.unpack("f", struct.pack("f", x))[0]


def one_call(fake, method):
    calls = fake.take_calls()
    check(len(calls) == 1 and calls[0][0] == method, f"expected one {method} call, got {[c[0] for c in calls]}")
    return calls[0] if calls else (method, None, {})


def test_generate(fake, addr):
    rc, out, err = client("generate", "--addr", addr, "-p", "hello", "-n", "5", "--temp", "0.7", "--top-k", "40",
                          "--top-p", "0.9", "--min-p", "0.05", "--repeat-penalty", "1.1", "--seed", "18446744073709551615",
                          "--stop", "\n\n", "--stop", "END", "--ignore-eos", "--no-special", "--session", "chat-1",
                          "--no-spec", "--max-draft", "3", "--token", "s3cret", "--timeout", "10")
    check(rc == 0, f"generate: exit {rc}, stderr {err!r}")
    check(out == "echo:hello\n", f"generate: stdout {out!r}")
    check("finish: length; prompt 5 tokens, completion 5 tokens; queue 1.0 ms, first token 250.0 ms, 12.5 ms/token"
          in err, f"generate: summary on stderr {err!r}")
    _, req, md = one_call(fake, "Generate")
    if req is None:
        return
    check(req.HasField("text") and not req.HasField("token_ids") and req.text == "hello", f"generate: prompt {req}")
    check(req.HasField("max_new_tokens") and req.max_new_tokens == 5, "generate: max_new_tokens")
    s = req.sampling
    check(req.HasField("sampling"), "generate: no sampling message")
    check((s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty) == (f32(0.7), 40, f32(0.9), f32(0.05), f32(1.1)),
          f"generate: sampling {s}")
    check(s.HasField("seed") and s.seed == 2**64 - 1, f"generate: seed {s.seed}")
    check(list(req.stop) == ["\n\n", "END"], f"generate: stop {list(req.stop)}")
    check(req.HasField("ignore_eos") and req.ignore_eos, "generate: ignore_eos")
    check(req.HasField("add_special") and not req.add_special, "generate: --no-special must send add_special=false")
    check(req.session_id == "chat-1", f"generate: session_id {req.session_id!r}")
    sp = req.speculative
    check(req.HasField("speculative") and sp.HasField("enabled") and not sp.enabled and sp.max_draft_tokens == 3,
          f"generate: --no-spec --max-draft 3 sent {sp}")
    check(md.get("authorization") == "Bearer s3cret", f"generate: metadata {md}")


def test_generate_ids_json(fake, addr):
    rc, out, err = client("generate", "--addr", addr, "--ids", "1,2, 3", "-n", "2", "--json")
    check(rc == 0, f"generate --ids: exit {rc}, stderr {err!r}")
    lines = out.splitlines()
    check(len(lines) == 1, f"generate --json: {len(lines)} lines")
    got = json.loads(lines[0]) if lines else {}
    want = {"text": "echo:1 2 3", "token_ids": [5, 2], "finish_reason": "length",
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            "timings": {"queue_seconds": 0.001, "time_to_first_token_seconds": 0.25,
                        "time_per_output_token_seconds": 0.0125}}
    check(got == want, f"generate --json: {got}")
    check(err == "", f"generate --json: stderr {err!r}")
    _, req, md = one_call(fake, "Generate")
    if req is None:
        return
    check(req.HasField("token_ids") and not req.HasField("text") and list(req.token_ids.ids) == [1, 2, 3], f"ids: {req}")
    check(req.max_new_tokens == 2, "ids: max_new_tokens")
    for field in ("sampling", "ignore_eos", "add_special", "session_id", "speculative"):
        check(not req.HasField(field), f"ids: {field} was sent though no option set it")
    check(len(req.stop) == 0, "ids: stop was sent")
    check("authorization" not in md, f"ids: authorization sent without a token: {md}")

    # Default -n, JSON escaping of what the server sends back.
    prompt = 'say "hi"\n\tback\\slash \u00e9\u2713 \x01'
    rc, out, err = client("generate", "--addr", addr, "-p", prompt, "--json")
    check(rc == 0 and json.loads(out)["text"] == "echo:" + prompt, f"json escaping: {out!r} {err!r}")
    _, req, _ = one_call(fake, "Generate")
    check(req is not None and req.max_new_tokens == 64, "default -n must be 64")


def test_stream(fake, addr):
    rc, out, err = client("stream", "--addr", addr, "-p", "abc", "-n", "3", env={"INFERNODE_TOKEN": "from-env"})
    check(rc == 0 and out == "echo:abc!\n", f"stream: exit {rc}, stdout {out!r}, stderr {err!r}")
    check("finish: stop; prompt 3 tokens, completion 3 tokens; first token 500.0 ms" in err, f"stream: stderr {err!r}")
    _, req, md = one_call(fake, "GenerateStream")
    check(md.get("authorization") == "Bearer from-env", f"stream: $INFERNODE_TOKEN not sent: {md}")

    rc, out, err = client("stream", "--addr", addr, "--ids", "7", "--json")
    got = [json.loads(line) for line in out.splitlines()]
    check(rc == 0 and [g.get("text") for g in got] == ["echo:", "7", "!"], f"stream --json: {out!r} {err!r}")
    check(got and got[-1].get("finish_reason") == "stop" and got[-1].get("token_ids") == [3]
          and "finish_reason" not in got[0], f"stream --json: {got}")
    fake.take_calls()

    # Deltas are flushed as they arrive: the first shows up while the server holds the last.
    proc = subprocess.Popen([INFERNODE, "client", "stream", "--addr", addr, "-p", "wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = queue.Queue()
    threading.Thread(target=lambda: [chunks.put(c) for c in iter(lambda: os.read(proc.stdout.fileno(), 4096), b"")],
                     daemon=True).start()
    seen, deadline = b"", time.monotonic() + 5
    while b"echo:wait" not in seen and time.monotonic() < deadline:
        try:
            seen += chunks.get(timeout=0.1)
        except queue.Empty:
            pass
    check(seen == b"echo:wait", f"stream: before the last message stdout had {seen!r}")
    fake.release_stream.set()
    proc.wait(timeout=10)
    while not chunks.empty():
        seen += chunks.get()
    check(proc.returncode == 0 and seen == b"echo:wait!\n", f"stream: {proc.returncode} {seen!r}")
    fake.release_stream.clear()
    fake.take_calls()

    rc, out, err = client("stream", "--addr", addr, "-p", "fail midway")
    check(rc == 1 and out == "echo:fail midway\n", f"stream failing midway: exit {rc}, stdout {out!r}")
    check(err == "infernode: error: RESOURCE_EXHAUSTED: the KV cache is full\n", f"stream failing midway: {err!r}")
    fake.take_calls()


def test_fim(fake, addr):
    for cmd, method in (("generate", "Generate"), ("stream", "GenerateStream")):
        rc, out, err = client(cmd, "--addr", addr, "--fim-prefix", "def f(", "--fim-suffix", "):\n", "-n", "3")
        check(rc == 0 and out.startswith("echo:def f([middle]):\n"), f"{cmd} --fim-*: {rc} {out!r} {err!r}")
        _, req, _ = one_call(fake, method)
        check(req is not None and req.HasField("fim") and req.fim.HasField("prefix") and req.fim.prefix == "def f("
              and req.fim.suffix == "):\n" and not req.HasField("text") and not req.HasField("token_ids"),
              f"{cmd} --fim-*: {req}")
    # Either alone: the other is not sent (the server takes it as empty).
    rc, out, err = client("generate", "--addr", addr, "--fim-suffix", "x")
    _, req, _ = one_call(fake, "Generate")
    check(rc == 0 and req is not None and req.HasField("fim") and not req.fim.HasField("prefix")
          and req.fim.suffix == "x", f"--fim-suffix alone: {rc} {req}")
    rc, out, err = client("tokenize", "--addr", addr, "--fim-prefix", "a", "--fim-suffix", "b", "--no-special")
    _, req, _ = one_call(fake, "Tokenize")
    check(rc == 0 and req is not None and req.HasField("fim") and (req.fim.prefix, req.fim.suffix) == ("a", "b")
          and not req.HasField("text") and not req.HasField("parse_special") and not req.add_special,
          f"tokenize --fim-*: {rc} {req} {err!r}")


def test_tokenize(fake, addr):
    rc, out, err = client("tokenize", "--addr", addr, "-p", "hi")
    check(rc == 0 and out == "1 104 105\n", f"tokenize: {rc} {out!r} {err!r}")
    _, req, _ = one_call(fake, "Tokenize")
    check(req.text == "hi" and req.HasField("add_special") and req.add_special and req.HasField("parse_special")
          and not req.parse_special, f"tokenize: {req}")
    rc, out, err = client("tokenize", "--addr", addr, "-p", "hi", "--no-special", "--parse-special", "--json")
    check(rc == 0 and json.loads(out) == {"token_ids": [104, 105]}, f"tokenize --json: {out!r} {err!r}")
    _, req, _ = one_call(fake, "Tokenize")
    check(not req.add_special and req.parse_special, f"tokenize flags: {req}")
    rc, out, err = client("tokenize", "--addr", addr, "-p", "", "--no-special")
    check(rc == 0 and out == "\n", f"tokenize of nothing: {out!r}")
    fake.take_calls()


def test_detokenize(fake, addr):
    rc, out, err = client("detokenize", "--addr", addr, "--ids", "104,105", "--render-special")
    check(rc == 0 and out == "hi\n", f"detokenize: {rc} {out!r} {err!r}")
    _, req, _ = one_call(fake, "Detokenize")
    check(list(req.token_ids) == [104, 105] and req.render_special, f"detokenize: {req}")
    rc, out, err = client("detokenize", "--addr", addr, "--ids", "104 5000", "--json")
    check(rc == 1 and out == "", f"detokenize bad id: exit {rc}, stdout {out!r}")
    check(err == "infernode: error: INVALID_ARGUMENT: token_ids[1]: 5000 is outside the vocabulary (0..999)\n",
          f"detokenize bad id: stderr {err!r}")
    _, req, _ = one_call(fake, "Detokenize")
    check(req is not None and not req.render_special, "detokenize: render_special without the flag")


def test_info_health(fake, addr):
    rc, out, err = client("info", "--addr", addr)
    want = "".join(f"{k}: {v}\n" for k, v in MODEL_INFO.items())
    check(rc == 0 and out == want, f"info: {rc} {out!r} {err!r}")
    one_call(fake, "ModelInfo")
    rc, out, err = client("info", "--addr", addr, "--json")
    check(rc == 0 and json.loads(out) == MODEL_INFO, f"info --json: {out!r}")
    one_call(fake, "ModelInfo")

    rc, out, err = client("health", "--addr", addr)
    check(rc == 0 and out == "SERVING\n", f"health: {rc} {out!r} {err!r}")
    rc, out, err = client("health", "--addr", addr, "--service", "down", "--json")
    check(rc == 1 and json.loads(out) == {"status": "NOT_SERVING"}, f"health down: {rc} {out!r}")
    rc, out, err = client("health", "--addr", addr, "--service", "nope")
    check(rc == 1 and err == "infernode: error: NOT_FOUND: unknown service nope\n", f"health unknown: {rc} {err!r}")
    services = [req.service for _, req, _ in fake.take_calls()]
    check(services == ["", "down", "nope"], f"health services {services}")


def test_failures(fake, addr):
    usage = [
        ("generate", "-p", "x"),                                   # no --addr
        ("generate", "--addr", addr),                              # no prompt
        ("generate", "--addr", addr, "-p", "x", "--ids", "1"),     # both prompts
        ("generate", "--addr", addr, "-p", "x", "--fim-prefix", "a"),
        ("stream", "--addr", addr, "--ids", "1", "--fim-suffix", "a"),
        ("tokenize", "--addr", addr, "-p", "x", "--fim-suffix", "a"),
        ("tokenize", "--addr", addr, "--fim-prefix", "a", "--parse-special"),
        ("detokenize", "--addr", addr, "--ids", "1", "--fim-prefix", "a"),  # not an option of detokenize
        ("generate", "--addr", addr, "--ids", "1,x"),              # bad id
        ("generate", "--addr", addr, "-p", "x", "-n", "0"),        # bad -n
        ("generate", "--addr", addr, "-p", "x", "--temp", "warm"),
        ("generate", "--addr", addr, "-p", "x", "--seed", "-1"),
        ("generate", "--addr", addr, "-p", "x", "--timeout", "0"),
        ("tokenize", "--addr", addr, "-p", "x", "--temp", "1"),    # not an option of tokenize
        ("detokenize", "--addr", addr),
        ("info", "--addr", addr, "extra"),
        ("frobnicate", "--addr", addr),
        ("health", "--addr", addr, "--bogus"),
    ]
    for args in usage:
        rc, out, err = client(*args)
        check(rc == 2 and err.startswith("infernode") and out == "", f"usage error {args}: exit {rc}, {err!r}")
    check(fake.take_calls() == [], "a usage error must not call the server")
    rc, out, _ = client("--help")
    check(rc == 0 and "usage: infernode client COMMAND" in out, "client --help")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    rc, out, err = client("info", "--addr", f"127.0.0.1:{closed}")
    check(rc == 1 and err.startswith("infernode: error: UNAVAILABLE: "), f"no server: {rc} {err!r}")

    t0 = time.monotonic()
    rc, out, err = client("generate", "--addr", addr, "-p", "slow", "--timeout", "0.5")
    took = time.monotonic() - t0
    check(rc == 1 and err.startswith("infernode: error: DEADLINE_EXCEEDED: ") and took < 2.5,
          f"--timeout: exit {rc} after {took:.1f} s, {err!r}")
    fake.take_calls()


def test_sessions(fake, addr):
    rc, out, err = client("generate", "--addr", addr, "-p", "hi", "--new-session")
    check(rc == 0 and "infernode: session fake-session-1\n" in err, f"--new-session: {rc} {err!r}")
    _, req, _ = one_call(fake, "Generate")
    check(req is not None and req.HasField("new_session") and req.new_session and not req.HasField("session_id"),
          f"--new-session sent {req}")
    rc, out, err = client("generate", "--addr", addr, "-p", "hi", "--new-session", "--json")
    check(rc == 0 and json.loads(out).get("session_id") == "fake-session-1", f"--new-session --json: {out!r}")
    fake.take_calls()
    rc, out, err = client("stream", "--addr", addr, "-p", "next turn", "--session", "fake-session-1")
    check(rc == 0 and out == "echo:next turn!\n" and "infernode: session fake-session-1\n" in err,
          f"stream --session: {rc} {out!r} {err!r}")
    _, req, _ = one_call(fake, "GenerateStream")
    check(req is not None and req.session_id == "fake-session-1" and not req.HasField("new_session"),
          f"--session sent {req}")
    rc, out, err = client("generate", "--addr", addr, "-p", "hi", "--new-session", "--session", "x")
    check(rc == 2 and "--new-session" in err, f"--new-session with --session: {rc} {err!r}")

    rc, out, err = client("delete-session", "fake-session-1", "--addr", addr, "--token", "t0k")
    check(rc == 0 and out == "deleted session fake-session-1\n", f"delete-session: {rc} {out!r} {err!r}")
    _, req, md = one_call(fake, "DeleteSession")
    check(req is not None and req.session_id == "fake-session-1" and md.get("authorization") == "Bearer t0k",
          f"delete-session sent {req} {md}")
    rc, out, err = client("delete-session", "--addr", addr, "s2", "--json")
    check(rc == 0 and json.loads(out) == {"deleted_session_id": "s2"}, f"delete-session --json: {out!r}")
    fake.take_calls()
    rc, out, err = client("delete-session", "gone", "--addr", addr)
    check(rc == 1 and err.startswith("infernode: error: NOT_FOUND: unknown session gone"), f"NOT_FOUND: {rc} {err!r}")
    fake.take_calls()
    for args, what in ((["--addr", addr], "no ID"), (["a", "b", "--addr", addr], "two IDs"),
                       (["a", "--addr", addr, "-p", "x"], "-p")):
        rc, out, err = client("delete-session", *args)
        check(rc == 2, f"delete-session with {what}: {rc} {err!r}")
    check(fake.take_calls() == [], "a refused delete-session called the server")


# Inputs for printf '%b', each a string of the characters the shell passes.
ESCAPES = ["a\\nb", "line\\n\\nend", "\\\\", "\\\\n", "tab\\there", "\\x41\\x4g\\x", "\\101\\0101\\1011",
           "\\q\\?\\\"", "trailing\\", "\\u00e9\\U0001F600\\u", "\\e[0m\\a\\b\\f\\r\\v", "cut\\chere",
           "]\\n", "\\xc3\\xa9t\\303\\251", "plain text"]


def test_escapes(fake, addr):
    env = dict(os.environ, LC_ALL="C.UTF-8")
    for raw in ESCAPES:
        want = subprocess.run(["bash", "-c", 'printf "%b" "$1"', "_", raw], capture_output=True, env=env).stdout
        rc, out, err = client("generate", "--addr", addr, "-p", raw, "--stop", raw)
        _, req, _ = one_call(fake, "Generate")
        check(rc == 0 and req is not None and req.text.encode() == want and [x.encode() for x in req.stop] == [want],
              f"-p/--stop {raw!r}: sent {req.text if req else None!r}, printf '%b' gives {want!r}")
        rc, out, err = client("generate", "--addr", addr, "--fim-prefix", raw, "--fim-suffix", raw + "x")
        _, req, _ = one_call(fake, "Generate")
        want_x = subprocess.run(["bash", "-c", 'printf "%b" "$1"', "_", raw + "x"], capture_output=True, env=env).stdout
        check(rc == 0 and req is not None and req.fim.prefix.encode() == want and req.fim.suffix.encode() == want_x,
              f"--fim-* {raw!r}: sent {req.fim if req else None}")
    for raw in ("a\\0b", "\\x00", "\\ud800", "\\U00110000", "\\400", "\\777", "\\xc3"):
        rc, out, err = client("generate", "--addr", addr, "--stop", raw, "-p", "x")
        check(rc == 2 and "--stop" in err and "UTF-8 without NUL" in err, f"--stop {raw!r} must be refused: {rc} {err!r}")
    check(fake.take_calls() == [], "a refused escape called the server")


def test_tls(fake, addr, cert):
    tls_addr = f"127.0.0.1:{fake.tls_port}"
    rc, out, err = client("health", "--addr", tls_addr, "--tls-ca", cert, "--token", "t")
    check(rc == 0 and out == "SERVING\n", f"TLS health: {rc} {out!r} {err!r}")
    _, _, md = one_call(fake, "Check")
    check(md.get("authorization") == "Bearer t", f"TLS metadata {md}")
    rc, out, err = client("health", "--addr", addr, "--tls-ca", cert)
    check(rc == 1 and "UNAVAILABLE" in err, f"TLS to a plaintext port: {rc} {err!r}")
    rc, out, err = client("health", "--addr", tls_addr, "--tls-ca", "/nonexistent.pem")
    check(rc == 1 and "/nonexistent.pem" in err, f"missing CA file: {rc} {err!r}")
    fake.take_calls()


def make_cert(folder):
    """A self-signed certificate for 127.0.0.1, or None without openssl."""
    if not shutil.which("openssl"):
        return None
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def main():
    certs = tempfile.mkdtemp(prefix="infernode-certs-")
    cert = make_cert(certs)
    fake = FakeServer(PROTO_DIR, GRPC_PROTO_DIR, tls_cert=cert)
    addr = f"127.0.0.1:{fake.port}"
    t0 = time.monotonic()
    try:
        test_generate(fake, addr)
        test_generate_ids_json(fake, addr)
        test_stream(fake, addr)
        test_fim(fake, addr)
        test_tokenize(fake, addr)
        test_detokenize(fake, addr)
        test_info_health(fake, addr)
        test_failures(fake, addr)
        test_sessions(fake, addr)
        test_escapes(fake, addr)
        if cert:
            test_tls(fake, addr, cert[0])
        else:
            failures.append("openssl is missing (deploy/install-deps.sh installs it): TLS not tested")
    finally:
        fake.stop()
        shutil.rmtree(certs, ignore_errors=True)
    print(f"{time.monotonic() - t0:.1f} s")
    print(f"client: {checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
