#!/usr/bin/python3
"""`infernode bench FILE` (llama-bench's tests on a user's model file) and
tools/bench/vs-llamacpp.sh: the output's format and sane values, never its speed.

  test_bench_file.py --infernode BIN --work DIR --group {format,llama2c,bad_input,script}
                     [--shared DIR]

format     a tiny Q8_0/F32 GGUF written by tests/reference/gguf_write.py: the JSON lines
           (-o jsonl) have every field, with the values asked for and finite positive t/s;
           the Markdown table has one row per test; -m FILE, 'bench model FILE', --depth,
           -p 0, --quant and the random-shape form still work.
llama2c    the same on ../shared/models/stories260K.bin (a llama2.c checkpoint); skips (77)
           when it is absent unless CI=true.
bad_input  a missing file, a file that is no model, a test longer than the model's context:
           exit 1 with a message naming the file or the context; misused options: exit 2.
script     vs-llamacpp.sh against a stand-in llama-bench that prints llama-bench's JSON lines:
           the table has both engines, and the ratio is (A1 + A2) / 2 / B.
"""
import argparse
import json
import math
import os
import re
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import gguf_write  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402

CFG = LlamaConfig(dim=64, hidden_dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
                  context_length=64)
TIMEOUT = 120
FIELDS = {"engine": str, "model": str, "arch": str, "model_size": int, "model_n_params": int,
          "quant": str, "n_ranks": int, "n_threads": int, "test": str, "n_prompt": int,
          "n_gen": int, "n_depth": int, "reps": int, "avg_ts": float, "stddev_ts": float,
          "allreduce_us": type(None)}


class Failure(Exception):
    pass


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(cmd)}: still running after {TIMEOUT} s")


def bench_ok(infernode, args):
    p = run([infernode, "bench", *args])
    if p.returncode != 0:
        raise Failure(f"bench {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-400:]!r}")
    return p.stdout


def json_rows(out, what):
    rows = []
    for line in out.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise Failure(f"{what}: a line that is not JSON: {line!r}")
    return rows


def check_row(row, want, what):
    """Every field with its type; the values in `want`; sane tokens/s."""
    for key, kind in FIELDS.items():
        if key not in row:
            raise Failure(f"{what}: no field {key!r} in {row}")
        if kind is float and isinstance(row[key], int):
            continue
        if not isinstance(row[key], kind) or (kind is int and isinstance(row[key], bool)):
            raise Failure(f"{what}: {key} = {row[key]!r} is not {kind.__name__}")
    if set(row) != set(FIELDS):
        raise Failure(f"{what}: fields {sorted(set(row) - set(FIELDS))} are not documented")
    for key, value in want.items():
        if row[key] != value:
            raise Failure(f"{what}: {key} = {row[key]!r}, expected {value!r}")
    if not (math.isfinite(row["avg_ts"]) and row["avg_ts"] > 0):
        raise Failure(f"{what}: avg_ts = {row['avg_ts']} is not a positive number")
    if not (math.isfinite(row["stddev_ts"]) and row["stddev_ts"] >= 0):
        raise Failure(f"{what}: stddev_ts = {row['stddev_ts']} is not a number >= 0")
    if row["model_size"] <= 0 or row["model_n_params"] <= 0:
        raise Failure(f"{what}: model_size {row['model_size']}, model_n_params {row['model_n_params']}")
    if row["test"] != (f"pp{row['n_prompt']}" if row["n_prompt"] else
                       f"tg{row['n_gen']}" + (f"@d{row['n_depth']}" if row["n_depth"] else "")):
        raise Failure(f"{what}: test {row['test']!r} does not match n_prompt/n_gen/n_depth")


def expect_tests(rows, tests, what):
    got = [(r["test"], r["n_threads"]) for r in rows]
    if got != tests:
        raise Failure(f"{what}: tests {got}, expected {tests}")


def check_file(infernode, path, stored):
    """The file form on one model whose weights are described as `stored` ("q8_0 -> ...")."""
    base = {"engine": "infernode", "model": path, "arch": "llama", "n_ranks": 1, "reps": 2}
    what = f"bench {path} -o jsonl"
    rows = json_rows(bench_ok(infernode, [path, "-p", "8", "-n", "4", "-r", "2", "-t", "1,2",
                                          "-o", "jsonl"]), what)
    expect_tests(rows, [("pp8", 1), ("tg4", 1), ("pp8", 2), ("tg4", 2)], what)
    for r in rows:
        check_row(r, base, what)
        if not r["quant"].startswith(stored):
            raise Failure(f"{what}: quant {r['quant']!r} does not start with {stored!r}")

    what = f"bench -m {path} --depth 0,4 -p 0"
    rows = json_rows(bench_ok(infernode, ["-m", path, "--depth", "0,4", "-p", "0", "-n", "4",
                                          "-r", "2", "-t", "1", "--output", "jsonl"]), what)
    expect_tests(rows, [("tg4", 1), ("tg4@d4", 1)], what)
    for r in rows:
        check_row(r, {**base, "n_prompt": 0, "n_gen": 4}, what)

    what = f"bench model {path} --quant f32"
    rows = json_rows(bench_ok(infernode, ["model", path, "--quant", "f32", "-p", "4", "-n", "0",
                                          "-r", "2", "-t", "1", "-o", "jsonl"]), what)
    expect_tests(rows, [("pp4", 1)], what)
    check_row(rows[0], base, what)
    if not rows[0]["quant"].endswith("-> f32"):
        raise Failure(f"{what}: quant {rows[0]['quant']!r}, expected every tensor as f32")

    what = f"bench {path} (Markdown)"
    out = bench_ok(infernode, [path, "-p", "8", "-n", "4", "-r", "2", "-t", "1"])
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    if len(table) != 4 or "| test | t/s |" not in table[0]:
        raise Failure(f"{what}: expected a header, a rule and 2 rows: {out!r}")
    for row, test in zip(table[2:], ["pp8", "tg4"]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0] != path or cells[5] != test or cells[4] != "1 x 1" or \
                not re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", cells[6]):
            raise Failure(f"{what}: row {row!r}")
    print(f"PASS file form on {path}")


def group_format(a):
    os.makedirs(a.work, exist_ok=True)
    w = random_model(CFG, 5)
    for dtype, stored in (("Q8_0", "q8_0 -> "), ("F32", "f32 -> ")):
        path = os.path.join(a.work, f"tiny-{dtype.lower()}.gguf")
        gguf_write.write_llama(path, CFG, w, dtype)
        check_file(a.infernode, path, stored)
    what = "bench --shape tinystarcoder (random weights)"
    rows = json_rows(bench_ok(a.infernode, ["--shape", "tinystarcoder", "--layers", "1", "-q", "f32",
                                            "-p", "4", "-n", "2", "-r", "1", "-t", "1", "-o", "jsonl"]),
                     what)
    expect_tests(rows, [("pp4", 1), ("tg2", 1)], what)
    for r in rows:
        check_row(r, {"model": "tiny_starcoder_py shape (cut)", "arch": "starcoder", "quant": "f32"}, what)
    print(f"PASS {what}")


def group_llama2c(a):
    path = os.path.join(a.shared, "models", "stories260K.bin")
    if not os.path.exists(path):
        if os.environ.get("CI") == "true":
            raise Failure(f"{path} is missing (CI=true)")
        print(f"SKIP: {path} is missing")
        return 77
    check_file(a.infernode, path, "f32 -> ")
    return 0


def bench_fails(infernode, args, status, needles):
    p = run([infernode, "bench", *args])
    line = next((ln for ln in p.stderr.splitlines()
                 if all(n.lower() in ln.lower() for n in needles)), None)
    if p.returncode != status or line is None or p.returncode < 0:
        raise Failure(f"bench {' '.join(args)}: exit {p.returncode} (expected {status}), stderr without a "
                      f"line naming {needles}: {p.stderr.strip()[-400:]!r}")
    print(f"PASS bench {' '.join(args)}: exit {status}: {line}")


def group_bad_input(a):
    os.makedirs(a.work, exist_ok=True)
    missing = os.path.join(a.work, "no-such-model.gguf")
    text = os.path.join(a.work, "not-a-model.gguf")
    with open(text, "w") as f:
        f.write("this is not a model file\n")
    model = os.path.join(a.work, "tiny-q8_0.gguf")
    gguf_write.write_llama(model, CFG, random_model(CFG, 5), "Q8_0")
    bench_fails(a.infernode, [missing], 1, [missing, "no such file"])
    bench_fails(a.infernode, ["-m", missing, "-o", "jsonl"], 1, [missing])
    bench_fails(a.infernode, [text, "-p", "4", "-n", "0"], 1, [text])
    bench_fails(a.infernode, [model, "-p", "100"], 1, ["context", "64"])
    bench_fails(a.infernode, ["kernal"], 2, ["unknown benchmark", "kernal"])
    bench_fails(a.infernode, [model, model], 2, ["one model file"])
    bench_fails(a.infernode, ["-m", model, model], 2, ["one model file"])
    bench_fails(a.infernode, [model, "--shape", "llama7b"], 2, ["--shape"])
    bench_fails(a.infernode, [model, "-p", "abc"], 2, ["-p: 'abc' is not"])
    bench_fails(a.infernode, [model, "--reps", "0"], 2, ["--reps: '0' is not"])
    bench_fails(a.infernode, [model, "--output", "xml"], 2, ["--output: 'xml' is not md or jsonl"])
    bench_fails(a.infernode, [model, "-p", "0", "-n", "0"], 2, ["no test to run"])


STAND_IN = r"""#!/bin/sh
# A stand-in for llama-bench: the JSON lines it prints, t/s = 1000 / n_threads for every test.
while [ $# -gt 0 ]; do
    case "$1" in -m) m=$2 ;; -t) t=$2 ;; -p) p=$2 ;; -n) n=$2 ;; esac
    shift
done
line() { # THREADS N_PROMPT N_GEN
    ts=$((1000 / $1))
    echo "{\"build_commit\": \"c392e5094\", \"cpu_info\": \"AMD EPYC, 2 cores\", \"model_filename\": \"$m\", \"n_threads\": $1, \"n_prompt\": $2, \"n_gen\": $3, \"avg_ns\": 1, \"stddev_ns\": 0, \"avg_ts\": $ts.000000, \"stddev_ts\": 1.500000, \"samples_ns\": [ 1, 1 ],\"samples_ts\": [ $ts, $ts ]}"
}
for th in $(echo "$t" | tr , ' '); do
    [ "$p" = 0 ] || line "$th" "$p" 0
    [ "$n" = 0 ] || line "$th" 0 "$n"
done
"""


def group_script(a):
    os.makedirs(a.work, exist_ok=True)
    script = os.path.join(ROOT, "tools", "bench", "vs-llamacpp.sh")
    model = os.path.join(a.work, "tiny-q8_0.gguf")
    gguf_write.write_llama(model, CFG, random_model(CFG, 5), "Q8_0")
    stand_in = os.path.join(a.work, "llama-bench")
    with open(stand_in, "w") as f:
        f.write(STAND_IN)
    os.chmod(stand_in, os.stat(stand_in).st_mode | stat.S_IXUSR)
    p = run([script, model, stand_in, "--infernode", a.infernode, "-t", "1,2", "-p", "8", "-n", "4",
             "-r", "2"])
    if p.returncode != 0:
        raise Failure(f"vs-llamacpp.sh: exit {p.returncode}: {p.stderr.strip()[-400:]!r}")
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| test")]
    if [r.split("|")[1:3] for r in rows] != [[" pp8 ", " 1 "], [" tg4 ", " 1 "], [" pp8 ", " 2 "], [" tg4 ", " 2 "]]:
        raise Failure(f"vs-llamacpp.sh: rows {rows!r}")
    if "load average" not in p.stdout:
        raise Failure(f"vs-llamacpp.sh: no load average in {p.stdout!r}")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        a1, b, a2 = (float(cells[i].split(" ± ")[0]) for i in (2, 3, 4))
        if b != 1000 // int(cells[1]) or a1 <= 0 or a2 <= 0:
            raise Failure(f"vs-llamacpp.sh: row {row!r}")
        # the printed figures have 2 decimals: allow their rounding
        if abs(float(cells[5]) - (a1 + a2) / 2 / b) > 0.01 + 0.01 * float(cells[5]):
            raise Failure(f"vs-llamacpp.sh: ratio {cells[5]} is not (A1 + A2) / 2 / B in {row!r}")
    print(f"PASS vs-llamacpp.sh: {len(rows)} rows, ratios (A1 + A2) / 2 / B")
    p = run([script, model, os.path.join(a.work, "no-llama-bench"), "--infernode", a.infernode])
    if p.returncode != 2 or "LLAMA_BENCH" not in p.stderr:
        raise Failure(f"vs-llamacpp.sh with no llama-bench: exit {p.returncode}: {p.stderr!r}")
    print("PASS vs-llamacpp.sh without a llama-bench: exit 2")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--group", required=True, choices=["format", "llama2c", "bad_input", "script"])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    a = ap.parse_args()
    a.work = os.path.join(a.work, a.group)
    groups = {"format": group_format, "llama2c": group_llama2c, "bad_input": group_bad_input,
              "script": group_script}
    try:
        return groups[a.group](a) or 0
    except Failure as e:
        print(f"FAIL {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
