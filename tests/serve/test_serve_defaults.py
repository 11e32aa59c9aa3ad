"""One set of defaults (coordinator/request_defaults.h, docs/defaults.md): `infernode generate`
and the gRPC service give the same tokens for the same prompt when no option is given.

- generate -p TEXT --ids and Generate{text} with nothing else set: identical ids, for prompts
  with a special token typed in them ("<s>", "</s>": text on both) and without;
- the same for a --prompt-ids / token_ids prompt;
- Tokenize with add_special and parse_special unset = what Generate evaluates (its
  prompt_tokens) = add_special true, parse_special false; parse_special true differs on "<s>";
- ModelInfo's kv_cache_type is f16, and generate reports its KV cache in f16.

usage: test_serve_defaults.py --infernode BIN --model GGUF --proto-dir DIR --grpc-proto DIR"""
import argparse
import os
import signal
import subprocess
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402

PROMPTS = ["def fibonacci(n):", "<s>import os\n</s>print(", "class Point:\n    def __init__(self"]
N = 24
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def generate(a, *args):
    r = subprocess.run([a.infernode, "generate", "-m", a.model, "-n", str(N), "--ids", *args], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    check(r.returncode == 0, f"generate {args}: exit {r.returncode}: {r.stderr[-500:]}")
    return [int(t) for t in r.stdout.split()], r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    pb, pb_grpc, _, _ = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    server = serve_util.Server(a.infernode, a.model, 1)
    try:
        with grpc.insecure_channel(server.addr) as ch:
            inf = pb_grpc.InferenceStub(ch)
            for text in PROMPTS:
                cli_ids, err = generate(a, "-p", text)
                r = inf.Generate(pb.GenerateRequest(text=text, max_new_tokens=N), timeout=120)
                check(cli_ids == list(r.token_ids), f"{text!r}: generate {cli_ids} != gRPC {list(r.token_ids)}")
                unset = list(inf.Tokenize(pb.TokenizeRequest(text=text), timeout=30).token_ids)
                explicit = list(inf.Tokenize(pb.TokenizeRequest(text=text, add_special=True, parse_special=False),
                                             timeout=30).token_ids)
                check(unset == explicit, f"{text!r}: Tokenize unset {unset} != add_special, no parse_special {explicit}")
                check(r.usage.prompt_tokens == len(unset), f"{text!r}: Generate read {r.usage.prompt_tokens} prompt "
                      f"tokens, Tokenize gives {len(unset)}")
                if "<s>" in text:
                    parsed = list(inf.Tokenize(pb.TokenizeRequest(text=text, parse_special=True), timeout=30).token_ids)
                    check(parsed != unset, f"{text!r}: parse_special changes nothing: the test prompt is wrong")
                    cli_parsed, _ = generate(a, "-p", text, "--parse-special")
                    r_ids = inf.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=parsed), max_new_tokens=N),
                                         timeout=120)
                    check(cli_parsed == list(r_ids.token_ids), f"{text!r} --parse-special: {cli_parsed} != "
                          f"{list(r_ids.token_ids)}")
            ids = [1, 450, 4996, 17]
            cli_ids, err = generate(a, "--prompt-ids", ",".join(map(str, ids)))
            r = inf.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids), max_new_tokens=N), timeout=120)
            check(cli_ids == list(r.token_ids), f"token ids: generate {cli_ids} != gRPC {list(r.token_ids)}")
            check("in f16" in err, f"generate's KV cache is not f16: {err[:400]}")
            info = inf.ModelInfo(pb.ModelInfoRequest(), timeout=30)
            check(info.kv_cache_type == "f16", f"serve's KV cache: {info.kv_cache_type}")
    finally:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.wait_exit(60)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("defaults: generate and the gRPC service agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
