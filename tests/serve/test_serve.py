#!/usr/bin/python3
"""End to end: `mpirun -np 2 infernode serve` against Debian's python3-grpcio client.

  - health NOT_SERVING while loading, SERVING after, NOT_SERVING while draining;
  - unary and streaming generation agree; 16 concurrent greedy streams each equal to the same
    request alone; seeded sampling reproducible alone and in a crowd;
  - a client cancel stops generation for it within a step (metrics), deadlines, a full queue;
  - every bad request gets INVALID_ARGUMENT (or NOT_FOUND, FAILED_PRECONDITION) naming the field;
  - SIGTERM: new calls UNAVAILABLE, the call in flight finishes, exit 0.
After all of it the server still answers. usage: test_serve.py --infernode BIN --model GGUF
--proto-dir DIR --grpc-proto DIR --slow-model GGUF"""
import argparse
import concurrent.futures as cf
import os
import signal
import sys
import threading
import time

import grpc

import serve_util

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


class Client:
    def __init__(self, addr, stubs):
        self.pb, pb_grpc, self.hpb, hpb_grpc = stubs
        self.channel = grpc.insecure_channel(addr)
        self.inf = pb_grpc.InferenceStub(self.channel)
        self.health = hpb_grpc.HealthStub(self.channel)

    def request(self, prompt=None, ids=None, n=16, **kw):
        sampling = kw.pop("sampling", None)
        r = self.pb.GenerateRequest(max_new_tokens=n, **kw)
        if prompt is not None:
            r.text = prompt
        if ids is not None:
            r.token_ids.ids.extend(ids)
        if sampling:
            r.sampling.CopyFrom(self.pb.SamplingParams(**sampling))
        return r

    def generate(self, req, timeout=60):
        return self.inf.Generate(req, timeout=timeout)

    def stream(self, req, timeout=60):
        """(text, ids, last message)"""
        text, ids, last = "", [], None
        for msg in self.inf.GenerateStream(req, timeout=timeout):
            text += msg.text
            ids += list(msg.token_ids)
            last = msg
        return text, ids, last

    def status(self, service=""):
        return self.health.Check(self.hpb.HealthCheckRequest(service=service), timeout=10).status


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


PROMPTS = ["def fibonacci(n):\n    ", "import os\n", "class Stack:\n    def __init__(self):\n", "for i in range(10):",
           "# sort a list\n", "def add(a, b):\n    return", "x = [", "while True:\n    ", "print(", "def main():\n",
           "import numpy as np\n", "with open(", "try:\n    ", "return ", "if __name__ == '__main__':\n", "lambda x:"]


def test_generation(c):
    pb = c.pb
    req = c.request("def fibonacci(n):\n    ", n=24, ignore_eos=True)
    r = c.generate(req)
    check(r.finish_reason == pb.FINISH_REASON_LENGTH, f"unary finish_reason {r.finish_reason}")
    check(len(r.token_ids) == 24 and r.usage.completion_tokens == 24, f"unary token count {len(r.token_ids)}")
    check(r.usage.prompt_tokens > 0, "usage.prompt_tokens set")
    check(r.timings.time_to_first_token_seconds > 0, "timings.time_to_first_token_seconds set")
    text, ids, last = c.stream(req)
    check(ids == list(r.token_ids), "stream ids == unary ids")
    check(text == r.text, f"stream text {text!r} == unary text {r.text!r}")
    check(last.finish_reason == pb.FINISH_REASON_LENGTH and last.usage.completion_tokens == 24, "stream last message")
    # the ids round-trip through Detokenize to the same text
    d = c.inf.Detokenize(pb.DetokenizeRequest(token_ids=list(r.token_ids)), timeout=10)
    check(d.text == r.text, f"Detokenize(ids) {d.text!r} == generated text {r.text!r}")
    # a text prompt and its Tokenize ids generate the same tokens
    t = c.inf.Tokenize(pb.TokenizeRequest(text="def fibonacci(n):\n    ", add_special=True), timeout=10)
    r2 = c.generate(c.request(ids=list(t.token_ids), n=24, ignore_eos=True))
    check(list(r2.token_ids) == list(r.token_ids), "ids prompt == text prompt")
    # stop sequence: cut before it, finish_reason STOP
    if len(r.text) > 6:
        stop = r.text[3:6]
        rs = c.generate(c.request("def fibonacci(n):\n    ", n=24, ignore_eos=True, stop=[stop]))
        check(rs.finish_reason == pb.FINISH_REASON_STOP, f"stop finish_reason {rs.finish_reason}")
        check(rs.text == r.text[:r.text.index(stop)], f"stop text {rs.text!r}")
        st, _, _ = c.stream(c.request("def fibonacci(n):\n    ", n=24, ignore_eos=True, stop=[stop]))
        check(st == rs.text, f"streamed stop text {st!r} == {rs.text!r}")
    info = c.inf.ModelInfo(pb.ModelInfoRequest(), timeout=10)
    check(info.ranks == 2 and info.vocab_size > 0 and info.server_ctx_size > 0, f"ModelInfo {info}")


def test_concurrency(c):
    alone = {}
    reqs = {p: c.request(p, n=32, ignore_eos=True) for p in PROMPTS}
    for p, req in reqs.items():
        alone[p] = c.stream(req)[1]
    with cf.ThreadPoolExecutor(16) as ex:
        together = dict(zip(PROMPTS, ex.map(lambda p: c.stream(reqs[p])[1], PROMPTS)))
    same = sum(alone[p] == together[p] for p in PROMPTS)
    check(same == len(PROMPTS), f"16 concurrent greedy streams equal to alone: {same}/{len(PROMPTS)}")
    # seeded sampling: alone, then among 15 other sampled streams
    samp = dict(temperature=0.9, top_k=40, top_p=0.95, seed=1234)
    sreq = c.request("def main():\n", n=32, ignore_eos=True, sampling=samp)
    first = c.stream(sreq)[1]
    with cf.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(c.stream, sreq)] + [
            ex.submit(c.stream, c.request(p, n=32, ignore_eos=True, sampling=dict(temperature=1.0, seed=i)))
            for i, p in enumerate(PROMPTS[:15])]
        crowd = futs[0].result()[1]
        [f.result() for f in futs]
    check(first == crowd, "seeded sampling reproduces alone and in a crowd")
    full = c.stream(c.request("def main():\n", n=32, ignore_eos=True, sampling=dict(temperature=0.9, seed=1234,
                                                                                     repetition_penalty=1.1)))[1]
    again = c.stream(c.request("def main():\n", n=32, ignore_eos=True, sampling=dict(temperature=0.9, seed=1234,
                                                                                      repetition_penalty=1.1)))[1]
    check(full == again, "seeded sampling with full logits reproduces")


def wait_idle(server, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        m = server.metrics()
        if m.get("infernode_requests_running", 1) == 0 and m.get("infernode_requests_waiting", 1) == 0:
            return m
        time.sleep(0.05)
    return server.metrics()


def test_cancel_deadline(c, server):
    before = wait_idle(server)
    # 4000 tokens (the KV ring lets a request outgrow the context): stopping early shows clearly
    call = c.inf.GenerateStream(c.request(ids=[1, 2, 3], n=4000, ignore_eos=True), timeout=60)
    got = 0
    for _ in call:
        got += 1
        if got == 3:
            break
    # The server runs ahead of a client that reads slowly (its messages queue), so count from
    # just before the cancel: only the tokens of the steps until the server sees it.
    at_cancel = server.metrics()["infernode_generated_tokens_total"]
    call.cancel()
    t_cancel = time.time()
    after = wait_idle(server)
    check(time.time() - t_cancel < 2.0, f"slot freed {time.time() - t_cancel:.2f} s after the cancel")
    key = 'infernode_requests_finished_total{reason="cancelled"}'
    check(after.get(key, 0) == before.get(key, 0) + 1, f"cancel counted ({after.get(key)})")
    generated = after["infernode_generated_tokens_total"] - at_cancel
    # Steps go on until gRPC tells the server of the cancel (tens of ms, at about a millisecond
    # per token here); the request was for 4000 tokens, so far fewer means it was stopped early.
    check(generated < 1000, f"generation stopped soon after the cancel ({generated} more tokens)")
    time.sleep(0.3)
    check(server.metrics()["infernode_generated_tokens_total"] == after["infernode_generated_tokens_total"],
          "no tokens generated after the cancel")

    code, _ = code_of(lambda: c.stream(c.request(ids=[1, 2, 3], n=1000, ignore_eos=True), timeout=0.2))
    check(code == grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline: {code}")
    m = wait_idle(server)
    check(m.get("infernode_requests_running", 1) == 0, "deadline request freed its slot")
    ended = sum(m.get(f'infernode_requests_finished_total{{reason="{r}"}}', 0) for r in ("deadline", "cancelled"))
    check(ended == after.get(key, 0) + 1 or m.get('infernode_errors_total{code="DEADLINE_EXCEEDED"}', 0) >= 1,
          "the server ended the request at its deadline")


def test_bad_requests(c):
    pb = c.pb
    INVALID, UNIMPL = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED
    both = c.request("x", n=4)
    both.token_ids.ids.append(1)
    cases = [
        ("both text and ids", both, INVALID, "prompt"),
        ("no prompt", c.request(n=4), INVALID, "prompt"),
        ("id out of vocab", c.request(ids=[1, 999999], n=4), INVALID, "token_ids[1]"),
        ("negative id", c.request(ids=[-3], n=4), INVALID, "token_ids[0]"),
        ("temperature < 0", c.request("x", n=4, sampling=dict(temperature=-1)), INVALID, "temperature"),
        ("temperature NaN", c.request("x", n=4, sampling=dict(temperature=float("nan"))), INVALID, "temperature"),
        ("top_p 0", c.request("x", n=4, sampling=dict(top_p=0.0)), INVALID, "top_p"),
        ("top_p > 1", c.request("x", n=4, sampling=dict(top_p=1.5)), INVALID, "top_p"),
        ("top_k < 0", c.request("x", n=4, sampling=dict(top_k=-2)), INVALID, "top_k"),
        ("min_p 1", c.request("x", n=4, sampling=dict(min_p=1.0)), INVALID, "min_p"),
        ("repetition_penalty 0", c.request("x", n=4, sampling=dict(repetition_penalty=0)), INVALID, "repetition_penalty"),
        ("max_new_tokens 0", c.request("x", n=0), INVALID, "max_new_tokens"),
        ("max_new_tokens -5", c.request("x", n=-5), INVALID, "max_new_tokens"),
        ("max_new_tokens beyond the limit", c.request("x", n=2**21), INVALID, "max_new_tokens"),
        ("max_new_tokens beyond a ring that never drops", c.request("x", n=10**5, kv=pb.KvOptions(n_discard=0)),
         INVALID, "max_new_tokens"),
        ("max_new_tokens unset", pb.GenerateRequest(text="x"), INVALID, "max_new_tokens"),
        ("prompt longer than the context", c.request(ids=[1] * 5000, n=4), INVALID, "context"),
        ("empty stop", c.request("x", n=4, stop=[""]), INVALID, "stop[0]"),
        ("unknown session", c.request("x", n=4, session_id="abc"), grpc.StatusCode.NOT_FOUND, "session_id"),
        ("session id too long", c.request("x", n=4, session_id="a" * 65), INVALID, "session_id"),
        ("session and new_session", c.request("x", n=4, session_id="abc", new_session=True), INVALID, "new_session"),
        ("kv options on a session", c.request("x", n=4, session_id="abc", kv=pb.KvOptions(n_keep=2)), INVALID, "kv"),
        ("kv.ctx_size 0", c.request("x", n=4, kv=pb.KvOptions(ctx_size=0)), INVALID, "kv.ctx_size"),
        ("kv.ctx_size beyond the server's", c.request("x", n=4, kv=pb.KvOptions(ctx_size=10**6)), INVALID,
         "kv.ctx_size"),
        ("kv.n_keep = kv.ctx_size", c.request("x", n=4, kv=pb.KvOptions(ctx_size=16, n_keep=16)), INVALID, "kv.n_keep"),
        ("kv.n_keep negative", c.request("x", n=4, kv=pb.KvOptions(n_keep=-1)), INVALID, "kv.n_keep"),
        ("kv.n_discard -2", c.request("x", n=4, kv=pb.KvOptions(n_discard=-2)), INVALID, "kv.n_discard"),
        ("kv.n_discard beyond the window", c.request("x", n=4, kv=pb.KvOptions(ctx_size=16, n_keep=4, n_discard=13)),
         INVALID, "kv.n_discard"),
        ("prompt longer than kv.ctx_size", c.request(ids=[1] * 20, n=4, kv=pb.KvOptions(ctx_size=16)), INVALID,
         "context"),
        ("speculative on a server without it", c.request("x", n=4, speculative=pb.SpeculativeOptions(enabled=True)),
         grpc.StatusCode.FAILED_PRECONDITION, "speculative.enabled"),
    ]
    for name, req, want, field in cases:
        for fn in (c.generate, c.stream):
            code, details = code_of(lambda: fn(req))
            check(code == want and field in details, f"{name} via {fn.__name__}: {code} {details!r}")
    for name, req, want in (("unknown", pb.DeleteSessionRequest(session_id="abc"), grpc.StatusCode.NOT_FOUND),
                            ("no id", pb.DeleteSessionRequest(), INVALID)):
        code, details = code_of(lambda: c.inf.DeleteSession(req, timeout=10))
        check(code == want and "session_id" in details, f"DeleteSession {name}: {code} {details!r}")
    code, details = code_of(lambda: c.inf.Detokenize(pb.DetokenizeRequest(token_ids=[5, 10**7]), timeout=10))
    check(code == INVALID and "token_ids[1]" in details, f"Detokenize out of vocab: {code} {details!r}")
    # garbage bytes where a message should be
    raw = c.channel.unary_unary("/infernode.v1.Inference/Generate")
    code, details = code_of(lambda: raw(b"\xff\xff\xff", timeout=10))
    check(code == INVALID, f"malformed message: {code} {details!r}")
    code, _ = code_of(lambda: c.channel.unary_unary("/infernode.v1.Inference/Nope")(b"", timeout=10))
    check(code == UNIMPL, f"unknown method: {code}")


def test_full_queue(a, stubs):
    """One slot and a queue of one: a running request, a waiting one, then RESOURCE_EXHAUSTED."""
    server = serve_util.Server(a.infernode, a.model, 2, ["--max-seqs", "1", "--max-queue", "1"])
    try:
        c = Client(server.addr, stubs)
        long_req = c.request("import os\n", n=250, ignore_eos=True)
        with cf.ThreadPoolExecutor(2) as ex:
            running = ex.submit(c.stream, long_req)
            while server.metrics().get("infernode_requests_running", 0) < 1:
                time.sleep(0.005)
            waiting = ex.submit(c.stream, long_req)
            while server.metrics().get("infernode_requests_waiting", 0) < 1:
                time.sleep(0.005)
            code, details = code_of(lambda: c.generate(c.request("x", n=4)))
            check(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue" in details,
                  f"full queue: {code} {details!r}")
            check(len(running.result()[1]) == 250 and len(waiting.result()[1]) == 250, "queued request served later")
        # mpirun forwards SIGUSR1 to every rank (SIGTERM it turns into a kill): a drain too
        os.kill(server.proc.pid, signal.SIGUSR1)
        check(server.wait_exit(60) == 0, "exit 0 after SIGUSR1 to mpirun")
    finally:
        server.kill()


def test_auth(a, stubs):
    """--auth-token-file: calls need the bearer token, health does not."""
    token_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ifn_token_{os.getpid()}")
    with open(token_file, "w") as f:
        f.write("s3cret-token\n")
    server = serve_util.Server(a.infernode, a.model, 1, ["--auth-token-file", token_file])
    try:
        c = Client(server.addr, stubs)
        req = c.request(ids=[1, 2], n=4, ignore_eos=True)
        code, _ = code_of(lambda: c.inf.Generate(req, timeout=30))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"no token: {code}")
        code, _ = code_of(lambda: c.inf.Generate(req, timeout=30, metadata=[("authorization", "Bearer wrong")]))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"wrong token: {code}")
        r = c.inf.Generate(req, timeout=30, metadata=[("authorization", "Bearer s3cret-token")])
        check(len(r.token_ids) == 4, "the right token is served")
        check(c.status() == c.hpb.HealthCheckResponse.SERVING, "health needs no token")
        os.kill(server.rank0_pid(), signal.SIGTERM)
        check(server.wait_exit(60) == 0, "exit 0 after SIGTERM")
    finally:
        server.kill()
        os.unlink(token_file)


def test_loading_health(a, stubs):
    """Health answers NOT_SERVING while a slow model loads, then SERVING; on that model (slow
    enough that 1000 tokens take seconds), a cancel, a deadline and a drain."""
    server = serve_util.Server(a.infernode, a.slow_model, 2,
                               ["--quant", "w4a8-g32", "--max-seqs", "4", "--ctx-size", "1024",
                                "--drain-seconds", "600"], wait_serving=False)
    try:
        c = Client(server.addr, stubs)
        hpb = c.hpb
        first = c.status()
        code, details = code_of(lambda: c.generate(c.request(ids=[1], n=2)))
        loading = not any("serving " in line for line in server.lines)
        if check(loading, "still loading when probed (model too small to observe loading?)"):
            check(first == hpb.HealthCheckResponse.NOT_SERVING, f"health while loading: {first}")
            check(code == grpc.StatusCode.UNAVAILABLE, f"Generate while loading: {code} {details}")
        server.wait_line("serving ", 120)
        check(c.status() == hpb.HealthCheckResponse.SERVING, "health SERVING after loading")
        check(c.status("infernode.v1.Inference") == hpb.HealthCheckResponse.SERVING, "service health SERVING")
        code, _ = code_of(lambda: c.status("no.such.Service"))
        check(code == grpc.StatusCode.NOT_FOUND, f"health of an unknown service: {code}")
        test_cancel_deadline(c, server)
        test_drain(c, server)
    finally:
        server.kill()


def test_drain(c, server):
    """SIGTERM with a stream in flight: health NOT_SERVING (pushed to a watcher), new calls
    UNAVAILABLE, the stream finishes normally, every rank stops, exit 0. Run on the slow model:
    on the default one a fast machine finishes the whole stream before the SIGTERM lands."""
    hpb = c.hpb
    watch = c.health.Watch(hpb.HealthCheckRequest(service=""), timeout=600)
    check(next(watch).status == hpb.HealthCheckResponse.SERVING, "watch starts SERVING")
    result = {"ids": []}
    first = threading.Event()
    n = 4000  # seconds of work on the slow model (the KV ring lets it outgrow the context)

    def run():
        try:
            for msg in c.inf.GenerateStream(c.request(ids=[1, 2, 3], n=n, ignore_eos=True), timeout=600):
                result["ids"] += list(msg.token_ids)
                result["last"] = msg
                first.set()
        except grpc.RpcError as e:
            result["error"] = f"{e.code()} {e.details()}"
        first.set()

    t = threading.Thread(target=run)
    t.start()
    first.wait(120)
    running = len(result["ids"]) < n and "error" not in result
    if not check(running, f"the stream to drain was running at the SIGTERM "
                          f"({len(result['ids'])} tokens, {result.get('error')}):\n{server.log()}"):
        t.join(600)
        return
    os.kill(server.rank0_pid(), signal.SIGTERM)
    check(next(watch).status == hpb.HealthCheckResponse.NOT_SERVING, "watch sees NOT_SERVING on SIGTERM")
    code, _ = code_of(lambda: c.generate(c.request(ids=[1], n=4)))
    check(code == grpc.StatusCode.UNAVAILABLE, f"new call while draining: {code}")
    t.join(600)
    last = result.get("last")
    check(len(result["ids"]) == n and last is not None and last.finish_reason == c.pb.FINISH_REASON_LENGTH,
          f"the stream in flight finished during the drain ({len(result['ids'])} of {n} tokens, "
          f"{result.get('error')})")
    check(server.wait_exit(60) == 0, f"exit 0 after the drain:\n{server.log()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--slow-model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    t0 = time.time()
    test_loading_health(a, stubs)
    print(f"loading, cancel, deadline, drain: done ({time.time() - t0:.1f} s)", flush=True)
    server = serve_util.Server(a.infernode, a.model, 2, ["--max-seqs", "16"])
    try:
        c = Client(server.addr, stubs)
        for name, fn in (("generation", lambda: test_generation(c)), ("concurrency", lambda: test_concurrency(c)),
                         ("bad requests", lambda: test_bad_requests(c))):
            fn()
            print(f"{name}: done ({time.time() - t0:.1f} s)", flush=True)
        r = c.generate(c.request("def add(a, b):\n    return", n=8, ignore_eos=True))
        check(len(r.token_ids) == 8, "the server still answers after all of it")
        os.kill(server.rank0_pid(), signal.SIGTERM)
        check(server.wait_exit(60) == 0, "exit 0 after SIGTERM")
    finally:
        server.kill()
    test_full_queue(a, stubs)
    print(f"full queue: done ({time.time() - t0:.1f} s)", flush=True)
    test_auth(a, stubs)
    print(f"auth: done ({time.time() - t0:.1f} s)", flush=True)
    if FAILURES:
        print(f"{len(FAILURES)} failures", flush=True)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
