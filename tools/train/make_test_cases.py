#!/usr/bin/python3
"""Writes tests/model/model_cases.json, the fixture of the model tests (label "model"): texts
with the ids SentencePiece gives them, so that CI checks the C tokenizer without
python3-sentencepiece, and each text's unigram baseline in nats (whole text and first 256 ids), so that CI can check that
the shipped models are far better than it.

Texts: the first ~1.5 KB (cut at a line end) of every held-out file, and edge cases
(empty text, leading and trailing spaces, tabs, CRLF, non-ASCII and characters outside the
vocabulary, "<s>" as plain text, long runs of one character).

  make_test_cases.py --data DIR --out tests/model/model_cases.json
"""
import argparse
import json
import os
import sys

import numpy as np

import corpus

HEAD_BYTES = 1500
EDGE_CASES = [
    "",
    " ",
    "    ",
    "\n",
    "\n\n\n",
    " leading space\n",
    "trailing spaces   \n",
    "\tindented\twith\ttabs\n",
    "windows\r\nline ends\r\n",
    "caf\u00e9 na\u00efve \u00f1 \u65e5\u672c\u8a9e \U0001F40D \u00a0nbsp\n",
    "<s> is text here, and so is </s> and <unk>\n",
    "x" * 3000,
    " " * 1000 + "deep\n",
    "12345678901234567890 + 0.5e-10 == 0x1F\n",
    "def f(a,b):return a**b//2\n",
    "if x:\n    y = 1\nelse:\n\ty = 2\n",
]


def head(text, limit=HEAD_BYTES):
    out = ""
    for line in text.splitlines(keepends=True):
        if out and len((out + line).encode("utf-8")) > limit:
            break
        out += line
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="tokenizer.py's output directory")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.data, "tokenizer.model"))
    train = np.fromfile(os.path.join(args.data, "train.u16"), dtype=np.uint16)
    counts = np.bincount(train, minlength=sp.get_piece_size()).astype(np.float64) + 1.0
    unigram = np.log(counts / counts.sum())
    files, _ = corpus.collect()
    cases = [{"name": f["rel"], "text": head(f["text"])} for f in files if f["split"] == "heldout"]
    cases += [{"name": "edge-%d" % i, "text": t} for i, t in enumerate(EDGE_CASES)]
    for c in cases:
        ids = [sp.bos_id()] + sp.encode(c["text"])
        c["ids"] = ids
        c["heldout"] = not c["name"].startswith("edge-")
        c["unigram_nats"] = float(-unigram[ids[1:]].sum())
        # the same for the first 256 ids (the models' context), what the tests evaluate
        c["unigram_nats_256"] = float(-unigram[ids[1:256]].sum())
        assert sp.decode(ids[1:]) == c["text"], c["name"]
    with open(args.out, "w", encoding="utf-8") as fh:
        # one case per line
        fh.write('{"tokenizer": "models/tokenizer.model", "cases": [\n')
        fh.write(",\n".join(json.dumps(c, ensure_ascii=True, separators=(",", ":"))
                            for c in cases))
        fh.write("\n]}\n")
    print("%s: %d cases, %d ids" % (args.out, len(cases), sum(len(c["ids"]) for c in cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
