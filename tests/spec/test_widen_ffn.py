#!/usr/bin/python3
"""tools/bench/widen_ffn.py keeps the model's function: the widened default target (the
memory-bound model `infernode bench spec` measures speculation on) gives the original's greedy
output.

  test_widen_ffn.py --infernode BIN --widen tools/bench/widen_ffn.py --cases model_cases.json
                    --gguf-reader tools/train --reference tests/model --work DIR MODEL.gguf

Checks, on held-out prompts (BOS + the first PROMPT_IDS ids of held-out files):
  * widening to the model's own FFN width writes the very bytes of the input (the reader and
    writer lose nothing);
  * widened to WIDE_FFN, infernode gives the same greedy ids as the original, and logits equal
    to 1e-6 x max |logit| (the extra columns add exact zeros);
  * an independent NumPy float64 forward pass of the widened file's weights picks the same
    greedy ids wherever its top two logits are further apart than the golden tolerance.
"""
import argparse
import filecmp
import json
import os
import subprocess
import sys

import numpy as np

WIDE_FFN = 2048
PROMPTS = 3
PROMPT_IDS = 40
GEN = 24
TOLERANCE = 1e-4


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("FAIL: %s\n%s" % (" ".join(cmd), r.stderr))
    return r.stdout


def greedy(binary, model, ids):
    out = run([binary, "generate", "-m", model, "--prompt-ids", ",".join(map(str, ids)), "-n", str(GEN),
               "--temp", "0", "--ids", "--ignore-eos"])
    return [int(t) for t in out.replace(",", " ").split()]


def logits(binary, model, ids, path, vocab):
    run([binary, "generate", "-m", model, "--prompt-ids", ",".join(map(str, ids)), "-n", "0", "--temp", "0",
         "--logits-out", path])
    return np.fromfile(path, dtype="<f4").reshape(len(ids), vocab).astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--widen", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--gguf-reader", required=True, help="directory of export.py")
    ap.add_argument("--reference", required=True, help="directory of test_model_logits.py")
    ap.add_argument("--work", required=True)
    ap.add_argument("model")
    args = ap.parse_args()
    sys.path[:0] = [args.gguf_reader, args.reference]
    import export
    from test_model_logits import reference_logits
    os.makedirs(args.work, exist_ok=True)
    same, wide = os.path.join(args.work, "same.gguf"), os.path.join(args.work, "wide.gguf")
    cfg, _, _ = export.read_gguf_model(args.model)
    run([sys.executable, args.widen, "--in", args.model, "--ffn", str(cfg["ffn_dim"]), "--out", same])
    if not filecmp.cmp(same, args.model, shallow=False):
        raise SystemExit("FAIL: widening %s to its own FFN width changed its bytes" % args.model)
    run([sys.executable, args.widen, "--in", args.model, "--ffn", str(WIDE_FFN), "--out", wide])
    wcfg, weights, _ = export.read_gguf_model(wide)
    assert wcfg["ffn_dim"] == WIDE_FFN
    with open(args.cases, encoding="utf-8") as fh:
        cases = [c for c in json.load(fh)["cases"] if c["heldout"] and len(c["ids"]) >= PROMPT_IDS]
    cases = cases[::max(1, len(cases) // PROMPTS)][:PROMPTS]
    vocab = cfg["vocab_size"]
    compared = 0
    for case in cases:
        prompt = [1] + case["ids"][:PROMPT_IDS]
        got = greedy(args.infernode, wide, prompt)
        want = greedy(args.infernode, args.model, prompt)
        if got != want or len(got) != GEN:
            raise SystemExit("FAIL: %s: widened %r, original %r" % (case["name"], got, want))
        seq = prompt + got
        a = logits(args.infernode, wide, seq, os.path.join(args.work, "wide.f32"), vocab)
        b = logits(args.infernode, args.model, seq, os.path.join(args.work, "orig.f32"), vocab)
        diff = np.abs(a - b).max() / np.abs(b).max()
        if diff > 1e-6:
            raise SystemExit("FAIL: %s: widened logits differ by %g x max|logit|" % (case["name"], diff))
        ref = reference_logits(wcfg, weights, seq)
        for t in range(GEN):
            row = ref[len(prompt) - 1 + t]
            top2 = np.sort(row)[-2:]
            if (top2[1] - top2[0]) / np.abs(row).max() < TOLERANCE:
                break  # a near tie: the two float widths may pick either, and the rest follows it
            if int(np.argmax(row)) != got[t]:
                raise SystemExit("FAIL: %s: generated id %d is %d, the NumPy reference's %d"
                                 % (case["name"], t, got[t], int(np.argmax(row))))
            compared += 1
        print("%s: %d greedy ids identical (widened FFN %d -> %d), logits within %.1e" %
              (case["name"], GEN, cfg["ffn_dim"], WIDE_FFN, diff))
    if compared < GEN:
        raise SystemExit("FAIL: only %d ids compared with the reference" % compared)
    print("widen_ffn: the widened model gives the original's greedy output; %d ids match the NumPy reference"
          % compared)


if __name__ == "__main__":
    main()
