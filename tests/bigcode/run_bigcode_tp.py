#!/usr/bin/python3
"""GPT-BigCode under tensor parallelism: the golden generate of tests/golden/run_golden.py
(--quant f32, 32 greedy ids, prompt logits) under a real `mpirun -np 2` and `-np 3`
(tests/tp/mpi_util.py's line), against the NumPy reference: logits within 1e-4 of max|logit|
and the 32 ids identical (every reference step is at least 1e-3 from a tie).

Cases: one KV head (replicated on every rank), two KV heads (3 ranks: 2 query heads each,
reading KV heads 0, 0 / 0, 1 / 1, 1), an HF directory, and an output head tied to the token
embedding (each rank its vocabulary rows of it).

usage: run_bigcode_tp.py --infernode BIN --models DIR (written by make_bigcode.py)"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))

import numpy as np  # noqa: E402

import mpi_util  # noqa: E402
import run_golden  # noqa: E402

CASES = ("gguf-f32/mqa-untied", "gguf-f32/gqa2-untied", "hf-f32/mqa-untied", "gguf-f16/mqa-tied")
RANKS = (2, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--models", required=True)
    a = ap.parse_args()
    manifest = os.path.join(a.models, "manifest.json")
    if not os.path.exists(manifest):
        print(f"FAIL: {manifest} is missing (the bigcode_setup fixture did not run)")
        return 1
    by_name = {c["name"]: c for c in json.load(open(manifest))["cases"]}
    work = os.path.join(a.models, "out-tp")
    os.makedirs(work, exist_ok=True)
    ok = total = 0
    for name in CASES:
        c = by_name[name]
        for ranks in RANKS:
            label = f"{name} np={ranks}"
            problems, summary = run_golden.run_case(
                a.infernode, label, c["model"], c["prompt"], c["n"], np.load(c["logits"]),
                c["ids"], c["gaps"], work, launcher=mpi_util.mpirun_cmd(ranks, []))
            ok += run_golden.report(label, problems, summary)
            total += 1
    print(f"{ok}/{total} tensor-parallel runs passed")
    return 0 if ok == total else 1


if __name__ == "__main__":
    sys.exit(main())
