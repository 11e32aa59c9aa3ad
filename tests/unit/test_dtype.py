"""infernode's fp16/bf16 conversions and GGUF block dequantization against NumPy (the K-quants
against the reference decoders in tests/reference/dtypes.py, bit for bit)."""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

import numpy as np  # noqa: E402

import dtypes  # noqa: E402

DUMP = sys.argv[1]


def run(mode, data):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in"), os.path.join(d, "out")
        data.tofile(src)
        subprocess.run([DUMP, mode, src, dst], check=True)
        return np.fromfile(dst, dtype=np.uint8)


def bf16_reference(f):
    """Round-to-nearest-even on the top 16 bits, NaN kept quiet: the textbook definition."""
    u = f.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def main():
    rng = np.random.default_rng(1234)
    failures = 0

    halves = np.arange(65536, dtype=np.uint16)
    got = run("f16-to-f32", halves).view(np.float32)
    want = halves.view(np.float16).astype(np.float32)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    print(f"fp16->f32 exhaustive: {np.count_nonzero(~same)} of 65536 differ")
    failures += np.count_nonzero(~same)

    specials = np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8,
                         2.98e-8, 2.99e-8, 1e-10, np.inf, -np.inf, np.nan], dtype=np.float32)
    floats = np.concatenate([
        specials,
        rng.standard_normal(200000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 200000),
        rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32),
    ]).astype(np.float32)
    got = run("f32-to-f16", floats).view(np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        want = floats.astype(np.float16).view(np.uint16)
    nan = np.isnan(floats)
    bad = (got != want) & ~nan
    bad |= nan & ((got & 0x7C00) != 0x7C00)
    print(f"f32->fp16 on {floats.size} values: {np.count_nonzero(bad)} differ")
    if np.any(bad):
        i = np.flatnonzero(bad)[:5]
        print("  e.g.", floats[i], got[i], want[i])
    failures += np.count_nonzero(bad)

    got = run("f32-to-bf16", floats).view(np.uint16)
    want = bf16_reference(floats)
    bad = got != want
    print(f"f32->bf16 on {floats.size} values: {np.count_nonzero(bad)} differ")
    failures += np.count_nonzero(bad)

    # Block formats: random blocks, dequantized by the GGUF definition in NumPy.
    nb = 1000
    d = rng.standard_normal(nb).astype(np.float16)
    m = rng.standard_normal(nb).astype(np.float16)
    q8 = rng.integers(-128, 128, (nb, 32), dtype=np.int8)
    blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), q8.view(np.uint8)], axis=1)
    got = run("q8_0", blocks).view(np.float32).reshape(nb, 32)
    want = d.astype(np.float32)[:, None] * q8.astype(np.float32)
    err = np.max(np.abs(got - want))
    print(f"q8_0 dequant: max abs error {err}")
    failures += int(err > 0)

    qs = rng.integers(0, 256, (nb, 16), dtype=np.uint8)
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), qs], axis=1)
    got = run("q4_0", blocks).view(np.float32).reshape(nb, 32)
    want = d.astype(np.float32)[:, None] * (nibbles - 8.0)
    err = np.max(np.abs(got - want))
    print(f"q4_0 dequant: max abs error {err}")
    failures += int(err > 0)

    blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), m.view(np.uint8).reshape(nb, 2), qs], axis=1)
    got = run("q4_1", blocks).view(np.float32).reshape(nb, 32)
    want = d.astype(np.float32)[:, None] * nibbles + m.astype(np.float32)[:, None]
    err = np.max(np.abs(got - want))
    print(f"q4_1 dequant: max abs error {err}")
    failures += int(err > 1e-6 * np.max(np.abs(want)))

    # K-quants: random bytes everywhere (every 6-bit scale and min, every q, negative and
    # subnormal fp16 scales) but finite fp16 d/dmin; 1000 super-blocks each.
    def fp16_bytes(n):
        h = rng.integers(0, 0x10000, n, dtype=np.uint32).astype(np.uint16)
        h[(h & 0x7C00) == 0x7C00] &= 0x3FFF                             # no inf/NaN
        return h.view(np.uint8).reshape(n, 2)

    for name, size, d_at in (("q4_k", 144, (0, 2)), ("q6_k", 210, (208,))):
        blocks = rng.integers(0, 256, (nb, size), dtype=np.uint8)
        for o in d_at:
            blocks[:, o:o + 2] = fp16_bytes(nb)
        got = run(name, blocks).view(np.float32)
        want = dtypes.decode(blocks.tobytes(), name.upper(), (nb * 256,)).astype(np.float32)
        differ = np.count_nonzero(got.view(np.uint32) != want.view(np.uint32))
        print(f"{name} dequant: {differ} of {got.size} values differ in their bits")
        failures += differ

    print("PASS" if failures == 0 else "FAIL")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
