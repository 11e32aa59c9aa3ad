#!/usr/bin/python3
"""Writes a draft model for speculative decoding tests: a copy of a llama2.c legacy checkpoint
(stories260K.bin) with Gaussian noise added to its weights, so that the draft agrees with the
target often but clearly not always and both branches of rejection sampling run.

  make_draft.py SRC DST [--noise 0.4] [--seed 1234]

Layout (as node/model_file_llama2c.c reads it): seven int32 (dim, hidden_dim, n_layers,
n_heads, n_kv_heads, vocab_size, seq_len; vocab_size < 0: the classifier is stored after the
other arrays instead of being the token embedding), then float32 arrays in this order: token
embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim], wk [L][kv_dim][dim], wv
[L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim], w1 [L][hidden][dim], w2 [L][dim][hidden],
w3 [L][hidden][dim], rms_final [dim], freq_cis real and imag [seq][head_dim / 2] each (unused
by infernode), classifier [vocab][dim] when unshared. Each weight array gets noise of
--noise times its own standard deviation (so the norms' gains, close to constant, move
little); the freq_cis tables are copied unchanged. The noise comes from a fixed NumPy seed:
the same SRC always gives the same DST."""
import argparse
import os
import struct
import sys

import numpy as np

HEADER = struct.Struct("<7i")


def layout(h):
    """[(name, float count, noisy)] of the arrays after the header, in file order."""
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = h
    if min(dim, hidden, n_layers, n_heads, n_kv_heads, seq_len) <= 0 or vocab == 0 or dim % n_heads:
        raise ValueError(f"not a llama2.c header: {h}")
    head_dim = dim // n_heads
    kv_dim = n_kv_heads * head_dim
    n_vocab = abs(vocab)
    arrays = [
        ("token_embedding", n_vocab * dim, True),
        ("rms_att", n_layers * dim, True),
        ("wq", n_layers * dim * dim, True),
        ("wk", n_layers * kv_dim * dim, True),
        ("wv", n_layers * kv_dim * dim, True),
        ("wo", n_layers * dim * dim, True),
        ("rms_ffn", n_layers * dim, True),
        ("w1", n_layers * hidden * dim, True),
        ("w2", n_layers * dim * hidden, True),
        ("w3", n_layers * hidden * dim, True),
        ("rms_final", dim, True),
        ("freq_cis", seq_len * head_dim, False),
    ]
    if vocab < 0:
        arrays.append(("classifier", n_vocab * dim, True))
    return arrays


def make_draft(src, dst, noise, seed):
    with open(src, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        raise ValueError(f"{src}: {len(data)} bytes, too short for a llama2.c header")
    h = HEADER.unpack_from(data, 0)
    arrays = layout(h)
    want = HEADER.size + 4 * sum(n for _, n, _ in arrays)
    if want != len(data):
        raise ValueError(f"{src}: header {h} needs {want} bytes, the file has {len(data)}")
    rng = np.random.default_rng(seed)
    out = [data[:HEADER.size]]
    at = HEADER.size
    for _, n, noisy in arrays:
        w = np.frombuffer(data, dtype="<f4", count=n, offset=at)
        at += 4 * n
        if noisy:
            w = (w + noise * float(w.std()) * rng.standard_normal(n)).astype("<f4")
        out.append(w.tobytes())
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(out))
    os.replace(tmp, dst)  # never a half-written draft for a test that runs next


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--noise", type=float, default=0.4, help="noise / the array's standard deviation")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    if not a.noise >= 0:
        ap.error("--noise must be >= 0")
    try:
        make_draft(a.src, a.dst, a.noise, a.seed)
    except (OSError, ValueError) as e:
        print(f"make_draft.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
