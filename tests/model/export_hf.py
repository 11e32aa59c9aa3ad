#!/usr/bin/python3
"""Fixture of the model tests: rebuilds the Hugging Face directory of each shipped GGUF with
the project's exporter, as OUT/<file name without .gguf>/.

  export_hf.py --exporter tools/train/export.py --out DIR MODEL.gguf...
"""
import argparse
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporter", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    for path in args.models:
        if not os.path.isfile(path):
            print("FAIL: %s is missing (the default models are part of the repository)" % path,
                  file=sys.stderr)
            return 1
        out = os.path.join(args.out, os.path.basename(path)[:-len(".gguf")])
        subprocess.run([sys.executable, args.exporter, "hf", "--gguf", path, "--out", out],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
