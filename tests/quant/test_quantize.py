"""infernode quantize against independent NumPy references.

1. Round to nearest: every integer, scale and zero point in the written GGUF equals what the
   documented formulas give in NumPy, for 8-bit (per row, g32), 4-bit (g32/g64/g128/per row,
   symmetric and asymmetric) and f16/bf16/f32 scales.
2. GPTQ: the C quantizer (gptq_dump) against a NumPy float64 GPTQ (lazy blocks, groups,
   act-order with static groups) on a correlated Hessian: the same integers (>= 99%), the same
   objective (within 2%), and well below round to nearest's objective.
3. The quantized layout loads: the engine's logits (weights dequantized, fp32 compute) equal a
   NumPy float64 forward of the file's dequantized weights; a 2-rank tensor-parallel load
   gives the 1-rank logits.
4. SmoothQuant: the smoothing factors, folded norms, integers and static activation scales
   equal NumPy's from its own forward pass over the same calibration tokens.
5. Quality on held-out text (the default model, KL to the f16 model): GPTQ g128 below RTN
   g128, SmoothQuant static W8A8 below static W8A8 without smoothing.
6. Bad inputs: clear errors.
7. Groups that fit: on a model of 192-wide rows (FFN 576), every scheme writes each matrix in
   the largest group up to the scheme's that divides its width (128 -> 64 there; per row when
   none does) and the file loads, its logits equal to NumPy's forward of the file; packing at
   load (--quant w4a8-g128) fits the same way and says so, at 1 and 2 ranks alike.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))
from llama_model import (LlamaConfig, EMBED, FINAL_NORM, LM_HEAD, layer_names, random_model,  # noqa: E402
                         rope_deinterleave)
import gguf_write  # noqa: E402
from reference import Reference  # noqa: E402
import dtypes  # noqa: E402
import readback  # noqa: E402
import mpi_util  # noqa: E402

LINEARS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


# ---- GGUF reading ------------------------------------------------------------------------------

def read_gguf(path):
    """(metadata, {name: (type name, values as a NumPy array of the tensor's shape)})."""
    _, md, raw = readback.read_gguf(path)
    return md, {name: (tn, dtypes.decode(b, tn, tuple(reversed(ne)))) for name, (ne, tn, b) in raw.items()}


def config_of(md, t):
    a = "llama."
    return LlamaConfig(dim=md[a + "embedding_length"], hidden_dim=md[a + "feed_forward_length"],
                       n_layers=md[a + "block_count"], n_heads=md[a + "attention.head_count"],
                       n_kv_heads=md[a + "attention.head_count_kv"], vocab_size=t["token_embd.weight"][1].shape[0],
                       context_length=md[a + "context_length"], rope_theta=float(md.get(a + "rope.freq_base", 1e4)),
                       norm_eps=float(md.get(a + "attention.layer_norm_rms_epsilon", 1e-5)),
                       tied="output.weight" not in t)


def unpack(t, base, n_in):
    """(integers [out][in], scales [out][groups], zeros [out][groups] or None, act_scale)."""
    w = t[base + ".weight"][1]
    if w.shape[1] == n_in:
        q = w.astype(np.int32)
    else:
        b = w.astype(np.int8).view(np.uint8).astype(np.int32)
        q = np.stack([b & 15, b >> 4], axis=2).reshape(b.shape[0], -1)
    s = t[base + ".scales"][1].astype(np.float32)
    z = t[base + ".zeros"][1].astype(np.int32) if base + ".zeros" in t else None
    a = float(t[base + ".act_scale"][1][0]) if base + ".act_scale" in t else 0.0
    return q, s, z, a


def dequant(t, base, n_in):
    if base + ".scales" not in t:
        return t[base + ".weight"][1].astype(np.float64)
    q, s, z, _ = unpack(t, base, n_in)
    g = n_in // s.shape[1]
    four_bit = t[base + ".weight"][1].shape[1] != n_in
    zero = z if z is not None else np.full(s.shape, 8 if four_bit else 0)
    return np.repeat(s.astype(np.float64), g, axis=1) * (q - np.repeat(zero, g, axis=1))


def hf_weights(path):
    md, t = read_gguf(path)
    cfg = config_of(md, t)
    w = {EMBED: dequant(t, "token_embd", cfg.dim), FINAL_NORM: t["output_norm.weight"][1].astype(np.float64)}
    if not cfg.tied:
        w[LM_HEAD] = dequant(t, "output", cfg.dim)
    names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
             "ffn_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}
    for i in range(cfg.n_layers):
        for key, hf in layer_names(i).items():
            base = f"blk.{i}.{names[key]}"
            if key.endswith("norm"):
                w[hf] = t[base + ".weight"][1].astype(np.float64)
                continue
            n_in = cfg.q_dim if key == "wo" else cfg.hidden_dim if key == "w_down" else cfg.dim
            m = dequant(t, base, n_in)
            if key == "wq":
                m = rope_deinterleave(m, cfg.n_heads)
            elif key == "wk":
                m = rope_deinterleave(m, cfg.n_kv_heads)
            w[hf] = m
    return cfg, w


# ---- NumPy quantizers ------------------------------------------------------------------------

def round_scale(s, scale_type):
    s = np.asarray(s, np.float32)
    if scale_type == "f16":
        return s.astype(np.float16).astype(np.float32)
    if scale_type == "bf16":
        u = s.view(np.uint32).astype(np.uint64)
        return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16).view(np.float32)
    return s


def group_params(x, bits, asym, scale_type):
    """x [rows][n] float32 -> (scale, zero) per row, as documented in quantize.h."""
    if bits == 8:
        return round_scale(np.abs(x).max(1) / np.float32(127), scale_type), np.zeros(len(x), np.int32)
    if not asym:
        e = x[np.arange(len(x)), np.abs(x).argmax(1)]
        return round_scale(e / np.float32(-8), scale_type), np.full(len(x), 8, np.int32)
    mn, mx = np.minimum(x.min(1), 0), np.maximum(x.max(1), 0)
    s = round_scale((mx - mn) / np.float32(15), scale_type)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s != 0, np.rint(-mn / s), 0)
    return s, np.clip(z, 0, 15).astype(np.int32)


def quantize_values(x, s, z, bits):
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x / s[:, None]) + z[:, None]
    lo, hi = (-127, 127) if bits == 8 else (0, 15)
    return np.where(s[:, None] != 0, np.clip(q, lo, hi), z[:, None]).astype(np.int32)


def rtn(w, bits, group, asym, scale_type):
    w = w.astype(np.float32)
    n_out, n_in = w.shape
    gl = group or n_in
    q = np.zeros(w.shape, np.int32)
    S = np.zeros((n_out, n_in // gl), np.float32)
    Z = np.zeros((n_out, n_in // gl), np.int32)
    for g in range(n_in // gl):
        x = w[:, g * gl:(g + 1) * gl]
        S[:, g], Z[:, g] = group_params(x, bits, asym, scale_type)
        q[:, g * gl:(g + 1) * gl] = quantize_values(x, S[:, g], Z[:, g], bits)
    return q, S, Z


def gptq_ref(W, H, bits, group, asym, act_order, damp=0.01, block=128):
    """GPTQ (Frantar et al. 2022, Algorithm 1) in float64: columns one at a time, the error
    spread over the remaining columns through the upper Cholesky factor of H^-1, updates
    beyond the current block applied lazily; group parameters from the current weights when a
    group begins (act-order: from the original weights of each stored group)."""
    W = W.astype(np.float64).copy()
    H = H.copy()
    n_out, n = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    gl = group or n
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
    S = np.zeros((n_out, n // gl), np.float32)
    Z = np.zeros((n_out, n // gl), np.int32)
    if act_order:
        for g in range(n // gl):
            S[:, g], Z[:, g] = group_params(W[:, g * gl:(g + 1) * gl].astype(np.float32), bits, asym, "f16")
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    H[np.diag_indices(n)] += damp * np.mean(np.diag(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros((n_out, n), np.int32)
    loss = 0.0
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1 = W[:, i1:i2].copy()
        Err = np.zeros_like(W1)
        for i in range(i2 - i1):
            col = perm[i1 + i]
            g = col // gl
            if not act_order and col % gl == 0:
                cur = np.concatenate([W1[:, i:], W[:, i2:]], axis=1)[:, :gl]
                S[:, g], Z[:, g] = group_params(cur.astype(np.float32), bits, asym, "f16")
            w = W1[:, i]
            q = quantize_values(w.astype(np.float32)[:, None], S[:, g], Z[:, g], bits)[:, 0]
            Q[:, col] = q
            deq = S[:, g].astype(np.float64) * (q - Z[:, g])
            d = U[i1 + i, i1 + i]
            loss += float(((w - deq) ** 2).sum() / d ** 2 / 2)
            e = (w - deq) / d
            W1[:, i + 1:] -= np.outer(e, U[i1 + i, i1 + i + 1:i2])
            Err[:, i] = e
        W[:, i2:] -= Err @ U[i1:i2, i2:]
    return Q, S, Z, loss


def objective(W, Q, S, Z, H):
    g = W.shape[1] // S.shape[1]
    D = W - np.repeat(S.astype(np.float64), g, axis=1) * (Q - np.repeat(Z, g, axis=1))
    return float(np.einsum("ij,jk,ik->", D, H, D)) / 2


# ---- tests -------------------------------------------------------------------------------------

def run(cmd, ok=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    if ok and r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r


def quantize(a, out, scheme, *extra):
    run([a.infernode, "quantize", "-m", a.model, "-o", out, "--scheme", scheme, *extra])
    return out


def logits(a, model, ids, *extra, ranks=1):
    out = os.path.join(a.work, "logits.bin")
    args = [a.infernode, "generate", "-m", model, "--prompt-ids", ",".join(map(str, ids)), "-n", "0",
            "--kv-type", "f32", "--logits-out", out, *extra]
    if ranks == 1:
        run(args)
    else:
        r = mpi_util.run(ranks, args)
        if r.returncode != 0:
            raise SystemExit(f"mpirun failed: {r.stderr[-3000:]}")
    return np.fromfile(out, np.float32).reshape(len(ids), -1).astype(np.float64)


def test_rtn(a, src):
    cfg = config_of(*src)
    _, st = src
    for scheme, bits, group, asym, stype in [("rtn-w8", 8, 0, False, "f16"), ("rtn-w8-g32", 8, 32, False, "bf16"),
                                            ("rtn-w4-g32", 4, 32, False, "f16"), ("rtn-w4-g64-asym", 4, 64, True, "f32"),
                                            ("rtn-w4-g128", 4, 128, False, "f16"), ("rtn-w4-pc-asym", 4, 0, True, "f16")]:
        path = quantize(a, os.path.join(a.work, scheme + ".gguf"), scheme, "--scale-type", stype)
        md, t = read_gguf(path)
        bad = []
        for l in (0, cfg.n_layers - 1):
            for name in LINEARS:
                base = f"blk.{l}.{name}"
                w = st[base + ".weight"][1]
                q, s, z, _ = unpack(t, base, w.shape[1])
                rq, rs, rz = rtn(w, bits, group, asym, stype)
                if not (np.array_equal(q, rq) and np.array_equal(s, rs) and (z is None or np.array_equal(z, rz))):
                    bad.append(f"{base}: {np.mean(q != rq):.2%} integers, {np.mean(s != rs):.2%} scales differ")
        q, s, _, _ = unpack(t, "token_embd", cfg.dim)
        rq, rs, _ = rtn(st["token_embd.weight"][1], 8, 0, False, stype)
        if not (np.array_equal(q, rq) and np.array_equal(s, rs)):
            bad.append("token_embd differs")
        check(not bad and md["infernode.quantization.scheme"] == scheme,
              f"{scheme} ({stype} scales): integers, scales and zero points equal NumPy's {bad[:2]}")


def test_gptq_core(a):
    rng = np.random.default_rng(7)
    # (n_out, n_in, cases): 256 inputs are two whole blocks of 128 columns; 352 end on a
    # partial block (128 + 128 + 96), so the last lazy update and the short block are covered
    shapes = [(96, 256, [(4, 128, False, False), (4, 128, True, True), (4, 0, False, True), (4, 32, True, False),
                         (8, 0, False, False)]),
              (40, 352, [(4, 32, False, False), (4, 32, True, True)])]
    for n_out, n_in, cases in shapes:
        # strongly correlated inputs (rank 48 plus noise), as a layer's inputs are
        X = rng.standard_normal((4096, 48)) @ rng.standard_normal((48, n_in)) + 0.2 * rng.standard_normal((4096, n_in))
        X[:, rng.choice(n_in, 6, replace=False)] *= 8.0  # a few outlier channels, as real activations have
        X[:, 5] = 0.0                                    # a dead input
        H = 2.0 * X.T @ X / len(X)
        W = (rng.standard_normal((n_out, n_in)) * 0.05).astype(np.float32)
        wf, hf = os.path.join(a.work, "w.f32"), os.path.join(a.work, "h.f64")
        W.tofile(wf)
        H.tofile(hf)
        for bits, group, asym, ao in cases:
            gptq_case(a, W, H, wf, hf, bits, group, asym, ao)


def gptq_case(a, W, H, wf, hf, bits, group, asym, ao):
    n_out, n_in = W.shape
    out = os.path.join(a.work, "gptq.out")
    res = {}
    for method in ("gptq", "rtn"):
        run([a.gptq_dump, wf, hf, out, str(n_out), str(n_in), str(bits), str(group), str(int(asym)), str(int(ao)), method])
        raw = open(out, "rb").read()
        ng = n_in // (group or n_in)
        q = np.frombuffer(raw, "<i4", n_out * n_in).reshape(n_out, n_in)
        s = np.frombuffer(raw, "<f4", n_out * ng, 4 * n_out * n_in).reshape(n_out, ng)
        z = np.frombuffer(raw, "<f4", n_out * ng, 4 * n_out * n_in + 4 * n_out * ng).reshape(n_out, ng).astype(np.int32)
        res[method] = (q, s, z, struct.unpack_from("<d", raw, len(raw) - 8)[0])
    Q, S, Z, loss = gptq_ref(W, H, bits, group, asym, ao)
    q, s, z, closs = res["gptq"]
    agree = np.mean(q == Q)
    f_c, f_ref, f_rtn = objective(W, q, s, z, H), objective(W, Q, S, Z, H), objective(W, *res["rtn"][:3], H)
    check(agree >= 0.99 and abs(f_c - f_ref) <= 0.02 * f_ref and abs(closs - loss) <= 0.02 * loss and f_c < 0.8 * f_rtn,
          f"GPTQ {n_out}x{n_in} w{bits} {'g' + str(group) if group else 'per row'}{' asym' if asym else ''}"
          f"{' act-order' if ao else ''}: {agree:.2%} of integers equal NumPy's, objective {f_c:.5g} vs NumPy "
          f"{f_ref:.5g}, round to nearest {f_rtn:.5g}")


def test_load(a, ids):
    for scheme, extra in [("rtn-w4-g128-asym", ()), ("gptq-w4-g64", ("--act-order",)), ("rtn-w8-g32", ()),
                          ("sq-w8a8", ())]:
        path = quantize(a, os.path.join(a.work, f"load-{scheme}.gguf"), scheme, *extra)
        cfg, w = hf_weights(path)
        ref = Reference(cfg, w).forward(ids)
        got = logits(a, path, ids, "--quant", "f32")
        err = np.abs(got - ref).max() / np.abs(ref).max()
        check(err < 1e-4, f"{scheme}{' '.join(extra)}: engine logits (dequantized, fp32) vs NumPy forward of the file: "
                          f"{err:.2e} of max|logit|")
        if scheme == "rtn-w4-g128-asym":
            one, two = logits(a, path, ids), logits(a, path, ids, ranks=2)
            err = np.abs(one - two).max() / np.abs(one).max()
            check(err < 1e-4, f"{scheme} as stored (w4a8): 2 ranks vs 1 rank {err:.2e} of max|logit|")


def fit_group(n_in, group):
    """The group a matrix of n_in inputs takes when `group` is asked (0: per row), written from
    the rule in docs/quantization.md: the largest of 128, 64, 32 up to `group` dividing n_in."""
    return next((g for g in (128, 64, 32) if g <= group and n_in % g == 0), 0)


def test_fitted_groups(a):
    cfg = LlamaConfig(dim=192, hidden_dim=576, n_layers=2, n_heads=6, n_kv_heads=6, vocab_size=256)
    src = os.path.join(a.work, "w192.gguf")
    gguf_write.write_llama(src, cfg, random_model(cfg, 192))
    calib = os.path.join(a.work, "w192-calib.ids")
    open(calib, "w").write(" ".join(str(i) for i in np.random.default_rng(5).integers(3, 256, 512)))
    ids = list(range(3, 35))
    widths = {"attn_q": 192, "attn_output": 192, "ffn_up": 192, "ffn_down": 576}
    for scheme, group in [("rtn-w8", 0), ("rtn-w8-g32", 32), ("rtn-w4-g32", 32), ("rtn-w4-g64-asym", 64),
                          ("rtn-w4-g128", 128), ("rtn-w4-g128-asym", 128), ("rtn-w4-pc", 0), ("gptq-w4-g128", 128),
                          ("gptq-w8", 0), ("sq-w8a8", 0)]:
        path = os.path.join(a.work, f"w192-{scheme}.gguf")
        calib_args = ["--calib-ids", calib, "--calib-ctx", "64"] if scheme.startswith(("gptq", "sq")) else []
        r = run([a.infernode, "quantize", "-m", src, "-o", path, "--scheme", scheme, *calib_args], ok=False)
        check(r.returncode == 0, f"quantize {scheme} on 192-wide rows: exit {r.returncode}"
                                 f"{'' if r.returncode == 0 else ' ' + r.stderr[-300:]}")
        if r.returncode != 0:
            continue
        _, t = read_gguf(path)
        got = {n: w // t[f"blk.0.{n}.scales"][1].shape[1] for n, w in widths.items()}
        want = {n: fit_group(w, group) or w for n, w in widths.items()}
        said = group == 128 and "groups of 64 there" in r.stderr
        check(got == want and (group != 128 or said),
              f"{scheme}: groups per matrix {got}, expected {want}{'; said so' if said else ''}")
        cfg_f, w = hf_weights(path)
        ref = Reference(cfg_f, w).forward(ids)
        err = np.abs(logits(a, path, ids, "--quant", "f32") - ref).max() / np.abs(ref).max()
        check(err < 1e-4, f"{scheme} on 192-wide rows loads: logits vs NumPy forward of the file {err:.2e}")
    out = os.path.join(a.work, "w192-fit.bin")
    args = [a.infernode, "generate", "-m", src, "--prompt-ids", ",".join(map(str, ids)), "-n", "0", "--kv-type", "f32",
            "--quant", "w4a8-g128", "--logits-out", out]
    r = run(args, ok=False)
    check(r.returncode == 0 and "w4a8-g64 (192 inputs)" in r.stderr and "w4a8-g64 (576 inputs)" in r.stderr,
          f"--quant w4a8-g128 on 192-wide rows packs g64 and says so: {r.stderr.strip()[-300:]}")
    if r.returncode == 0:
        one = np.fromfile(out, np.float32)
        two = logits(a, src, ids, "--quant", "w4a8-g128", ranks=2).astype(np.float32).ravel()
        err = np.abs(one - two).max() / np.abs(one).max()
        check(err < 1e-4, f"--quant w4a8-g128 on 192-wide rows: 2 ranks vs 1 rank {err:.2e} of max|logit|")


def forward_maxima(cfg, w, windows):
    """Per layer, max |x| per channel of the inputs of Q/K/V, O, gate/up and down over the
    windows (each from position 0): a float64 forward of its own."""
    def norm(x, g):
        return x / np.sqrt((x * x).mean(1, keepdims=True) + cfg.norm_eps) * g

    hd, nh, grp = cfg.head_dim, cfg.n_heads, cfg.n_heads // cfg.n_kv_heads
    inv = cfg.rope_theta ** (-np.arange(0, hd, 2) / hd)
    mx = [[np.zeros(n) for n in (cfg.dim, cfg.q_dim, cfg.dim, cfg.hidden_dim)] for _ in range(cfg.n_layers)]
    for win in windows:
        n = len(win)
        ang = np.arange(n)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

        def rope(x):
            a, b = x[..., :hd // 2], x[..., hd // 2:]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

        x = w[EMBED][np.asarray(win)]
        causal = np.tril(np.ones((n, n), bool))
        for l in range(cfg.n_layers):
            L = {k: w[v] for k, v in layer_names(l).items()}
            xn = norm(x, L["attn_norm"])
            q = rope((xn @ L["wq"].T).reshape(n, nh, hd))
            k = rope((xn @ L["wk"].T).reshape(n, -1, hd))
            v = (xn @ L["wv"].T).reshape(n, -1, hd)
            att = np.empty((n, nh, hd))
            for h in range(nh):
                sc = np.where(causal, q[:, h] @ k[:, h // grp].T / np.sqrt(hd), -np.inf)
                sc = np.exp(sc - sc.max(1, keepdims=True))
                att[:, h] = (sc / sc.sum(1, keepdims=True)) @ v[:, h // grp]
            att = att.reshape(n, -1)
            x = x + att @ L["wo"].T
            xf = norm(x, L["ffn_norm"])
            gate = xf @ L["w_gate"].T
            mid = gate / (1 + np.exp(-gate)) * (xf @ L["w_up"].T)
            x = x + mid @ L["w_down"].T
            for i, val in enumerate((xn, att, xf, mid)):
                mx[l][i] = np.maximum(mx[l][i], np.abs(val).max(0))
    return mx


def test_smoothquant(a, src, calib, alpha=0.5):
    cfg = config_of(*src)
    st = src[1]
    idsf = os.path.join(a.work, "calib.ids")
    open(idsf, "w").write(" ".join(map(str, calib)))
    path = quantize(a, os.path.join(a.work, "sq.gguf"), "sq-w8a8", "--calib-ids", idsf, "--calib-ctx", "256")
    _, t = read_gguf(path)
    cfg_hf, w = hf_weights(a.model)
    mx = forward_maxima(cfg_hf, w, [calib[i:i + 256] for i in range(0, len(calib), 256)])
    worst = {"norm": 0.0, "int": 1.0, "act": 0.0}
    grp = cfg.n_heads // cfg.n_kv_heads
    for l in range(cfg.n_layers):
        W = {n: st[f"blk.{l}.{n}.weight"][1].astype(np.float64) for n in LINEARS}
        am_in, am_o, am_f, am_mid = mx[l]
        # the GGUF stores Q, K rows interleaved; columns (inputs) are what smoothing scales
        def sf(act, wm):
            s = np.where((act > 0) & (wm > 0), act ** alpha / np.maximum(wm, 1e-30) ** (1 - alpha), 1.0)
            return np.clip(s, 1e-5, 1e5)
        s_in = sf(am_in, np.abs(np.vstack([W["attn_q"], W["attn_k"], W["attn_v"]])).max(0))
        s_f = sf(am_f, np.abs(np.vstack([W["ffn_gate"], W["ffn_up"]])).max(0))
        s_mid = sf(am_mid, np.abs(W["ffn_down"]).max(0))
        wo_max = np.abs(W["attn_output"]).max(0)
        s_o = np.ones(cfg.q_dim)
        hd = cfg.head_dim
        v_div = np.ones(cfg.kv_dim)
        for kv in range(cfg.n_kv_heads):
            cols = [h * hd + np.arange(hd) for h in range(kv * grp, (kv + 1) * grp)]
            f = sf(np.max([am_o[c] for c in cols], 0), np.max([wo_max[c] for c in cols], 0))
            for c in cols:
                s_o[c] = f
            v_div[kv * hd:(kv + 1) * hd] = f
        folded = {"attn_q": W["attn_q"] * s_in, "attn_k": W["attn_k"] * s_in, "attn_v": W["attn_v"] * s_in / v_div[:, None],
                  "attn_output": W["attn_output"] * s_o, "ffn_gate": W["ffn_gate"] * s_f,
                  "ffn_up": W["ffn_up"] * s_f / s_mid[:, None], "ffn_down": W["ffn_down"] * s_mid}
        act = {"attn_q": (am_in / s_in).max(), "attn_output": (am_o / s_o).max(), "ffn_gate": (am_f / s_f).max(),
               "ffn_down": (am_mid / s_mid).max()}
        act.update(attn_k=act["attn_q"], attn_v=act["attn_q"], ffn_up=act["ffn_gate"])
        for norm, s in (("attn_norm", s_in), ("ffn_norm", s_f)):
            want = st[f"blk.{l}.{norm}.weight"][1] / s
            worst["norm"] = max(worst["norm"], np.abs(t[f"blk.{l}.{norm}.weight"][1] - want).max() / np.abs(want).max())
        for n in LINEARS:
            q, s, _, act_scale = unpack(t, f"blk.{l}.{n}", W[n].shape[1])
            rq, _, _ = rtn(folded[n].astype(np.float32), 8, 0, False, "f16")
            worst["int"] = min(worst["int"], np.mean(np.abs(q - rq) <= 1) * (np.mean(q == rq) >= 0.98))
            worst["act"] = max(worst["act"], abs(act_scale - act[n] / 127) / (act[n] / 127))
    check(worst["norm"] < 1e-3 and worst["int"] >= 0.999 and worst["act"] < 1e-3,
          f"SmoothQuant alpha {alpha}: folded norms within {worst['norm']:.1e}, integers within one step "
          f"(>= 98% equal) for {worst['int']:.2%}, static scales within {worst['act']:.1e} of NumPy's")


def kl_to(ref_logits, q_logits):
    def lsm(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))
    lr, lq = lsm(ref_logits), lsm(q_logits)
    return float((np.exp(lr) * (lr - lq)).sum(1).mean())


def test_quality(a, windows, calib):
    idsf = os.path.join(a.work, "quality-calib.ids")
    open(idsf, "w").write(" ".join(map(str, calib)))
    refs = [logits(a, a.model, win, "--quant", "f32") for win in windows]
    files = {s: quantize(a, os.path.join(a.work, f"q-{s}.gguf"), s.split(":")[0], "--calib-ids", idsf,
                         *(["--act-scales", "static"] if s.endswith(":static") else []))
             for s in ("rtn-w4-g128", "gptq-w4-g128", "rtn-w8:static", "sq-w8a8")}
    kl = {s: np.mean([kl_to(r, logits(a, f, win)) for r, win in zip(refs, windows)]) for s, f in files.items()}
    print("  KL to the f16 model on held-out windows:", {k: round(v, 5) for k, v in kl.items()})
    check(kl["gptq-w4-g128"] < 0.85 * kl["rtn-w4-g128"], f"GPTQ g128 KL {kl['gptq-w4-g128']:.5f} below RTN g128 "
                                                          f"{kl['rtn-w4-g128']:.5f}")
    check(kl["sq-w8a8"] < 0.7 * kl["rtn-w8:static"], f"SmoothQuant static W8A8 KL {kl['sq-w8a8']:.5f} below static W8A8 "
                                                      f"without smoothing {kl['rtn-w8:static']:.5f}")


def test_bad_input(a):
    out = os.path.join(a.work, "bad.gguf")
    cases = [
        (["--scheme", "rtn-w3-g128"], "unknown scheme 'rtn-w3-g128'"),
        (["--scheme", "gptq-w4-g128", "--calib-ids", os.path.join(a.work, "short.ids")], "gives 100 tokens"),
        (["--scheme", "gptq-w4-g128", "--calib-ids", os.path.join(a.work, "oov.ids")], "outside the vocabulary"),
        (["--scheme", "gptq-w4-g128", "--calib", os.path.join(a.work, "missing.txt")], "cannot open the calibration"),
        (["--scheme", "rtn-w4-g128", "--act-scales", "static"], "static activation scales go with 8-bit"),
        (["--scheme", "rtn-w4-g128", "-m", os.path.join(a.work, "short.ids")], "short.ids"),
        (["--scheme", "rtn-w4-g128", "--act-order"], "--act-order is a GPTQ option"),
    ]
    open(os.path.join(a.work, "short.ids"), "w").write(" ".join(["5"] * 100))
    open(os.path.join(a.work, "oov.ids"), "w").write(" ".join(["5"] * 300 + ["99999"]))
    for args, want in cases:
        r = run([a.infernode, "quantize", "-m", a.model, "-o", out, *args], ok=False)
        check(r.returncode != 0 and want in r.stderr and not os.path.exists(out) and not os.path.exists(out + ".tmp"),
              f"quantize {' '.join(args[:2])}...: exit {r.returncode}, '{want}' in: {r.stderr.strip()[:160]}")
    # a quantized file with a zero point out of range, and scales of the wrong shape
    good = quantize(a, os.path.join(a.work, "good.gguf"), "rtn-w4-g128-asym")
    data = bytearray(open(good, "rb").read())
    md, t = read_gguf(good)
    zeros = t["blk.0.attn_q.zeros"][1]
    at = bytes(data).find(zeros.astype(np.int8).tobytes())
    data[at] = 200
    badz = os.path.join(a.work, "badzero.gguf")
    open(badz, "wb").write(data)
    r = run([a.infernode, "generate", "-m", badz, "--prompt-ids", "1,2", "-n", "1"], ok=False)
    check(r.returncode != 0 and "zero point 200" in r.stderr and "blk.0.attn_q" in r.stderr,
          f"a zero point of 200: {r.stderr.strip()[-200:]}")
    name = b"blk.1.ffn_down.scales"
    data = bytearray(open(good, "rb").read())
    at = bytes(data).find(name) + len(name)
    ne0 = struct.unpack_from("<Q", data, at + 4)[0]
    struct.pack_into("<Q", data, at + 4, ne0 + 1)  # one group more than the inputs allow
    bads = os.path.join(a.work, "badscales.gguf")
    open(bads, "wb").write(data)
    r = run([a.infernode, "generate", "-m", bads, "--prompt-ids", "1,2", "-n", "1"], ok=False)
    check(r.returncode != 0 and "blk.1.ffn_down.scales" in r.stderr,
          f"scales of the wrong shape: {r.stderr.strip()[-200:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--gptq-dump", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    src = read_gguf(a.model)
    cases = [c for c in json.load(open(a.cases))["cases"] if c.get("heldout") and len(c["ids"]) >= 200]
    test_rtn(a, src)
    test_gptq_core(a)
    test_load(a, cases[0]["ids"][:48])
    test_smoothquant(a, src, [i for c in cases[-6:] for i in c["ids"]][:1024])
    test_quality(a, [c["ids"][:256] for c in cases[:12]], [i for c in cases[-40:] for i in c["ids"]])
    test_bad_input(a)
    test_fitted_groups(a)
    if failures:
        print(f"{len(failures)} failed")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
