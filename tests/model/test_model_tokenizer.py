#!/usr/bin/python3
"""The C tokenizer of the shipped models against SentencePiece.

For every model given (GGUF files and Hugging Face directories), tok_encode must give
exactly the ids SentencePiece gave each text of model_cases.json (held-out code and edge
cases; made by tools/train/make_test_cases.py), BOS included, and decode them back to the
text byte for byte. If python3-sentencepiece is installed, the same is checked on every
file of the held-out split against SentencePiece run now (models/tokenizer.model).

  test_model_tokenizer.py --tok-encode BIN --cases model_cases.json
                          [--spm-model tokenizer.model --corpus tools/train] MODEL...
"""
import argparse
import json
import subprocess
import sys


def encode(binary, model, texts):
    """[(ids, roundtrip ok)] for texts, from tok_encode."""
    data = b"\0".join(t.encode("utf-8") for t in texts)
    r = subprocess.run([binary, model], input=data, capture_output=True, check=False)
    if r.returncode != 0:
        raise SystemExit("FAIL: tok_encode %s: %s" % (model, r.stderr.decode(errors="replace")))
    lines = r.stdout.decode().splitlines()
    out = []
    for i in range(0, len(lines), 2):
        ids = [int(x) for x in lines[i][len("ids:"):].split()]
        out.append((ids, lines[i + 1] == "roundtrip: 1"))
    if len(out) != len(texts):
        raise SystemExit("FAIL: tok_encode %s printed %d results for %d texts"
                         % (model, len(out), len(texts)))
    return out


def compare(model, names, texts, expected, got):
    bad = 0
    for name, text, want, (ids, roundtrip) in zip(names, texts, expected, got):
        if ids != want:
            k = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b),
                     min(len(ids), len(want)))
            if bad < 5:
                print("FAIL %s %s: ids differ at %d: C %s, SentencePiece %s" %
                      (model, name, k, ids[max(0, k - 3):k + 5], want[max(0, k - 3):k + 5]))
            bad += 1
        elif not roundtrip:
            if bad < 5:
                print("FAIL %s %s: decoding does not give the text back" % (model, name))
            bad += 1
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tok-encode", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--spm-model")
    ap.add_argument("--corpus", help="directory of corpus.py")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    with open(args.cases, encoding="utf-8") as fh:
        cases = json.load(fh)["cases"]
    names = [c["name"] for c in cases]
    texts = [c["text"] for c in cases]
    expected = [c["ids"] for c in cases]
    failures = 0
    for model in args.models:
        bad = compare(model, names, texts, expected, encode(args.tok_encode, model, texts))
        print("%s: %d/%d fixture texts match SentencePiece (%d ids)"
              % (model, len(texts) - bad, len(texts), sum(map(len, expected))))
        failures += bad

    try:
        import sentencepiece as spm
    except ImportError:
        spm = None
    if spm is None or not args.spm_model or not args.corpus:
        print("note: python3-sentencepiece is not installed; the whole held-out split was not "
              "compared (the fixture texts were)")
    else:
        sys.path.insert(0, args.corpus)
        import corpus
        sp = spm.SentencePieceProcessor(model_file=args.spm_model)
        files, _ = corpus.collect()
        held = [f for f in files if f["split"] == "heldout"]
        texts = [f["text"] for f in held]
        names = [f["rel"] for f in held]
        expected = [[sp.bos_id()] + sp.encode(t) for t in texts]
        for model in args.models:
            bad = compare(model, names, texts, expected, encode(args.tok_encode, model, texts))
            print("%s: %d/%d held-out files match SentencePiece (%d ids, %d bytes)"
                  % (model, len(texts) - bad, len(texts), sum(map(len, expected)),
                     sum(len(t.encode("utf-8")) for t in texts)))
            failures += bad
    if failures:
        print("FAIL: %d mismatches" % failures)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
