#!/usr/bin/python3
"""A rank's share of an act-order W4 matrix (GPTQ desc_act split between tensor-parallel ranks),
through actorder_dump, against NumPy.

For inputs [first, first + n) of a matrix whose stored column j holds input perm[j], the rank
keeps, group by group in stored order, the columns of its inputs, pads each group's part with
zero columns to whole chunks (32, 64 or 128, the one dividing the group that packs smallest:
4 bits a column, 32 bits of scale, and 32 more of minimum with zero points, per chunk) and the
whole to a multiple of 128; each chunk keeps its group's scale and zero point (kernels/weight.h).
Checked per case:
  * the F32 recipe equals x . W^T over the rank's inputs of the dequantized matrix (NumPy,
    float64) within 1e-5 of max|y|;
  * the W4A8 path equals a NumPy float64 emulation of W4A8 on the layout above (activations
    rounded to int8 per chunk with scale max|x|/127, exact integer dots, scales applied)
    within 1e-5 of max|y|: so the layout, the chunk choice and the padding are as documented;
  * the printed width and chunk are the layout's.
A range outside the inputs is refused with a message naming it.

usage: test_actorder.py ACTORDER_DUMP"""
import os
import subprocess
import sys
import tempfile

import numpy as np

TOL = 1e-5


def layout(perm, group, first, n, asym):
    """(columns: stored column or -1 per new column, chunk, chunk_groups)."""
    n_in = len(perm)
    g_len = group or n_in
    n_groups = n_in // g_len
    mine = [[j for j in range(g * g_len, (g + 1) * g_len) if first <= perm[j] < first + n] for g in range(n_groups)]
    if group == 0:
        return mine[0], n, [0]
    best = None
    for c in (32, 64, 128):
        if group % c:
            continue
        chunks = sum(-(-len(cols) // c) for cols in mine)
        bits = chunks * c * 4 + chunks * (64 if asym else 32)
        if best is None or bits < best[0]:
            best = (bits, c)
    c = best[1]
    columns, chunk_groups = [], []
    for g, cols in enumerate(mine):
        k = -(-len(cols) // c)
        columns += cols + [-1] * (k * c - len(cols))
        chunk_groups += [g] * k
    while len(columns) % 128:
        columns += [-1] * c
        chunk_groups.append(-1)
    return columns, c, chunk_groups


def emulate_a8(x, q, scales, zeros, columns, chunk, chunk_groups, perm, first):
    """W4A8 on the regrouped layout, float64 after exact integer dots."""
    m, n_out = x.shape[0], q.shape[0]
    y = np.zeros((m, n_out))
    for c, g in enumerate(chunk_groups):
        cols = columns[c * chunk:(c + 1) * chunk]
        if g < 0:
            continue
        xa = np.array([[x[i, perm[j] - first] if j >= 0 else 0.0 for j in cols] for i in range(m)], dtype=np.float32)
        amax = np.abs(xa).max(axis=1)
        xs = (amax / np.float32(127)).astype(np.float32)
        inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
        xq = np.clip(np.rint(xa * inv[:, None]), -127, 127).astype(np.int64)
        z = zeros[:, g].astype(np.int64) if zeros is not None else np.full(n_out, 8, dtype=np.int64)
        wq = np.array([[q[o, j] if j >= 0 else z[o] for j in cols] for o in range(n_out)], dtype=np.int64)
        dot = xq @ (wq - z[:, None]).T  # exact
        y += dot * xs[:, None].astype(np.float64) * scales[:, g][None, :].astype(np.float64)
    return y


def run_case(tool, work, name, n_out, n_in, group, first, n, asym, m, seed):
    rng = np.random.default_rng(seed)
    n_groups = n_in // group if group else 1
    q = rng.integers(0, 16, size=(n_out, n_in), dtype=np.uint8)
    scales = (0.01 + 0.05 * rng.random((n_out, n_groups))).astype(np.float32)
    zeros = rng.integers(0, 16, size=(n_out, n_groups), dtype=np.uint8) if asym else None
    perm = rng.permutation(n_in).astype(np.int32)
    x = rng.standard_normal((m, n)).astype(np.float32)
    paths = {k: os.path.join(work, f"{name}.{k}") for k in ("q", "s", "z", "p", "x", "yf", "ya")}
    q.tofile(paths["q"])
    scales.tofile(paths["s"])
    if asym:
        zeros.tofile(paths["z"])
    perm.tofile(paths["p"])
    x.tofile(paths["x"])
    p = subprocess.run([tool, str(n_out), str(n_in), str(group), str(first), str(n), paths["q"], paths["s"],
                        paths["z"] if asym else "-", paths["p"], paths["x"], str(m), paths["yf"], paths["ya"]],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        print(f"FAIL {name}: exit {p.returncode}: {p.stderr.strip()}")
        return False
    # NumPy reference: dequantize in stored order, put column j at input perm[j]
    g_of = np.arange(n_in) // (group or n_in)
    z = zeros[:, g_of].astype(np.float64) if asym else 8.0
    stored = scales[:, g_of].astype(np.float64) * (q.astype(np.float64) - z)
    by_input = np.empty_like(stored)
    by_input[:, perm] = stored
    ref = x.astype(np.float64) @ by_input[:, first:first + n].T
    yf = np.fromfile(paths["yf"], dtype=np.float32).reshape(m, n_out)
    ya = np.fromfile(paths["ya"], dtype=np.float32).reshape(m, n_out)
    columns, chunk, chunk_groups = layout(perm, group, first, n, asym)
    a8 = emulate_a8(x, q, scales, zeros, columns, chunk, chunk_groups, perm, first)
    scale = np.abs(ref).max()
    ef, ea = np.abs(yf - ref).max() / scale, np.abs(ya - a8).max() / scale
    want = f"width {len(columns)} group {chunk if group else 0}"
    problems = []
    if ef > TOL:
        problems.append(f"F32 recipe off the reference by {ef:.1e} of max|y|")
    if ea > TOL:
        problems.append(f"W4A8 off its NumPy emulation by {ea:.1e} of max|y|")
    if p.stdout.strip() != want:
        problems.append(f"layout {p.stdout.strip()!r}, expected {want!r}")
    print(f"{'FAIL' if problems else 'PASS'} {name}: {p.stdout.strip()}, f32 {ef:.1e}, w4a8 {ea:.1e}"
          + "".join(f"\n     {x}" for x in problems))
    return not problems


def main():
    tool = sys.argv[1]
    ok = True
    with tempfile.TemporaryDirectory() as work:
        cases = [  # name, n_out, n_in, group, first, n, asym, m
            ("g128-asym-middle-gemv", 37, 512, 128, 128, 256, True, 3),
            ("g128-sym-half-gemm", 50, 512, 128, 0, 256, False, 11),
            ("g32-sym-third", 19, 384, 32, 96, 96, False, 2),
            ("g64-asym-odd", 33, 640, 64, 200, 160, True, 9),
            ("perrow-asym", 21, 256, 0, 64, 128, True, 4),
        ]
        for i, c in enumerate(cases):
            ok &= run_case(tool, work, *c, seed=i)
        x = os.path.join(work, "g128-asym-middle-gemv.x")
        p = subprocess.run([tool, "37", "512", "128", "384", "256", *(os.path.join(work, "g128-asym-middle-gemv." + k)
                            for k in "qszpx"), "3", os.devnull, os.devnull], capture_output=True, text=True, timeout=60)
        refused = p.returncode == 1 and "inputs [384, 640) of a matrix with 512 inputs" in p.stderr
        print(f"{'PASS' if refused else 'FAIL'} out of range refused: {p.stderr.strip()!r}")
        ok &= refused and os.path.exists(x)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
