#!/usr/bin/python3
"""Writes code-completion prompts from the held-out split (files neither the tokenizer nor the
shipped models saw) as a JSON array for `infernode bench spec --prompts`.

Each prompt comes from the head of a held-out file in tests/model/model_cases.json (their first
~1.5 KB): the text up to the end of the first `def` or `class` line at least MIN_BYTES in, so
that the model writes a body as an editor would ask it to, keeping the last MAX_BYTES or less
(whole lines). Files without such a line give none.

  heldout_prompts.py --out /tmp/prompts.json [--n 16]
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "..", "..", "tests", "model", "model_cases.json")
MIN_BYTES = 120
MAX_BYTES = 480


def prompt_of(text):
    """The text up to the end of its first def/class line that ends MIN_BYTES or more in, its
    front lines dropped until it is at most MAX_BYTES; None without such a line."""
    lines, end = text.splitlines(keepends=True), 0
    for i, line in enumerate(lines):
        end += len(line.encode("utf-8"))
        if end >= MIN_BYTES and line.lstrip().startswith(("def ", "class ")) and line.endswith(":\n"):
            kept = lines[:i + 1]
            while len(kept) > 1 and len("".join(kept).encode("utf-8")) > MAX_BYTES:
                kept.pop(0)
            return "".join(kept)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=16, help="most prompts (default 16)")
    ap.add_argument("--cases", default=CASES)
    args = ap.parse_args()
    with open(args.cases, encoding="utf-8") as fh:
        cases = json.load(fh)["cases"]
    prompts = [p for p in (prompt_of(c["text"]) for c in cases if c.get("heldout")) if p][:args.n]
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(prompts, fh, indent=1)
    print("%s: %d held-out prompts, %.0f bytes on average" % (args.out, len(prompts),
                                                               sum(len(p) for p in prompts) / max(len(prompts), 1)))


if __name__ == "__main__":
    main()
