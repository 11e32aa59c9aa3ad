#!/usr/bin/python3
"""GGUF K-quants as the kernels see them, through qweight_dump (which packs as model loading
does), against ggml's dequantization in NumPy (tests/reference/dtypes.py).

Q4_K is packed into W4 g32 asymmetric without requantizing: every value the kernels see
(qweight_value) must equal the stored value bit for bit, as stored (w4a8-g32-asym) and, after
bf16 rounding, as w4a16-g32-asym; on random bytes (every scale, min and nibble, negative and
subnormal fp16 scales) and on quantized weights, for row counts that are not multiples of the
kernels' 16-row blocks.

Q6_K has no lossless kind; as stored it is converted to W8 g32 by round to nearest from its
exact values. Per element, |packed - stored| <= half a W8 step (max|stored| of its 32-group /
254); per kind of weights, the relative RMS error ||packed - stored|| / ||stored|| within
Q6_K_BOUND, the bound docs/formats.md documents. The weights: Gaussian rows, heavy-tailed rows
(Student's t with 5 and 3 degrees of freedom: kurtosis 9 and far above), and the trained
matrices of models/infernode-code-target-f16.gguf (those whose rows are a multiple of 256: all
but ffn_down), each quantized to Q6_K by the NumPy writer. The report also shows Q6_K's own
error against the weights it was made from, and the same conversion into the other kinds
(why W8 g32: see docs/formats.md).

Shards: columns cut on a 256-value boundary pack the stored slice exactly; a cut inside a
super-block is refused, naming the block size.

usage: test_kquant.py QWEIGHT_DUMP"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402

import dtypes  # noqa: E402
import readback  # noqa: E402

DUMP = sys.argv[1]
TARGET_MODEL = os.path.join(HERE, "..", "..", "models", "infernode-code-target-f16.gguf")
# Relative RMS error of the Q6_K -> W8 g32 conversion, measured 0.52% (Gaussian), 0.60% (t5),
# 0.69% (t3), 0.53% (the trained model); docs/formats.md documents these bounds.
Q6_K_BOUND = {"gaussian": 0.006, "student-t5": 0.007, "student-t3": 0.008, "target-model": 0.006}
ALTERNATIVES = ("bf16", "w8a8", "w4a8-g32-asym")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def pack(blocks, type_name, n_in, *args):
    """(spec name, bits per weight, stored values, packed values) of rows of blocks, or
    (None, qweight_dump's message, None, None) when it refuses them."""
    with tempfile.TemporaryDirectory() as d:
        src, stored, packed = (os.path.join(d, f) for f in ("in", "stored", "packed"))
        with open(src, "wb") as f:
            f.write(blocks)
        p = subprocess.run([DUMP, type_name, str(n_in), src, stored, packed, *args],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return None, p.stderr.strip(), None, None
        spec, bits = p.stdout.split()
        return spec, float(bits), np.fromfile(stored, "<f4"), np.fromfile(packed, "<f4")


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def bf16_round(x):
    return dtypes.bf16_bits_to_f32(dtypes.f32_to_bf16_bits(x))


def random_blocks(rng, n_blocks, size, fp16_at):
    """Random bytes, with finite fp16 scales (negative and subnormal ones included)."""
    b = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    for o in fp16_at:
        h = rng.integers(0, 0x10000, n_blocks, dtype=np.uint32).astype(np.uint16)
        h[(h & 0x7C00) == 0x7C00] &= 0x3FFF
        b[:, o:o + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return b.tobytes()


def test_q4_k(rng):
    sources = {
        "random bytes, 17 x 768": (random_blocks(rng, 17 * 3, 144, (0, 2)), 768),
        "quantized Gaussian, 33 x 512": (dtypes.encode(rng.standard_normal((33, 512)), "Q4_K"), 512),
        "quantized Student-t3, 1 x 256": (dtypes.encode(rng.standard_t(3, (1, 256)), "Q4_K"), 256),
    }
    for what, (blocks, n_in) in sources.items():
        want = dtypes.decode(blocks, "Q4_K", (len(blocks) // 144 * 256,)).astype(np.float32)
        spec, bits, stored, packed = pack(blocks, "q4_k", n_in)
        if spec is None:
            check(False, f"Q4_K {what}: {bits}")
            continue
        check(spec == "w4a8-g32-asym", f"Q4_K {what}: packed as {spec}, expected w4a8-g32-asym")
        check(same_bits(stored, want), f"Q4_K {what}: ifn_dtype_to_f32 differs from ggml's values")
        check(same_bits(packed, want), f"Q4_K {what}: packed values differ from ggml's: "
                                       f"{np.count_nonzero(packed != want)} of {want.size}")
        _, _, _, packed16 = pack(blocks, "q4_k", n_in, "--quant", "w4a16-g32-asym")
        check(packed16 is not None and same_bits(packed16, bf16_round(want)),
              f"Q4_K {what}: w4a16-g32-asym values are not the bf16 rounding of ggml's")
        print(f"Q4_K {what}: as stored {spec}, {bits:.2f} bits/weight; {want.size} values "
              "bit-identical to ggml's dequantization")


def q6_k_sources(rng):
    src = {"gaussian": rng.standard_normal((256, 1024)),
           "student-t5": rng.standard_t(5, (256, 1024)),
           "student-t3": rng.standard_t(3, (256, 1024))}
    _, _, tensors = readback.read_gguf(TARGET_MODEL)
    rows = [np.frombuffer(b, "<f2").reshape(-1, ne[0]).astype(np.float32)
            for ne, _, b in tensors.values() if len(ne) == 2 and ne[0] % 256 == 0]
    src["target-model"] = np.concatenate([r.reshape(-1, 256) for r in rows])
    return {k: np.asarray(v, dtype=np.float32) for k, v in src.items()}


def rel_rms(a, b):
    return float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(b.astype(np.float64)))


def check_half_step(name, stored, packed):
    """Checks every error against half a W8 step (max|w| of the 32-group / 127); returns the
    largest in steps."""
    g = np.abs(stored.reshape(-1, 32)).max(axis=1, keepdims=True)
    err = np.abs(packed - stored).reshape(-1, 32)
    # with room for the fp32 roundings of the step and of the product
    bound = g / 254 * (1 + 2e-6) + np.spacing(g)
    worst = float((err / np.where(g > 0, g / 127, 1)).max())
    check(np.all(err <= bound), f"Q6_K {name}: an error of {worst:.4f} W8 steps, above half a step")
    return worst


def test_q6_k(rng):
    # Random bytes: the half-step bound holds for any input, scales of -128 included.
    spec, msg, stored, packed = pack(random_blocks(rng, 64, 210, (208,)), "q6_k", 1024)
    if spec is None:
        check(False, f"Q6_K random bytes: {msg}")
    else:
        print(f"Q6_K random bytes: as stored {spec}, largest error "
              f"{check_half_step('random bytes', stored, packed):.4f} of a W8 step")
    print("Q6_K conversion: relative RMS error against the stored Q6_K values; 'Q6_K own' and "
          "'total' against the\nweights the Q6_K values were made from; max error in W8 steps "
          "(max|w| of the 32-group / 127)")
    print(f"{'weights':13s} {'values':>8s}  {'Q6_K own':>8s}  {'w8a8-g32':>8s}  {'total':>7s}  "
          f"{'max error':>9s}  " + "  ".join(f"{k:>13s}" for k in ALTERNATIVES))
    bits = {}
    for name, x in q6_k_sources(rng).items():
        blocks = dtypes.encode(x, "Q6_K")
        exact = dtypes.decode(blocks, "Q6_K", x.shape).astype(np.float32)
        spec, bits_or_msg, stored, packed = pack(blocks, "q6_k", x.shape[1])
        if spec is None:
            check(False, f"Q6_K {name}: {bits_or_msg}")
            continue
        bits[spec] = bits_or_msg
        check(spec == "w8a8-g32", f"Q6_K {name}: packed as {spec}, expected w8a8-g32")
        check(same_bits(stored, exact.ravel()), f"Q6_K {name}: ifn_dtype_to_f32 differs from ggml's")
        steps = check_half_step(name, stored, packed)
        err = rel_rms(packed, stored)
        check(err <= Q6_K_BOUND[name], f"Q6_K {name}: conversion error {err:.3%} above the "
                                       f"documented {Q6_K_BOUND[name]:.1%}")
        cols = []
        for quant in ALTERNATIVES:
            _, b, _, alt = pack(blocks, "q6_k", x.shape[1], "--quant", quant)
            check(alt is not None, f"Q6_K {name}: --quant {quant} refused: {b}")
            if alt is not None:
                bits[quant] = b
                cols.append(f"{rel_rms(alt, stored):13.3%}")
        print(f"{name:13s} {x.size:8d}  {rel_rms(exact, x):8.3%}  {err:8.3%}  "
              f"{rel_rms(packed.reshape(x.shape), x):7.3%}  {steps:9.4f}  " + "  ".join(cols))
    print(f"{'bits/weight':13s} {'':8s}  {210 * 8 / 256:8.2f}  {bits.get('w8a8-g32', np.nan):8.2f}  "
          f"{'':7s}  {'':9s}  " + "  ".join(f"{bits.get(k, np.nan):13.2f}" for k in ALTERNATIVES))


def test_shards(rng):
    q4 = dtypes.encode(rng.standard_normal((5, 1024)), "Q4_K")
    q6 = dtypes.encode(rng.standard_normal((5, 1024)), "Q6_K")
    spec, _, _, packed = pack(q4, "q4_k", 1024, "--cols", "256", "512")
    want = dtypes.decode(q4, "Q4_K", (5, 1024)).astype(np.float32)[:, 256:768]
    check(spec is not None and same_bits(packed, want.ravel()),
          "Q4_K columns [256, 768): packed values differ from the stored slice")
    spec, _, stored, _ = pack(q6, "q6_k", 1024, "--cols", "512", "512")
    want = dtypes.decode(q6, "Q6_K", (5, 1024)).astype(np.float32)[:, 512:]
    check(spec is not None and same_bits(stored, want.ravel()),
          "Q6_K columns [512, 1024): stored values differ from the slice")
    for blocks, t, first, n in ((q4, "q4_k", 128, 512), (q6, "q6_k", 0, 384)):
        spec, msg, _, _ = pack(blocks, t, 1024, "--cols", str(first), str(n))
        check(spec is None and "256" in msg, f"{t} columns [{first}, {first + n}) were not refused "
                                            f"with a message naming the 256-value blocks: {msg}")
    print("shards: cuts at multiples of 256 pack exactly, others are refused")


def main():
    rng = np.random.default_rng(2024)
    test_q4_k(rng)
    test_q6_k(rng)
    test_shards(rng)
    print(f"{len(failures)} failure(s)" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
