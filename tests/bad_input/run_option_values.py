#!/usr/bin/python3
"""A numeric option given something that is not its number: every subcommand exits 2 (usage)
and names the option and the value on stderr ("--temp: 'abc' is not a number"), whichever way
the value is written (--opt VALUE, --opt=VALUE, -o VALUE, -oVALUE), before it loads anything.

  run_option_values.py --infernode BIN --model MODEL.gguf
"""
import argparse
import subprocess
import sys

TIMEOUT = 60

# (subcommand words, the bad option as typed, what stderr must name the option as, value)
CASES = [
    (["generate"], ["--temp", "abc"], "--temp", "abc"),
    (["generate"], ["--temp=abc"], "--temp", "abc"),
    (["generate"], ["-n", "x"], "-n", "x"),
    (["generate"], ["-nx"], "-n", "x"),
    (["generate"], ["--top-k", "1.5"], "--top-k", "1.5"),
    (["generate"], ["--seed", "-1"], "--seed", "-1"),
    (["generate"], ["--ctx-size", "0"], "--ctx-size", "0"),
    (["client", "generate", "--addr", "127.0.0.1:1", "-p", "hi"], ["--temp", "abc"], "--temp", "abc"),
    (["client", "generate", "--addr", "127.0.0.1:1", "-p", "hi"], ["--timeout", "0"], "--timeout", "0"),
    (["client", "generate", "--addr", "127.0.0.1:1", "-p", "hi"], ["-n", "many"], "-n", "many"),
    (["quantize", "-o", "/nonexistent/out.gguf", "--scheme", "gptq-w4-g128"], ["--damp", "abc"], "--damp", "abc"),
    (["quantize", "-o", "/nonexistent/out.gguf", "--scheme", "gptq-w4-g128"], ["--calib-tokens", "10"],
     "--calib-tokens", "10"),
    (["quantize", "-o", "/nonexistent/out.gguf", "--scheme", "rtn-w8"], ["-t", "0"], "-t", "0"),
    (["eval", "ppl"], ["--ctx", "1"], "--ctx", "1"),
    (["eval", "ppl"], ["--stride", "abc"], "--stride", "abc"),
    (["eval", "humaneval"], ["--temp", "hot"], "--temp", "hot"),
    (["eval", "humaneval"], ["-k", "1,x"], "-k", "1,x"),
    (["bench"], ["--threads", "a,b"], "--threads", "a,b"),
    (["bench"], ["--reps", "1,2"], "--reps", "1,2"),
    (["bench", "kernels"], ["--m", "0"], "--m", "0"),
    (["bench", "kv"], ["--ctx", "abc"], "--ctx", "abc"),
    (["bench", "serve"], ["--gen", "0"], "--gen", "0"),
    (["bench", "spec"], ["--temp", "-1"], "--temp", "-1"),
    (["serve"], ["--port", "http"], "--port", "http"),
    (["serve"], ["--max-seqs=0"], "--max-seqs", "0"),
    (["serve"], ["--session-ttl", "0"], "--session-ttl", "0"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    failed = 0
    for words, bad, option, value in CASES:
        needs_model = words[0] in ("generate", "quantize", "eval", "serve") or words[:2] == ["bench", "spec"]
        cmd = [a.infernode, *words, *(["-m", a.model] if needs_model else []), *bad]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            failed += 1
            print(f"FAIL {' '.join(cmd[1:])}: still running after {TIMEOUT} s", flush=True)
            continue
        want = f"{option}: '{value}' is not "
        line = next((ln for ln in p.stderr.splitlines() if want in ln), None)
        if p.returncode == 2 and line:
            print(f"PASS {' '.join(words[:2])} {' '.join(bad)}: {line}", flush=True)
        else:
            failed += 1
            print(f"FAIL {' '.join(cmd[1:])}: exit {p.returncode}, stderr without \"{want}...\": "
                  f"{p.stderr.strip()[-300:]!r}", flush=True)
    print(f"{len(CASES) - failed}/{len(CASES)} cases passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
