#!/usr/bin/python3
"""Bad input to `infernode eval`: each case must exit non-zero (not by a signal) with one stderr
line that names what is wrong (all the case's substrings, case-insensitive), and no
sanitizer report. A valid run of each mode comes first, so that a command refusing
everything cannot pass.

  test_eval_bad_input.py --infernode BIN --model MODEL.gguf --tasks tasks.jsonl --work DIR
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import llama2c_io  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402

TIMEOUT = 60
SANITIZER_MARKS = ("Sanitizer", "runtime error:")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True, help="a GGUF model with a tokenizer, context 256")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    w = lambda name: os.path.join(a.work, name)  # noqa: E731

    def write(name, text):
        with open(w(name), "w", encoding="utf-8") as fh:
            fh.write(text)
        return w(name)

    # a llama2.c model without a tokenizer, vocabulary 300, context 64
    cfg = LlamaConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=300,
                      context_length=64)
    tiny = w("tiny.bin")
    llama2c_io.write(tiny, cfg, random_model(cfg, 3))
    text = write("code.py", "def add(a, b):\n    return a + b\n")
    empty = write("empty.py", "")
    ids = write("ok.ids", "1 5 7 9\n")
    with open(a.tasks, encoding="utf-8") as fh:
        task = json.loads(fh.readline())

    def task_line(**changes):
        t = dict(task)
        for k, v in changes.items():
            if v is None:
                del t[k]
            else:
                t[k] = v
        return json.dumps(t)

    he = [a.infernode, "eval", "humaneval", "--tasks"]
    ppl = [a.infernode, "eval", "ppl", "-m", a.model]
    kl = [a.infernode, "eval", "kl", "-m", a.model]
    canon = write("canon.jsonl", json.dumps({"task_id": task["task_id"], "completion": task["canonical_solution"]}))
    controls = [
        ppl + ["-f", text],
        [a.infernode, "eval", "ppl", "-m", tiny, "--ids", ids],
        kl + ["--ref", a.model, "-f", text],
        he + [a.tasks, "--solutions", canon],
    ]
    cases = [
        ("ppl: missing model", [a.infernode, "eval", "ppl", "-m", w("none.gguf"), "-f", text], ["none.gguf"]),
        ("ppl: missing text file", ppl + ["-f", w("none.py")], ["none.py", "cannot open"]),
        ("ppl: empty text", ppl + ["-f", empty], ["empty.py", "empty"]),
        ("ppl: no input", ppl, ["no input"]),
        ("ppl: text and ids", ppl + ["-f", text, "--ids", ids], ["not both"]),
        ("ppl: --ctx above the context", ppl + ["-f", text, "--ctx", "1000"], ["--ctx 1000", "context", "256"]),
        ("ppl: --ctx 1", ppl + ["-f", text, "--ctx", "1"], ["--ctx", "at least 2"]),
        ("ppl: --stride 0", ppl + ["-f", text, "--stride", "0"], ["--stride"]),
        ("ppl: --stride above --ctx", ppl + ["-f", text, "--ctx", "64", "--stride", "65"], ["--stride 65", "1..64"]),
        ("ppl: text without a tokenizer", [a.infernode, "eval", "ppl", "-m", tiny, "-f", text],
         ["tiny.bin", "no tokenizer", "--ids"]),
        ("ppl: id outside the vocabulary", [a.infernode, "eval", "ppl", "-m", tiny, "--ids",
                                            write("big.ids", "1 2 3\n1 299 300 4\n")],
         ["big.ids line 2", "300", "vocabulary"]),
        ("ppl: a sequence of 1 id", [a.infernode, "eval", "ppl", "-m", tiny, "--ids", write("one.ids", "1 2\n\n7\n")],
         ["one.ids line 3", "at least 2"]),
        ("ppl: not an id", [a.infernode, "eval", "ppl", "-m", tiny, "--ids", write("word.ids", "1 2 x3\n")],
         ["word.ids line 1", "'x3'"]),
        ("ppl: no ids", [a.infernode, "eval", "ppl", "-m", tiny, "--ids", write("blank.ids", "\n  \n")],
         ["blank.ids", "no token ids"]),
        ("ppl: a listed file is missing", ppl + ["--file-list", write("list.txt", text + "\n" + w("gone.py") + "\n")],
         ["gone.py"]),
        ("ppl: --ref", ppl + ["-f", text, "--ref", a.model], ["--ref", "eval kl"]),
        ("ppl: bad --quant", ppl + ["-f", text, "--quant", "w5"], ["w5"]),
        ("kl: no reference", kl + ["-f", text], ["--ref"]),
        ("kl: vocabularies differ", [a.infernode, "eval", "kl", "-m", tiny, "--ref", a.model, "--ids", ids],
         ["vocabularies differ", "300", "8192"]),
        ("kl: missing reference", kl + ["--ref", w("noref.gguf"), "-f", text], ["noref.gguf"]),
        ("eval: unknown mode", [a.infernode, "eval", "bleu"], ["bleu"]),
        ("humaneval: missing tasks", he + [w("none.jsonl"), "--solutions", canon], ["none.jsonl"]),
        ("humaneval: no --tasks", he[:-1] + ["--solutions", canon], ["--tasks"]),
        ("humaneval: malformed line", he + [write("bad.jsonl", task_line() + "\n{\"task_id\": \n")],
         ["bad.jsonl line 2", "invalid json"]),
        ("humaneval: missing field", he + [write("nofield.jsonl", task_line(entry_point=None))],
         ["nofield.jsonl line 1", "entry_point", "missing"]),
        ("humaneval: field not a string", he + [write("num.jsonl", task_line(prompt=7))],
         ["num.jsonl line 1", "prompt", "not a string"]),
        ("humaneval: not an object", he + [write("array.jsonl", "[1, 2]\n")], ["array.jsonl line 1", "object"]),
        ("humaneval: duplicate task", he + [write("dup.jsonl", task_line() + "\n" + task_line() + "\n")],
         ["dup.jsonl line 2", task["task_id"], "already"]),
        ("humaneval: empty tasks", he + [write("none_tasks.jsonl", "\n")], ["none_tasks.jsonl", "no tasks"]),
        ("humaneval: unknown task in solutions", he + [a.tasks, "--solutions",
                                                       write("sol.jsonl", json.dumps({"task_id": "x/9", "completion": ""}))],
         ["sol.jsonl line 1", "x/9"]),
        ("humaneval: solution without completion", he + [a.tasks, "--solutions",
                                                         write("sol2.jsonl", json.dumps({"task_id": task["task_id"]}))],
         ["sol2.jsonl line 1", "completion"]),
        ("humaneval: k above n", he + [a.tasks, "-k", "5"], ["-k 5"]),
        ("humaneval: n with greedy", he + [a.tasks, "-n", "3"], ["--temp"]),
        ("humaneval: -n with --solutions", he + [a.tasks, "--solutions", canon, "-n", "2"], ["-n", "--solutions"]),
        ("humaneval: bad -k", he + [a.tasks, "-k", "1,x"], ["-k"]),
        ("humaneval: timeout 0", he + [a.tasks, "--solutions", canon, "--timeout", "0"], ["--timeout"]),
        ("humaneval: missing python", he + [a.tasks, "--solutions", canon, "--python", w("nopython")],
         ["--python", "nopython"]),
        ("humaneval: prompt beyond the context", he + [write("long.jsonl", task_line(prompt="x = 1\n" * 300)),
                                                       "-m", a.model],
         [task["task_id"], "no room", "256"]),
        ("humaneval: model without a tokenizer", he + [a.tasks, "-m", tiny], ["tiny.bin", "no tokenizer"]),
    ]

    failures = 0
    for cmd in controls:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
        ok = p.returncode == 0
        failures += not ok
        print("%s control: %s%s" % ("PASS" if ok else "FAIL", " ".join(cmd[1:4]),
                                    "" if ok else "\n" + p.stderr))
    for name, cmd, expect in cases:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
        problems = []
        if any(m in p.stderr for m in SANITIZER_MARKS):
            problems.append("sanitizer report")
        if p.returncode <= 0:
            problems.append("exit status %d" % p.returncode)
        lines = [l for l in p.stderr.splitlines() if all(e.lower() in l.lower() for e in expect)]
        if not lines:
            problems.append("no stderr line names %s" % expect)
        failures += bool(problems)
        print("%s %s: %s" % ("FAIL" if problems else "PASS", name,
                             "; ".join(problems) + "\n" + p.stderr if problems else lines[0]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
