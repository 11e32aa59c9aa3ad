#!/usr/bin/python3
"""The OpenAI-compatible HTTP API end to end: `mpirun -np N infernode serve` with real clients.
  - the official `openai` npm package (Node, openai_client.mjs) for completions and chat,
    streaming and not, at np 1 and 2: greedy text equal to gRPC Generate's for the same prompt
    (Debian's python3-grpcio), usage equal to gRPC's, n > 1, echo, stop, seeded sampling,
    logprobs in both shapes;
  - `curl -N`: server-sent events arrive as they are produced (the first chunk well before the
    last token), `data: [DONE]` last;
  - every error with its status and OpenAI's JSON body: 400 naming the field, 401 (and HTTPS
    with the gRPC port's certificate), 404, 405, 409, 413, 429 (a full queue), 503 while loading
    and draining; infernode_http_requests_total{status} counts them.
usage: test_http.py --infernode BIN --model GGUF --slow-model GGUF --proto-dir DIR --grpc-proto DIR
                    --node-modules DIR --work DIR --vocab-dir DIR (../shared/vocab)"""
import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serve"))
import serve_util  # noqa: E402

FAILURES = []
PROMPTS = ["def fibonacci(n):\n    ", "import os\n", "class Stack:\n    def __init__(self):\n"]
CHAT = "Write a function that adds two numbers."


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def http(port, path, body=None, token=None, method=None, scheme="http", ctx=None, raw=None):
    """(status, parsed JSON body or text) of one request."""
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def node(a, port, calls, api_key=None, scheme="http", ca=None):
    """The openai package's view of each call (openai_client.mjs)."""
    spec = {"base_url": f"{scheme}://127.0.0.1:{port}/v1", "api_key": api_key, "calls": calls}
    path = os.path.join(a.work, "calls.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, OPENAI_NODE_MODULES=a.node_modules)
    if ca:
        env["NODE_EXTRA_CA_CERTS"] = ca
    p = subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "openai_client.mjs"), path],
                       capture_output=True, text=True, timeout=300, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"node: exit {p.returncode}: {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def grpc_generate(stubs, server, text, n):
    pb, pb_grpc, _, _ = stubs
    import grpc
    with grpc.insecure_channel(server.addr) as ch:
        return pb_grpc.InferenceStub(ch).Generate(pb.GenerateRequest(text=text, max_new_tokens=n), timeout=120)


def choice(result, i=0):
    return result.get("choices", {}).get(str(i), {}) if result.get("ok") else {}


def test_same_as_grpc(a, stubs, server, np_):
    """Greedy completions and chat, streaming and not, through the openai package == gRPC."""
    n = 24
    calls, want = [], []
    for p in PROMPTS:
        g = grpc_generate(stubs, server, p, n)
        for stream in (False, True):
            calls.append({"api": "completions", "stream": stream,
                          "params": {"prompt": p, "max_tokens": n, "stream_options": {"include_usage": True}
                                     if stream else None}})
            want.append((f"completions {p!r} stream={stream}", g.text, g.usage.prompt_tokens, g.usage.completion_tokens))
    _, models = http(server.http_port, "/v1/models")
    tmpl = models["data"][0]["chat_template"] if isinstance(models, dict) else None
    check(tmpl == "plain", f"np {np_}: the default model's chat template: {tmpl}")
    g = grpc_generate(stubs, server, f"User: {CHAT}\nAssistant:", n)  # chat_template.h's plain format
    for stream in (False, True):
        calls.append({"api": "chat", "stream": stream, "params": {"messages": [{"role": "user", "content": CHAT}],
                                                                 "max_tokens": n}})
        want.append((f"chat stream={stream}", g.text, g.usage.prompt_tokens, g.usage.completion_tokens))
    results = node(a, server.http_port, calls)
    for (what, text, prompt_tokens, completion_tokens), r in zip(want, results):
        c = choice(r)
        check(r.get("ok"), f"np {np_}: {what}: {r}")
        check(c.get("text") == text, f"np {np_}: {what}: text {c.get('text')!r} != gRPC's {text!r}")
        check(c.get("finish_reason") == "length", f"np {np_}: {what}: finish_reason {c.get('finish_reason')}")
        u = r.get("usage") or {}
        if "completions" in what or not r.get("chunks"):
            check(u.get("prompt_tokens") == prompt_tokens and u.get("completion_tokens") == completion_tokens,
                  f"np {np_}: {what}: usage {u} != gRPC's {prompt_tokens}/{completion_tokens}")
        if r.get("chunks") is not None:
            check(r["chunks"] > 1, f"np {np_}: {what}: {r['chunks']} chunks")
    check(results[-2].get("object") == "chat.completion" and choice(results[-2]).get("role") == "assistant",
          f"np {np_}: chat object {results[-2].get('object')}")
    check(results[-1].get("object") == "chat.completion.chunk", f"np {np_}: chat chunks {results[-1].get('object')}")


def test_options(a, stubs, server):
    """n, seeded sampling, echo, stop, token-id prompts, the session extension."""
    p = PROMPTS[0]
    g = grpc_generate(stubs, server, p, 16)
    stop = g.text[4:7] if len(g.text) > 8 else None
    sampled = {"prompt": p, "max_tokens": 16, "temperature": 0.9, "top_p": 0.95, "seed": 1234, "n": 3}
    calls = [
        {"api": "completions", "params": {"prompt": p, "max_tokens": 16, "n": 2}},
        {"api": "completions", "params": sampled},
        {"api": "completions", "stream": True, "params": sampled},
        {"api": "completions", "params": {"prompt": p, "max_tokens": 16, "echo": True}},
        {"api": "completions", "params": {"prompt": p, "max_tokens": 16, "stop": [stop] if stop else None}},
        {"api": "completions", "params": {"prompt": p, "max_tokens": 4, "new_session": True}},
    ]
    r = node(a, server.http_port, calls)
    check(choice(r[0], 0).get("text") == g.text and choice(r[0], 1).get("text") == g.text,
          f"n=2 greedy: {r[0]}")
    texts = [choice(r[1], i).get("text") for i in range(3)]
    check(all(t is not None for t in texts), f"n=3 sampled: {r[1]}")
    check(texts == [choice(r[2], i).get("text") for i in range(3)], f"seeded n=3 streamed {r[2]} != whole {r[1]}")
    check(choice(r[3]).get("text") == p + g.text, f"echo: {choice(r[3]).get('text')!r}")
    if stop:
        check(choice(r[4]).get("text") == g.text[:g.text.index(stop)] and choice(r[4]).get("finish_reason") == "stop",
              f"stop {stop!r}: {choice(r[4])}")
    session = r[5].get("session_id")
    check(isinstance(session, str) and len(session) == 32, f"new_session: session_id {session!r}")
    pb, pb_grpc, _, _ = stubs
    import grpc
    with grpc.insecure_channel(server.addr) as ch:
        ids = list(pb_grpc.InferenceStub(ch).Tokenize(pb.TokenizeRequest(text=p, add_special=True), timeout=10).token_ids)
    status, body = http(server.http_port, "/v1/completions", {"prompt": ids, "max_tokens": 16})
    check(status == 200 and body["choices"][0]["text"] == g.text, f"token-id prompt: {status} {body}")
    status, body = http(server.http_port, "/v1/completions", {"prompt": "\n", "max_tokens": 2, "session_id": session})
    check(status == 200 and body.get("session_id") == session, f"continuing the session: {status} {body}")


def test_logprobs(a, server):
    """logprobs: the chosen token's log-probability and the top alternatives, whole and streamed,
    completions and chat; greedy picks the most likely, and the tokens spell the text."""
    p = PROMPTS[1]
    chat = {"messages": [{"role": "user", "content": CHAT}], "max_tokens": 12, "logprobs": True, "top_logprobs": 2}
    r = node(a, server.http_port, [
        {"api": "completions", "params": {"prompt": p, "max_tokens": 12, "logprobs": 3, "echo": True}},
        {"api": "completions", "stream": True, "params": {"prompt": p, "max_tokens": 12, "logprobs": 3}},
        {"api": "chat", "params": chat}, {"api": "chat", "stream": True, "params": chat}])
    c, lp = choice(r[0]), choice(r[0]).get("logprobs") or {}
    tokens, values, tops = lp.get("tokens", []), lp.get("token_logprobs", []), lp.get("top_logprobs", [])
    check(len(tokens) == 12 and len(values) == 12 and len(tops) == 12, f"completion logprobs: {lp}")
    check(c.get("text") == p + "".join(tokens), f"echo + tokens {tokens} == text {c.get('text')!r}")
    check(lp.get("text_offset", [None])[0] == len(p.encode()), f"text_offset {lp.get('text_offset')}")
    check(all(len(t) <= 3 and v <= 0 and abs(max(t.values()) - v) < 1e-5 for t, v in zip(tops, values)),
          f"greedy takes the most likely: {list(zip(values, tops))[:3]}")
    check(choice(r[1]).get("lp_tokens") == tokens, f"streamed tokens {choice(r[1]).get('lp_tokens')} == {tokens}")
    content = (choice(r[2]).get("logprobs") or {}).get("content", [])
    check(len(content) == 12 and "".join(t["token"] for t in content) == choice(r[2]).get("text"),
          f"chat logprobs tokens spell the content: {content[:2]}")
    check(all(len(t["top_logprobs"]) == 2 and abs(t["top_logprobs"][0]["logprob"] - t["logprob"]) < 1e-5 and
              bytes(t["bytes"]) == t["token"].encode() for t in content), f"chat top_logprobs: {content[:2]}")
    check(choice(r[3]).get("lp_tokens") == [t["token"] for t in content], f"chat streamed logprobs {choice(r[3])}")


def sse_timing(port, body):
    """(seconds to the first data event, seconds to [DONE], data events) read through `curl -N`."""
    t0 = time.monotonic()
    p = subprocess.Popen(["curl", "-sN", "-H", "Content-Type: application/json", "-d", json.dumps(body),
                          f"http://127.0.0.1:{port}/v1/completions"], stdout=subprocess.PIPE, text=True)
    first = done = None
    events = []
    for line in p.stdout:
        if not line.startswith("data: "):
            continue
        now = time.monotonic() - t0
        if first is None:
            first = now
        events.append(line[6:].strip())
        if events[-1] == "[DONE]":
            done = now
    p.wait()
    return first, done, events


def test_sse(a, server):
    """curl -N sees chunks as they are produced: on the slow model, the first chunk comes long
    before the last token."""
    # 400 tokens: on a quiet machine the slow model makes 48 in 0.05 s, about what starting curl
    # takes, so a short stream cannot tell "as produced" from "all at the end".
    first, done, events = sse_timing(server.http_port, {"prompt": [1], "max_tokens": 400, "ignore_eos": True,
                                                         "stream": True})
    print(f"SSE on the slow model, 400 tokens: first chunk after {first:.3f} s, [DONE] after {done:.3f} s, "
          f"{len(events)} events", flush=True)
    check(events and events[-1] == "[DONE]", f"SSE ends with [DONE]: {events[-1:]}")
    check(len(events) >= 10, f"SSE: {len(events)} events for 400 tokens")
    check(first is not None and done is not None and first < 0.5 * done,
          f"SSE first chunk at {first} s, not well before the end at {done} s")


def error_calls(a, server, check_status):
    port = server.http_port
    bad = [
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"), ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": "x", "top_p": 1.5}, "top_p"), ({"prompt": "x", "n": 99}, "n"), ({"max_tokens": 3}, "prompt"),
        ({"prompt": [1, 99999999]}, "prompt"), ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": "x", "seed": "a"}, "seed"),
        ({"prompt": "x", "logprobs": 99}, "logprobs"), ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "suffix": "y"}, "suffix"), ({"prompt": "x", "frequency_penalty": 0.5}, "frequency_penalty"),
        ({"prompt": "x", "speculative": {"enabled": True}}, "speculative"),
    ]
    for body, field in bad:
        check_status(http(port, "/v1/completions", body), 400, field)
    check_status(http(port, "/v1/chat/completions", {"messages": []}), 400, "messages")
    check_status(http(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
                 400, "top_logprobs")
    check_status(http(port, "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}), 400,
                 "messages[0].role")
    check_status(http(port, "/v1/completions", raw=b"{not json"), 400, None)
    check_status(http(port, "/v1/nothing", {}), 404, None)
    check_status(http(port, "/v1/completions", method="GET"), 405, None)
    check_status(http(port, "/v1/completions", {"prompt": "x", "session_id": "f" * 32}), 404, "session_id")
    check_status(http(port, "/v1/completions", raw=b"{\"prompt\": \"" + b"a" * (5 << 20) + b"\"}"), 413, None)
    r = node(a, port, [{"api": "completions", "params": {"prompt": "x", "max_tokens": 0}}])[0]
    check_status((r["status"], {"error": r["error"]}), 400, "max_tokens")  # as the openai package sees it


def test_errors(a, server):
    """Every error: status and OpenAI's JSON shape, the field named; counted in metrics."""
    seen = {}

    def check_status(result, status, param):
        got, body = result
        err = body.get("error") if isinstance(body, dict) else None
        ok = got == status and isinstance(err, dict) and isinstance(err.get("message"), str) and "type" in err \
            and (param is None or err.get("param") == param)
        check(ok, f"want {status} naming {param}: got {got} {body}")
        seen[str(status)] = seen.get(str(status), 0) + 1

    before = server.metrics()
    error_calls(a, server, check_status)
    # 409: a session with a request running
    status, body = http(server.http_port, "/v1/completions", {"prompt": "x", "max_tokens": 2, "new_session": True})
    session = body.get("session_id") if isinstance(body, dict) else None
    long_run = threading.Thread(target=http, args=(server.http_port, "/v1/completions",
                                                   {"prompt": "y", "max_tokens": 2000, "ignore_eos": True,
                                                    "session_id": session}))
    long_run.start()
    time.sleep(0.3)
    check_status(http(server.http_port, "/v1/completions", {"prompt": "z", "max_tokens": 2, "session_id": session}),
                 409, "session_id")
    long_run.join()
    after = server.metrics()
    for status, n in seen.items():
        key = f'infernode_http_requests_total{{status="{status}"}}'
        check(after.get(key, 0) - before.get(key, 0) == n, f"{key}: +{after.get(key, 0) - before.get(key, 0)}, want +{n}")


def test_tls_token_queue(a, work):
    """HTTPS with the gRPC port's certificate and bearer token; 401; a full queue is 429."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write("http-Token_1\n")
    server = serve_util.Server(a.infernode, a.model, 1, ["--tls-cert", cert, "--tls-key", key, "--auth-token-file",
                                                          token_file, "--max-queue", "0"])
    try:
        ctx = ssl.create_default_context(cafile=cert)
        port = server.http_port
        status, body = http(port, "/v1/models", token="http-Token_1", scheme="https", ctx=ctx)
        check(status == 200 and body["data"][0]["id"], f"HTTPS /v1/models with the token: {status} {body}")
        status, body = http(port, "/v1/models", scheme="https", ctx=ctx)
        check(status == 401 and body["error"]["type"] == "authentication_error", f"no token: {status} {body}")
        status, body = http(port, "/health", scheme="https", ctx=ctx)
        check(status == 200, f"health needs no token: {status} {body}")
        status, body = http(port, "/v1/completions", {"prompt": "x"}, token="http-Token_1", scheme="https", ctx=ctx)
        check(status == 429 and "queue" in body["error"]["message"], f"full queue: {status} {body}")
        r = node(a, port, [{"api": "completions", "params": {"prompt": "x"}}], api_key="wrong", scheme="https", ca=cert)
        check(not r[0]["ok"] and r[0]["status"] == 401, f"openai package, wrong key over HTTPS: {r}")
        r = node(a, port, [{"api": "completions", "params": {"prompt": "x"}}], api_key="http-Token_1", scheme="https",
                 ca=cert)
        check(not r[0]["ok"] and r[0]["status"] == 429, f"openai package, full queue over HTTPS: {r}")
        os.kill(server.rank0_pid(), signal.SIGTERM)
        check(server.wait_exit(60) == 0, "exit 0 after SIGTERM")
    finally:
        server.kill()


def test_slow_model(a):
    """On a model slow to load and to run: 503 while loading, SSE timing, 503 while draining
    with the stream in flight finishing."""
    # The drain waits as long as the stream in flight needs, however fast or loaded the machine.
    server = serve_util.Server(a.infernode, a.slow_model, 2, ["--quant", "w4a8-g32", "--max-seqs", "4",
                                                               "--ctx-size", "1024", "--drain-seconds", "600"],
                               wait_serving=False)
    try:
        port = server.http_port
        health, _ = http(port, "/health")
        gen = http(port, "/v1/completions", {"prompt": [1], "max_tokens": 2})
        if check(not any("serving " in line for line in server.lines), "still loading when probed"):
            check(health == 503, f"health while loading: {health}")
            check(gen[0] == 503 and gen[1]["error"]["message"] == "the model is still loading", f"loading: {gen}")
        server.wait_line("serving ", 120)
        check(http(port, "/health")[0] == 200, "health 200 once serving")
        test_sse(a, server)
        result = {}
        stream = threading.Thread(target=lambda: result.update(t=sse_timing(port, {
            "prompt": [1], "max_tokens": 3000, "ignore_eos": True, "stream": True})))
        stream.start()
        # SIGTERM once the stream runs; 3000 tokens keep it running while the drain is probed
        end = time.time() + 60
        while server.metrics().get("infernode_requests_running", 0) < 1 and time.time() < end:
            time.sleep(0.01)
        os.kill(server.rank0_pid(), signal.SIGTERM)
        server.wait_line("draining", 30)
        health, _ = http(port, "/health")
        status, body = http(port, "/v1/completions", {"prompt": [1], "max_tokens": 2})
        check(health == 503, f"health while draining: {health}")
        check(status == 503 and "shutting down" in body["error"]["message"], f"while draining: {status} {body}")
        stream.join(600)
        events = result.get("t", (None, None, []))[2]
        done = [json.loads(e) for e in events[:-1]]
        finish = [c["finish_reason"] for e in done for c in e.get("choices", []) if c["finish_reason"]]
        check(events[-1:] == ["[DONE]"] and finish == ["length"], f"the stream in flight finished: {events[-2:]}")
        check(server.wait_exit(60) == 0, "exit 0 after SIGTERM")
    finally:
        server.kill()


def test_fim(a, stubs):
    """suffix: fill in the middle through the model's FIM tokens, equal to gRPC's fim request, on
    test_serve_fim.py's random Llama with StarCoder's vocabulary (from ../shared; skipped without)."""
    vocab = os.path.join(a.vocab_dir, "ggml-vocab-starcoder.gguf")
    if not os.path.exists(vocab):
        check(os.environ.get("CI") != "true", f"{vocab} is absent (CI=true needs ../shared)")
        print(f"fill in the middle: skipped ({vocab} is absent)", flush=True)
        return
    from test_serve_fim import write_fim_model
    model = os.path.join(a.work, "fim-starcoder-vocab.gguf")
    write_fim_model(model, vocab)
    server = serve_util.Server(a.infernode, model, 1)
    try:
        pb, pb_grpc, _, _ = stubs
        import grpc
        prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
        with grpc.insecure_channel(server.addr) as ch:
            g = pb_grpc.InferenceStub(ch).Generate(pb.GenerateRequest(
                fim=pb.FimPrompt(prefix=prefix, suffix=suffix), max_new_tokens=12), timeout=60)
        r = node(a, server.http_port, [{"api": "completions", "stream": stream,
                                        "params": {"prompt": prefix, "suffix": suffix, "max_tokens": 12}}
                                       for stream in (False, True)])
        for x in r:
            check(choice(x).get("text") == g.text, f"suffix: {choice(x).get('text')!r} != gRPC fim {g.text!r}")
        check(r[0].get("usage", {}).get("prompt_tokens") == g.usage.prompt_tokens, f"suffix usage {r[0].get('usage')}")
    finally:
        server.kill()


def main():
    ap = argparse.ArgumentParser()
    for name in ("--infernode", "--model", "--slow-model", "--proto-dir", "--grpc-proto", "--node-modules", "--work",
                 "--vocab-dir"):
        ap.add_argument(name, required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    for np_ in (1, 2):
        server = serve_util.Server(a.infernode, a.model, np_)
        try:
            check(server.http_port is not None, f"np {np_}: the log names the http port")
            test_same_as_grpc(a, stubs, server, np_)
            if np_ == 1:
                test_options(a, stubs, server)
                test_logprobs(a, server)
                test_errors(a, server)
            os.kill(server.rank0_pid(), signal.SIGTERM)
            check(server.wait_exit(60) == 0, f"np {np_}: exit 0 after SIGTERM")
        finally:
            if FAILURES:
                print(server.log()[-3000:])
            server.kill()
    test_fim(a, stubs)
    test_tls_token_queue(a, a.work)
    test_slow_model(a)
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        return 1
    print("all HTTP API checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
