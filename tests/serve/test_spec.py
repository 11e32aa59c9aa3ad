#!/usr/bin/python3
"""Speculative decoding through the service, under a real mpirun, against Debian's grpcio.

Greedy output with speculation (the shipped draft model, and prompt lookup) must be exactly
the output without it, which each TP degree's own plain server gives:
  - 24 code prompts x 64 tokens, all submitted at once (continuous batching: verification
    steps share the batch with other sequences' decodes and prefills), at TP 1 and 2;
  - through a small KV ring (40 positions, 4 sinks, 8 dropped at a time) over 120 tokens, so
    that the ring drops entries while sequences speculate;
  - a chat session over two turns.
Sampled output with a seed must be the same alone and in a crowd (the adaptive K depends only
on the sequence's own acceptance). Also: per-request off and K cap, bad speculative options,
ModelInfo, metrics and Usage counts, and servers that must refuse to start (a draft with
another vocabulary, --spec draft without a draft, a missing draft file).
That sampled output keeps the target's distribution is tests/spec/test_spec_sampling.py.
usage: test_spec.py --infernode BIN --model GGUF --draft GGUF --other-vocab GGUF --proto-dir DIR
--grpc-proto DIR"""
import argparse
import concurrent.futures as cf
import os
import subprocess
import sys
import time

import grpc

import serve_util
from test_serve import PROMPTS, Client, code_of

FAILURES = []

MORE_PROMPTS = ["def read_file(path):\n    with open(path) as f:\n", "class Node:\n    def __init__(self, value):\n",
                "import sys\nimport os\n", "def is_prime(n):\n    ", "    for key, value in d.items():\n",
                "raise ValueError(", "def __repr__(self):\n        return ", "assert "]
ALL_PROMPTS = PROMPTS + MORE_PROMPTS
RING = dict(ctx_size=40, n_keep=4, n_discard=8)


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def greedy(c, prompt, n=64, **kw):
    return c.request(prompt, n=n, ignore_eos=True, sampling=dict(temperature=0.0), **kw)


def run_all(c, reqs, workers=24):
    """The last message of each request, all submitted at once."""
    with cf.ThreadPoolExecutor(workers) as ex:
        futs = [ex.submit(c.stream, r, 120) for r in reqs]
        return [f.result() for f in futs]


def chat(c, turns, **kw):
    """Ids of each turn of a session (greedy)."""
    out, sid = [], None
    for i, text in enumerate(turns):
        r = c.request(text, n=24, ignore_eos=True, sampling=dict(temperature=0.0), **kw)
        if sid:
            r.session_id = sid
        else:
            r.new_session = True
        resp = c.generate(r)
        sid = resp.session_id
        out.append(list(resp.token_ids))
    return out


class Outputs:
    """What a server produced for the workload the test compares across servers."""

    def __init__(self, c, concurrent):
        reqs = [greedy(c, p) for p in ALL_PROMPTS]
        ring_reqs = [greedy(c, p, n=120, kv=c.pb.KvOptions(**RING)) for p in ALL_PROMPTS[:6]]
        if concurrent:
            res = run_all(c, reqs + ring_reqs)
        else:
            res = [c.stream(r, 120) for r in reqs + ring_reqs]
        self.ids = [ids for _, ids, _ in res[:len(reqs)]]
        self.ring = [ids for _, ids, _ in res[len(reqs):]]
        self.ring_discards = [last.kv_ring_discards for _, _, last in res[len(reqs):]]
        self.usage = [last.usage for _, _, last in res]
        self.chat = chat(c, ["def parse(line):\n", "\n\ndef main():\n", "\n    return"])


def compare(name, got, want):
    for what in ("ids", "ring", "chat"):
        a, b = getattr(got, what), getattr(want, what)
        bad = [i for i in range(len(b)) if a[i] != b[i]]
        check(not bad, f"{name}: {what} differ from plain decoding for {len(bad)} of {len(b)} "
              f"(first: #{bad[0] if bad else 0}: {a[bad[0]][:12] if bad else ''} vs {b[bad[0]][:12] if bad else ''})")
    check(all(d >= 5 for d in got.ring_discards), f"{name}: the ring dropped entries in every long request "
          f"({got.ring_discards})")
    proposed = sum(u.draft_tokens_proposed for u in got.usage)
    accepted = sum(u.draft_tokens_accepted for u in got.usage)
    steps = sum(u.speculative_steps for u in got.usage)
    check(proposed > 0 and 0 < accepted <= proposed and steps > 0,
          f"{name}: Usage counts proposals ({proposed} proposed, {accepted} accepted, {steps} steps)")
    print(f"{name}: identical to plain decoding; {accepted}/{proposed} proposals accepted "
          f"({accepted / max(proposed, 1):.2f}), mean K {proposed / max(steps, 1):.2f}", flush=True)
    return proposed, accepted


def test_options(c, server, name, max_draft):
    pb = c.pb
    r = c.generate(greedy(c, "import os\n", speculative=pb.SpeculativeOptions(enabled=False)))
    check(r.usage.draft_tokens_proposed == 0 and r.usage.speculative_steps == 0,
          f"{name}: speculative.enabled false proposes nothing ({r.usage.draft_tokens_proposed})")
    r = c.generate(greedy(c, "import os\n", n=96, speculative=pb.SpeculativeOptions(max_draft_tokens=2)))
    check(0 < r.usage.draft_tokens_proposed <= 2 * r.usage.speculative_steps,
          f"{name}: max_draft_tokens 2 caps K ({r.usage.draft_tokens_proposed} in {r.usage.speculative_steps} steps)")
    for bad in (0, -1, max_draft + 1):
        code, msg = code_of(lambda: c.generate(greedy(c, "x", speculative=pb.SpeculativeOptions(max_draft_tokens=bad))))
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "speculative.max_draft_tokens" in msg,
              f"{name}: max_draft_tokens {bad}: {code} {msg}")
    info = c.inf.ModelInfo(pb.ModelInfoRequest(), timeout=10)
    check(info.max_draft_tokens == max_draft, f"{name}: ModelInfo max_draft_tokens {info.max_draft_tokens}")
    m = server.metrics()
    prop, acc = m.get("infernode_spec_proposed_tokens_total", 0), m.get("infernode_spec_accepted_tokens_total", 0)
    check(prop > 0 and 0 < acc <= prop, f"{name}: metrics count proposals ({prop} proposed, {acc} accepted)")
    check(m.get("infernode_spec_draft_tokens_count", 0) > 0, f"{name}: metrics histogram of K")
    return info


def test_seeded(c, name):
    """A seeded sampled request: the same tokens alone and among 12 other sampled requests."""
    samp = dict(temperature=0.8, top_k=40, seed=77)
    alone = c.stream(c.request("def fibonacci(n):\n    ", n=48, ignore_eos=True, sampling=samp))[1]
    others = [c.request(p, n=48, ignore_eos=True, sampling=dict(temperature=1.0, seed=i))
              for i, p in enumerate(ALL_PROMPTS[:12])]
    res = run_all(c, others + [c.request("def fibonacci(n):\n    ", n=48, ignore_eos=True, sampling=samp)])
    check(res[-1][1] == alone, f"{name}: seeded sampling reproduces alone and in a crowd")


def serve(a, np_, args):
    return serve_util.Server(a.infernode, a.model, np_, ["--max-seqs", "16", "--step-tokens", "512"] + args)


def refuses(a, args, want, what):
    cmd = serve_util.mpi_util.mpirun_cmd(1, [a.infernode, "serve", "-m", a.model, "--port", "0", "--metrics-port", "-1",
                                             "--http-port", "-1"] + args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    check(p.returncode != 0 and want in p.stderr, f"{what}: exit {p.returncode}, stderr: {p.stderr[-400:]}")


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--infernode", "--model", "--draft", "--other-vocab", "--proto-dir", "--grpc-proto"):
        ap.add_argument(opt, required=True)
    a = ap.parse_args()
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    t0 = time.time()
    draft = ["--draft-model", a.draft]
    for np_ in (1, 2):
        server = serve(a, np_, [])
        try:
            want = Outputs(Client(server.addr, stubs), concurrent=False)
        finally:
            server.kill()
        for mode, args in (("draft", draft), ("ngram", ["--spec", "ngram"])):
            name = f"tp {np_} {mode}"
            server = serve(a, np_, args)
            try:
                c = Client(server.addr, stubs)
                compare(name, Outputs(c, concurrent=True), want)
                if np_ == 1:
                    info = test_options(c, server, name, 8)
                    check(info.speculative == mode, f"{name}: ModelInfo speculative '{info.speculative}'")
                    if mode == "draft":
                        check(info.draft_model == os.path.basename(a.draft) and "f16" in info.draft_quantization,
                              f"{name}: ModelInfo draft '{info.draft_model}' '{info.draft_quantization}'")
                    test_seeded(c, name)
            finally:
                server.kill()
            print(f"{name}: done ({time.time() - t0:.1f} s)", flush=True)
    refuses(a, ["--draft-model", a.other_vocab], "context size 256", "a draft with a shorter context than the server's")
    refuses(a, ["--draft-model", a.other_vocab, "--ctx-size", "128"], f"--draft-model {a.other_vocab}: its vocabulary has",
            "a draft of another vocabulary")
    refuses(a, ["--spec", "draft"], "--spec draft needs --draft-model", "--spec draft without a draft")
    refuses(a, ["--draft-model", a.draft + ".missing"], a.draft + ".missing", "a missing draft file")
    refuses(a, ["--spec-max-draft", "17", "--spec", "ngram"], "--spec-max-draft", "--spec-max-draft 17")
    print(f"refusals: done ({time.time() - t0:.1f} s)", flush=True)
    if FAILURES:
        print(f"{len(FAILURES)} failures", flush=True)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
