#!/usr/bin/python3
"""Fill-in-the-middle end to end: `mpirun -np 2 infernode serve` on a tiny random Llama whose
tokenizer is the StarCoder vocabulary (its tokenizer.ggml.* keys copied from ../shared at test
time, plus add_bos_token so that BOS handling shows), with Debian's python3-grpcio as the client
and tests/reference/bpe_reference.py as the reference for the prompt's ids:

  - Tokenize(fim) gives the reference's FIM ids; Generate(fim) evaluates them
    (usage.prompt_tokens = the reference's count + BOS, or without BOS with add_special false)
    and generates exactly what a token_ids request of those ids does (greedy), unary and
    streamed; ModelInfo says fim_supported;
  - fim with text or token_ids, fim with session_id, Tokenize fim with text or parse_special:
    INVALID_ARGUMENT naming the fields; the server still answers afterwards;
  - `infernode client generate|stream|tokenize --fim-prefix/--fim-suffix` against it, and
    `infernode generate --fim-prefix/--fim-suffix` run locally equal to its --prompt-ids run of
    the reference ids; usage errors with --prompt / --prompt-ids;
  - a model without FIM tokens (the shipped Llama-vocabulary model): FAILED_PRECONDITION naming
    <fim_prefix> on Generate and Tokenize, fim_supported false, the C tools say so too, and the
    server still answers;
  - a Code Llama model (Llama 2's vocabulary grown to Code Llama's, tests/reference/
    code_llama_reference.py): Tokenize(fim) gives Meta's prompt ids, Generate(fim) evaluates
    them, and the text of the middle (served and from `infernode generate`) equals Meta's
    decode_infilling of the generated ids, leading space kept; a plain completion's text is what
    it adds to the prompt's text.

usage: test_serve_fim.py --infernode BIN --vocab-dir DIR --no-fim-model GGUF --work DIR
                         --proto-dir DIR --grpc-proto DIR"""
import argparse
import json
import os
import subprocess
import sys
import time

import grpc

import serve_util

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import readback  # noqa: E402
from bpe_reference import ByteLevelBPE, missing_shared  # noqa: E402
from test_serve import code_of  # noqa: E402
from gguf_write import ARRAY, BOOL, INT32, STRING, UINT32, llama_metadata, llama_tensors, write_gguf  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402
import code_llama_reference as cl  # noqa: E402

FAILURES = []
N_CHECKS = [0]

CASES = [
    ("def add(a, b):\n    ", "\n    return c\n"),
    ("# Grüße, 世界 🌍\nname = \"", "\"\nprint(name)\n"),
    ("", "    return x\n"),
    ("def f():\n", ""),
    ("s = \"<fim_middle>\"  # <|endoftext|>\n", "\n<fim_suffix>"),
    ("  \n\n\tx = 1", "y = 2  \n\n"),
]


def check(cond, what):
    N_CHECKS[0] += 1
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def gguf_type(value):
    """The GGUF type of a metadata value as readback returns it."""
    if isinstance(value, bool):
        return BOOL, value
    if isinstance(value, int):
        return UINT32, value
    if isinstance(value, str):
        return STRING, value
    if all(isinstance(v, str) for v in value):
        return ARRAY, (STRING, value)
    return ARRAY, (INT32, value)


def write_random_llama(path, tok_md):
    """A 1-layer random Llama (dim 64, F16) with the tokenizer metadata tok_md ((key, type,
    value) entries) and as many embedding rows as it has tokens."""
    n_vocab = len(next(v[1] for k, _, v in tok_md if k == "tokenizer.ggml.tokens"))
    cfg = LlamaConfig(dim=64, hidden_dim=96, n_layers=1, n_heads=4, n_kv_heads=2,
                      vocab_size=n_vocab, context_length=256, tied=True)
    md = [e for e in llama_metadata(cfg, dtype="F16", name="infernode-fim-test") if not e[0].startswith("tokenizer.")]
    tensors, _ = llama_tensors(cfg, random_model(cfg, 5), "F16")
    write_gguf(path, md + tok_md, tensors)


def write_fim_model(path, vocab_path):
    """The random Llama with the vocabulary's 49152 tokens and its tokenizer.ggml.* keys; BOS
    is added, as some FIM models do, so that add_special matters."""
    _, vocab_md, _ = readback.read_gguf(vocab_path)
    tok_keys = {k: v for k, v in vocab_md.items() if k.startswith("tokenizer.ggml.")}
    write_random_llama(path, [(k,) + gguf_type(v) for k, v in tok_keys.items()]
                       + [("tokenizer.ggml.add_bos_token", BOOL, True)])


class Client:
    def __init__(self, addr, stubs):
        self.pb, pb_grpc, _, _ = stubs
        self.channel = grpc.insecure_channel(addr)
        self.inf = pb_grpc.InferenceStub(self.channel)

    def fim(self, prefix, suffix, n=8, **kw):
        return self.pb.GenerateRequest(fim=self.pb.FimPrompt(prefix=prefix, suffix=suffix), max_new_tokens=n, **kw)

    def ids(self, ids, n=8, **kw):
        return self.pb.GenerateRequest(token_ids=self.pb.TokenIds(ids=ids), max_new_tokens=n, **kw)

    def stream(self, req):
        ids, last = [], None
        for msg in self.inf.GenerateStream(req, timeout=60):
            ids += list(msg.token_ids)
            last = msg
        return ids, last


def run(cmd, timeout=120):
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def test_service(c, ref):
    pb = c.pb
    info = c.inf.ModelInfo(pb.ModelInfoRequest(), timeout=10)
    check(info.HasField("fim_supported") and info.fim_supported, f"ModelInfo fim_supported: {info.fim_supported}")
    for prefix, suffix in CASES:
        want = ref.encode_fim(prefix, suffix)
        tok = c.inf.Tokenize(pb.TokenizeRequest(fim=pb.FimPrompt(prefix=prefix, suffix=suffix), add_special=False),
                             timeout=10)
        check(list(tok.token_ids) == want, f"Tokenize fim {prefix!r} {suffix!r}: {list(tok.token_ids)} != {want}")
        tok = c.inf.Tokenize(pb.TokenizeRequest(fim=pb.FimPrompt(prefix=prefix, suffix=suffix), add_special=True),
                             timeout=10)
        check(list(tok.token_ids) == [ref.bos] + want, f"Tokenize fim add_special {prefix!r}: {list(tok.token_ids)}")

        r = c.inf.Generate(c.fim(prefix, suffix), timeout=60)
        check(r.usage.prompt_tokens == len(want) + 1, f"fim {prefix!r}: prompt_tokens {r.usage.prompt_tokens} != "
              f"{len(want)} + BOS")
        r_ids = c.inf.Generate(c.ids([ref.bos] + want), timeout=60)
        check(len(r.token_ids) > 0 and list(r.token_ids) == list(r_ids.token_ids),
              f"fim {prefix!r}: {list(r.token_ids)} != token_ids request {list(r_ids.token_ids)}")
        check(r.text == r_ids.text, f"fim {prefix!r}: text {r.text!r} != {r_ids.text!r}")

        r = c.inf.Generate(c.fim(prefix, suffix, add_special=False), timeout=60)
        r_ids = c.inf.Generate(c.ids(want), timeout=60)
        check(r.usage.prompt_tokens == len(want) and list(r.token_ids) == list(r_ids.token_ids),
              f"fim {prefix!r} add_special false: {r.usage.prompt_tokens} tokens, {list(r.token_ids)} != "
              f"{list(r_ids.token_ids)}")
    prefix, suffix = CASES[0]
    unary = c.inf.Generate(c.fim(prefix, suffix, n=12), timeout=60)
    ids, last = c.stream(c.fim(prefix, suffix, n=12))
    check(ids == list(unary.token_ids) and last.usage.prompt_tokens == unary.usage.prompt_tokens,
          f"streamed fim {ids} != unary {list(unary.token_ids)}")
    # Neither prefix nor suffix set: both empty.
    r = c.inf.Generate(pb.GenerateRequest(fim=pb.FimPrompt(), max_new_tokens=4), timeout=60)
    check(r.usage.prompt_tokens == len(ref.encode_fim("", "")) + 1, f"empty FimPrompt: {r.usage.prompt_tokens}")


def test_bad_requests(c):
    pb = c.pb
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    fim = pb.FimPrompt(prefix="a", suffix="b")
    sess = c.inf.Generate(pb.GenerateRequest(text="x = 1\n", max_new_tokens=2, new_session=True), timeout=60)
    check(sess.session_id != "", "new_session gives a session id")
    cases = [
        ("fim and text", pb.GenerateRequest(fim=fim, text="x", max_new_tokens=4), ["text", "fim"]),
        ("fim and token_ids", pb.GenerateRequest(fim=fim, token_ids=pb.TokenIds(ids=[5]), max_new_tokens=4),
         ["token_ids", "fim"]),
        ("all three", pb.GenerateRequest(fim=fim, text="x", token_ids=pb.TokenIds(ids=[5]), max_new_tokens=4),
         ["text, token_ids and fim"]),
        ("fim on a session", pb.GenerateRequest(fim=fim, session_id=sess.session_id, max_new_tokens=4),
         ["fim", "session_id"]),
    ]
    for name, req, words in cases:
        for fn in (c.inf.Generate, lambda r, timeout: c.stream(r)):
            code, details = code_of(lambda: fn(req, timeout=30))
            check(code == INVALID and all(w in details for w in words), f"{name}: {code} {details!r}")
    for name, req, words in (("text and fim", pb.TokenizeRequest(text="x", fim=fim), ["text", "fim"]),
                             ("parse_special", pb.TokenizeRequest(fim=fim, parse_special=True), ["parse_special"])):
        code, details = code_of(lambda: c.inf.Tokenize(req, timeout=10))
        check(code == INVALID and all(w in details for w in words), f"Tokenize {name}: {code} {details!r}")
    # The session is untouched by the refused request.
    r = c.inf.Generate(pb.GenerateRequest(text="y = 2\n", session_id=sess.session_id, max_new_tokens=2), timeout=60)
    check(r.session_id == sess.session_id and r.usage.completion_tokens > 0, "the session still answers")
    c.inf.DeleteSession(pb.DeleteSessionRequest(session_id=sess.session_id), timeout=10)


def test_c_client(a, addr, c, ref):
    prefix, suffix = CASES[1]
    want = ref.encode_fim(prefix, suffix)
    base = [a.infernode, "client"]
    rc, out, err = run(base + ["tokenize", "--addr", addr, "--fim-prefix", prefix, "--fim-suffix", suffix,
                               "--no-special"])
    check(rc == 0 and out.split() == [str(i) for i in want], f"client tokenize --fim-*: {rc} {out!r} {err!r}")
    server = c.inf.Generate(c.fim(prefix, suffix, n=10), timeout=60)
    for cmd in ("generate", "stream"):
        rc, out, err = run(base + [cmd, "--addr", addr, "--fim-prefix", prefix, "--fim-suffix", suffix, "-n", "10",
                                   "--json"])
        msgs = [json.loads(line) for line in out.splitlines()] if rc == 0 else []
        ids = [i for m in msgs for i in m.get("token_ids", [])]
        usage = msgs[-1].get("usage", {}) if msgs else {}
        check(rc == 0 and ids == list(server.token_ids) and usage.get("prompt_tokens") == len(want) + 1,
              f"client {cmd} --fim-*: exit {rc}, ids {ids} != {list(server.token_ids)}, usage {usage}, {err!r}")
    # Either option alone: the other part is empty.
    only = c.inf.Generate(c.fim("", "return 1\n", n=6), timeout=60)
    rc, out, err = run(base + ["generate", "--addr", addr, "--fim-suffix", "return 1\n", "-n", "6", "--json"])
    check(rc == 0 and json.loads(out)["token_ids"] == list(only.token_ids), f"client --fim-suffix alone: {out!r} {err!r}")
    for extra in (["-p", "x"], ["--ids", "1,2"]):
        rc, out, err = run(base + ["generate", "--addr", addr, "--fim-prefix", "a"] + extra)
        check(rc == 2 and "--fim-prefix" in err and out == "", f"client --fim-prefix with {extra}: {rc} {err!r}")
    rc, out, err = run(base + ["tokenize", "--addr", addr, "--fim-prefix", "a", "--parse-special"])
    check(rc == 2 and "--parse-special" in err, f"client tokenize --fim-prefix --parse-special: {rc} {err!r}")
    rc, out, err = run(base + ["info", "--addr", addr])
    check(rc == 0 and "fim_supported: true\n" in out, f"client info: {out!r}")


def test_local_generate(a, model, ref):
    prefix, suffix = CASES[0]
    want = [ref.bos] + ref.encode_fim(prefix, suffix)
    gen = [a.infernode, "generate", "-m", model, "-n", "10", "--temp", "0", "--ids"]
    rc, fim_out, err = run(gen + ["--fim-prefix", prefix, "--fim-suffix", suffix])
    check(rc == 0 and f"prompt {len(want)} tokens" in err, f"generate --fim-*: exit {rc}, {err!r}")
    rc, ids_out, err = run(gen + ["--prompt-ids", ",".join(map(str, want))])
    check(rc == 0 and fim_out.split() != [] and fim_out == ids_out,
          f"generate --fim-* {fim_out!r} != --prompt-ids of the reference ids {ids_out!r} ({err!r})")
    for extra in (["-p", "x"], ["--prompt-ids", "1"]):
        rc, out, err = run(gen + ["--fim-suffix", "a"] + extra)
        check(rc == 2 and "--fim-prefix/--fim-suffix" in err, f"generate --fim-suffix with {extra}: {rc} {err!r}")


def test_no_fim_model(a, stubs):
    server = serve_util.Server(a.infernode, a.no_fim_model, 1)
    try:
        c = Client(server.addr, stubs)
        pb = c.pb
        info = c.inf.ModelInfo(pb.ModelInfoRequest(), timeout=10)
        check(info.HasField("fim_supported") and not info.fim_supported, "ModelInfo fim_supported false")
        code, details = code_of(lambda: c.inf.Generate(c.fim("def f(", "):\n"), timeout=30))
        check(code == grpc.StatusCode.FAILED_PRECONDITION and "<fim_prefix>" in details and "fim" in details,
              f"Generate fim without FIM tokens: {code} {details!r}")
        code, details = code_of(lambda: c.stream(c.fim("def f(", "):\n")))
        check(code == grpc.StatusCode.FAILED_PRECONDITION and "<fim_prefix>" in details, f"stream: {code} {details!r}")
        code, details = code_of(lambda: c.inf.Tokenize(pb.TokenizeRequest(fim=pb.FimPrompt(prefix="a")), timeout=10))
        check(code == grpc.StatusCode.FAILED_PRECONDITION and "<fim_prefix>" in details, f"Tokenize: {code} {details!r}")
        rc, out, err = run([a.infernode, "client", "generate", "--addr", server.addr, "--fim-prefix", "def f("])
        check(rc == 1 and err.startswith("infernode: error: FAILED_PRECONDITION: ") and "<fim_prefix>" in err,
              f"client against a model without FIM tokens: {rc} {err!r}")
        r = c.inf.Generate(pb.GenerateRequest(text="def add(a, b):\n", max_new_tokens=4, ignore_eos=True), timeout=60)
        check(len(r.token_ids) == 4, "the server still answers")
    finally:
        server.kill()
    rc, out, err = run([a.infernode, "generate", "-m", a.no_fim_model, "--fim-prefix", "def f(", "-n", "2"])
    check(rc == 2 and "<fim_prefix>" in err and a.no_fim_model in err, f"generate on a model without FIM: {rc} {err!r}")


def test_code_llama(a, stubs):
    llama_gguf = os.path.join(a.vocab_dir, "ggml-vocab-llama-spm.gguf")
    sp_model = os.path.join(a.vocab_dir, "llama2-tokenizer.model")
    for path in (llama_gguf, sp_model):
        if not check(os.path.exists(path), f"{path} is missing"):
            return
    ref = cl.CodeLlamaReference(sp_model)
    model = os.path.join(a.work, "fim-code-llama-vocab.gguf")
    write_random_llama(model, cl.gguf_tokenizer_metadata(llama_gguf))
    server = serve_util.Server(a.infernode, model, 1)
    try:
        c = Client(server.addr, stubs)
        pb = c.pb
        info = c.inf.ModelInfo(pb.ModelInfoRequest(), timeout=10)
        check(info.fim_supported, "Code Llama: ModelInfo fim_supported")
        starts_with_space = 0
        for prefix, suffix in CASES:
            want = ref.encode_fim(prefix, suffix)
            tok = c.inf.Tokenize(pb.TokenizeRequest(fim=pb.FimPrompt(prefix=prefix, suffix=suffix), add_special=True),
                                 timeout=10)
            check(list(tok.token_ids) == want, f"Code Llama Tokenize fim {prefix!r} {suffix!r}: {list(tok.token_ids)} "
                  f"!= {want}")
            r = c.inf.Generate(c.fim(prefix, suffix, n=12), timeout=60)
            check(r.usage.prompt_tokens == len(want), f"Code Llama fim {prefix!r}: {r.usage.prompt_tokens} prompt "
                  f"tokens, want {len(want)}")
            middle = ref.decode_middle(r.token_ids)
            check(len(r.token_ids) > 0 and r.text == middle,
                  f"Code Llama fim {prefix!r}: text {r.text!r} != decode_infilling {middle!r} of {list(r.token_ids)}")
            starts_with_space += r.text.startswith(" ")
        check(starts_with_space > 0, "some served middle starts with a space (the case the leading space matters in)")
        # A plain completion continues the prompt's text too: its text is what decoding prompt
        # and completion together adds to the prompt's.
        for prompt in ("def add(a, b):", "The cat", "x = [1, 2"):
            r = c.inf.Generate(pb.GenerateRequest(text=prompt, max_new_tokens=8), timeout=60)
            ids = ref.sp.encode(prompt, add_bos=True)
            whole, alone = ref.sp.decode(ids + list(r.token_ids)), ref.sp.decode(ids)
            check(r.usage.prompt_tokens == len(ids) and whole.startswith(alone) and r.text == whole[len(alone):],
                  f"completion of {prompt!r}: {r.text!r} != {whole[len(alone):]!r}")
    finally:
        server.kill()
    prefix, suffix = CASES[0]
    gen = [a.infernode, "generate", "-m", model, "-n", "12", "--temp", "0", "--fim-prefix", prefix, "--fim-suffix", suffix]
    rc, text, err = run(gen)
    rc_ids, ids, err_ids = run(gen + ["--ids"])
    middle = ref.decode_middle([int(x) for x in ids.split()]) if rc_ids == 0 else None
    check(rc == 0 and rc_ids == 0 and text.rstrip("\n") == middle,
          f"Code Llama generate --fim-*: {text!r} != decode_infilling {middle!r} ({err!r} {err_ids!r})")


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--infernode", "--vocab-dir", "--no-fim-model", "--work", "--proto-dir", "--grpc-proto"):
        ap.add_argument(opt, required=True)
    a = ap.parse_args()
    vocab = os.path.join(a.vocab_dir, "ggml-vocab-starcoder.gguf")
    if not os.path.exists(vocab):
        return missing_shared(vocab)
    t0 = time.time()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "fim-starcoder-vocab.gguf")
    write_fim_model(model, vocab)
    ref = ByteLevelBPE(readback.read_gguf(model)[1])  # the reference reads the served file itself
    check(ref.add_bos and ref.bos == 0, "the test model adds BOS (<|endoftext|>, id 0)")
    print(f"model written ({time.time() - t0:.1f} s)", flush=True)
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    server = serve_util.Server(a.infernode, model, 2)
    try:
        c = Client(server.addr, stubs)
        test_service(c, ref)
        print(f"service: done ({time.time() - t0:.1f} s)", flush=True)
        test_bad_requests(c)
        print(f"bad requests: done ({time.time() - t0:.1f} s)", flush=True)
        test_c_client(a, server.addr, c, ref)
        print(f"C client: done ({time.time() - t0:.1f} s)", flush=True)
        r = c.inf.Generate(c.fim(*CASES[0], n=4), timeout=60)
        check(r.usage.completion_tokens > 0, "the server still answers after all of it")
    finally:
        server.kill()
    test_local_generate(a, model, ref)
    print(f"local generate: done ({time.time() - t0:.1f} s)", flush=True)
    test_no_fim_model(a, stubs)
    print(f"model without FIM tokens: done ({time.time() - t0:.1f} s)", flush=True)
    test_code_llama(a, stubs)
    print(f"Code Llama: done ({time.time() - t0:.1f} s)", flush=True)
    print(f"{N_CHECKS[0] - len(FAILURES)} passed, {len(FAILURES)} failed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
