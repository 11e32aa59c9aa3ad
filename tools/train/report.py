#!/usr/bin/python3
"""Prints the Markdown tables of models/README.md from a training work directory: the loss
curves (train.py's loss.tsv / eval.tsv of target and draft) and evaluate.py's results.

  report.py --work build-train
"""
import argparse
import csv
import json
import math
import os
import sys


def read_tsv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def curve(work, name, every):
    loss = {int(r["step"]): r for r in read_tsv(os.path.join(work, name, "loss.tsv"))}
    ev = {int(r["step"]): float(r["heldout_loss"])
          for r in read_tsv(os.path.join(work, name, "eval.tsv"))}
    rows = ["| step | tokens | train loss | held-out loss (ppl) |", "|---:|---:|---:|---:|"]
    for step in sorted(ev):
        if step % every and step != max(ev):
            continue
        r = loss[step]
        rows.append("| %d | %.2fM | %.3f | %.3f (%.1f) |" % (step, int(r["tokens"]) / 1e6,
                                                          float(r["loss"]), ev[step],
                                                          math.exp(ev[step])))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--every", type=int, default=100)
    args = ap.parse_args()
    for name in ("target", "draft"):
        print("%s:\n\n%s\n" % (name, curve(args.work, name, args.every)))
    path = os.path.join(args.work, "results.json")
    if os.path.exists(path):
        with open(path) as fh:
            res = json.load(fh)
        h = res["heldout"]
        print("| model | perplexity / token | bits / byte | nats / token |")
        print("|---|---:|---:|---:|")
        for name in ("target", "draft", "unigram"):
            print("| %s | %.2f | %.3f | %.3f |" % (name, h[name]["ppl"], h[name]["bpb"],
                                                 h[name]["nats_per_token"]))
        print("\n%d documents, %d predicted tokens, %d bytes; draft/target top-1 agreement %.2f %%"
              % (h["documents"], h["tokens"], h["bytes"], 100 * h["agreement_top1"]))
        print("\nsubset bf16 vs fp32:", json.dumps(res["heldout_subset_bf16_vs_fp32"]))
        print("\nC vs PyTorch:", json.dumps(res["c_vs_torch"], indent=1))
        for c in res["completions"]:
            print("\n```python\n%s%s```" % (c["prompt"], c["output"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
