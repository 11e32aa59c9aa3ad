#!/usr/bin/python3
"""Widens the feed-forward blocks of a Llama GGUF (F16/F32/BF16) without changing what it computes.

Every layer gets extra gate and up rows of random values and, for each, a down column of zeros:
silu(gate . x) * (up . x) times a zero column adds exactly 0 to the residual stream, so the
logits stay the model's own while every decode step streams the extra weights. This turns the
shipped 12 MB target into a memory-bound model with the trained model's exact greedy output,
for measuring speculative decoding where it should pay (`infernode bench spec -m OUT`).

  widen_ffn.py --in models/infernode-code-target-f16.gguf --ffn 20480 --out /tmp/wide.gguf

The random values are small (N(0, 0.02), seeded) so that the products stay finite: an infinite
product times zero would be NaN. --ffn must be a multiple of 64 so that the kernels' blocking
of the original columns is unchanged.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
import gguf  # noqa: E402

SEED = 22


def array_type(items):
    """The GGUF element type of a metadata array read back as a Python list."""
    if all(isinstance(v, str) for v in items):
        return gguf.STRING
    if all(isinstance(v, bool) for v in items):
        return gguf.BOOL
    if all(isinstance(v, int) for v in items):
        return gguf.INT32
    return gguf.FLOAT32


def metadata(f, ffn):
    out = []
    for key, value in f.meta.items():
        vtype = f.types[key]
        if key.endswith(".feed_forward_length"):
            value = ffn
        if vtype == gguf.ARRAY:
            value = (array_type(value), value)
        out.append((key, vtype, value))
    return out


def widen(f, ffn, rng):
    """[(name, float32 array, dtype)] with every layer's FFN widened to ffn."""
    tensors = []
    for name, (dtype, shape, _) in f.tensors.items():
        w = f.tensor(name)
        if name.endswith((".ffn_gate.weight", ".ffn_up.weight")):
            extra = rng.normal(0.0, 0.02, size=(ffn - shape[0], shape[1])).astype(np.float32)
            w = np.concatenate([w, extra], axis=0)
        elif name.endswith(".ffn_down.weight"):
            w = np.concatenate([w, np.zeros((shape[0], ffn - shape[1]), dtype=np.float32)], axis=1)
        tensors.append((name, w, dtype))
    return tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="src", required=True, help="a Llama GGUF with F16/F32/BF16 tensors")
    ap.add_argument("--ffn", type=int, required=True, help="the new FFN width, a multiple of 64")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    f = gguf.GGUF(args.src)
    arch = f.meta.get("general.architecture")
    old = f.meta.get("%s.feed_forward_length" % arch)
    if arch != "llama" or old is None:
        sys.exit("widen_ffn: %s: not a Llama GGUF with a feed_forward_length" % args.src)
    if args.ffn < old or args.ffn % 64:
        sys.exit("widen_ffn: --ffn %d must be a multiple of 64 and at least the model's %d" % (args.ffn, old))
    gguf.write(args.out, metadata(f, args.ffn), widen(f, args.ffn, np.random.default_rng(SEED)))
    print("%s: FFN %d -> %d, %d bytes" % (args.out, old, args.ffn, os.path.getsize(args.out)))


if __name__ == "__main__":
    main()
