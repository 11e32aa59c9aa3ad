"""The scalar references of kernels/ops.h against NumPy (float64) and the textbook formulas.

usage: test_ops_ref.py OPS_DUMP   (the ops_dump driver; see tests/kernels/ops_dump.c)

  RMSNorm   x / sqrt(mean(x^2) + eps) * w                             rel 1e-6
  RoPE      interleaved pairs (2i, 2i+1) and halves (i, i + d/2), angle pos * theta^(-2i/d);
            |err| <= 2^-21 (|x_a| + |x_b|) per pair (fp32 rounding of cos/sin and products)
            rope(rope(x, p), -p) == x within 2^-20 (|x_a| + |x_b|)
  RoPE frequencies under scaling (ifn_rope_freqs), rel 1e-12, from the published formulas
            (Hugging Face transformers' _compute_{linear_scaling,llama3,yarn}_parameters):
            linear f/factor; Llama 3 by wavelength bands; YaRN's ramp over find_correction_range
  RoPE of cached fp16/bf16/fp32 rows (the KV ring's re-rotation): within one unit in the last
            place of the stored type, plus the fp32 bound
  softmax   exp(x - max) / sum          rel 1e-6 + u |x - max| (x - max is rounded to fp32), abs 1e-44
  SiLU·mul  g / (1 + exp(-g)) * up      rel 1e-6, abs 3e-37 (for g < -88.7 fp32's exp(-g) overflows
                                        and the result is 0 where the exact one is below 3e-37)
  fp16 store  bit-equal to NumPy's float32 -> float16 (round to nearest even)
  bf16 store  the nearest bf16, ties to the even one (checked from its two neighbours)
  attention softmax(q K^T / sqrt(d)) V per head, query head h on KV head (head0 + h) // group
            - kv_head0 (whole models: h // (H / H_kv); also a tensor-parallel shard),
            causal (token t sees rows 0..n_rows-n_tokens+t) or masked; a token that sees
            nothing gets zeros. Tolerance (4 gamma(d + 4) S + gamma(4 n + 32)) * sum p|v|,
            S = max_r scale sum |q k_r|, as in test_ops.c.
"""
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

U = 2.0 ** -24
failures = 0
checks = 0


def check(ok, what):
    global failures, checks
    checks += 1
    if not ok:
        failures += 1
        print("FAIL:", what)


def load(path):
    """name -> float64 array."""
    rec = {}
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        (nlen,) = struct.unpack_from("<I", data, off)
        off += 4
        name = data[off:off + nlen].decode()
        off += nlen
        (ndim,) = struct.unpack_from("<I", data, off)
        off += 4
        dims = struct.unpack_from("<%dI" % ndim, data, off)
        off += 4 * ndim
        n = int(np.prod(dims)) if ndim else 1
        rec[name] = np.frombuffer(data, dtype="<f8", count=n, offset=off).reshape(dims)
        off += 8 * n
    return rec


def cases(rec, op):
    """The case dicts of an op: {field: array}."""
    out = {}
    for name, arr in rec.items():
        o, idx, field = name.split("/")
        if o == op:
            out.setdefault(int(idx), {})[field] = arr
    return [out[i] for i in sorted(out)]


def rel_ok(got, want, rel, abs_tol=0.0):
    return bool(np.all(np.abs(got - want) <= rel * np.abs(want) + abs_tol))


def rope_pairs(d, interleaved):
    """Index arrays (a, b) of the pairs of a head of d values."""
    i = np.arange(d // 2)
    return (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)


def rope_textbook(x, pos, theta, interleaved):
    """x [..., d] rotated: pair i by pos * theta^(-2i/d)."""
    d = x.shape[-1]
    a, b = rope_pairs(d, interleaved)
    ang = pos * theta ** (-2.0 * np.arange(d // 2) / d)
    c, s = np.cos(ang), np.sin(ang)
    y = x.copy()
    y[..., a] = x[..., a] * c - x[..., b] * s
    y[..., b] = x[..., a] * s + x[..., b] * c
    return y


def pair_bound(x, interleaved, scale):
    """scale * (|x_a| + |x_b|) for each element of its pair."""
    d = x.shape[-1]
    a, b = rope_pairs(d, interleaved)
    t = np.empty_like(x)
    t[..., a] = t[..., b] = np.abs(x[..., a]) + np.abs(x[..., b])
    return scale * t


def test_rmsnorm(rec):
    for i, c in enumerate(cases(rec, "rmsnorm")):
        x, w, eps = c["x"], c["w"], c["eps"][0]
        want = x / np.sqrt(np.mean(x * x) + eps) * w
        check(rel_ok(c["out"], want, 1e-6), "rmsnorm case %d (n=%d)" % (i, x.size))


def test_rope(rec):
    for i, c in enumerate(cases(rec, "rope")):
        x, pos, theta, il = c["x"], c["pos"][0], c["theta"][0], bool(c["interleaved"][0])
        want = rope_textbook(x, pos, theta, il)
        what = "rope case %d (%s, d=%d, pos=%g)" % (i, "interleaved" if il else "halves", x.shape[1], pos)
        check(np.all(np.abs(c["out"] - want) <= pair_bound(x, il, 2.0 ** -21)), what)
        check(np.all(np.abs(c["back"] - x) <= pair_bound(x, il, 2.0 ** -20)), what + " rotated back")


def ulp_of(v, mant_bits, min_exp):
    """One unit in the last place at |v| of a binary type with mant_bits stored bits."""
    e = np.frexp(np.abs(v))[1]
    return np.ldexp(1.0, np.maximum(e - mant_bits - 1, min_exp))


def rope_freqs_published(kind, theta, d, factor, orig, low, high, beta_fast, beta_slow, div):
    """Pair frequencies as transformers computes inv_freq, with the pair divisors first."""
    inv = 1.0 / (theta ** (np.arange(0, d, 2) / d)) / div
    if kind == 1:                                      # linear
        return inv / factor
    if kind == 2:                                      # llama3
        low_wl, high_wl = orig / low, orig / high
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        return np.where(medium, smoothed, out)
    if kind == 3:                                      # yarn
        def corr_dim(rot):
            return (d * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(theta))
        lo = max(math.floor(corr_dim(beta_fast)), 0)
        hi = min(math.ceil(corr_dim(beta_slow)), d - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(d // 2) - lo) / (hi - lo), 0, 1)
        extra = 1 - ramp
        return (inv / factor) * (1 - extra) + inv * extra
    return inv


def test_rope_freqs(rec):
    names = {0: "none", 1: "linear", 2: "llama3", 3: "yarn"}
    n = 0
    for i, c in enumerate(cases(rec, "rope_freqs")):
        g = {k: float(v[0]) for k, v in c.items() if v.size == 1}
        d = 2 * c["freq"].size
        want = rope_freqs_published(int(g["kind"]), g["theta"], d, g["factor"], g["orig_ctx"], g["low"], g["high"],
                                    g["beta_fast"], g["beta_slow"], c["div"])
        what = "rope_freqs case %d (%s, d=%d)" % (i, names[int(g["kind"])], d)
        check(rel_ok(c["freq"], want, 1e-12), what)
        n += 1
    check(n >= 10, "rope_freqs: %d cases dumped" % n)


def test_rope_kv(rec):
    types = {0: ("f32", 23, -149), 1: ("f16", 10, -24), 2: ("bf16", 7, -133)}
    for i, c in enumerate(cases(rec, "rope_kv")):
        name, mant, emin = types[int(c["type"][0])]
        x, il = c["x"], bool(c["interleaved"][0])
        nh, hd = int(c["heads"][0]), int(c["head_dim"][0])
        heads = x[:, :nh * hd].reshape(x.shape[0], nh, hd)
        want = rope_textbook(heads, c["delta"][0], c["theta"][0], il)
        got = c["out"][:, :nh * hd].reshape(heads.shape)
        tol = pair_bound(heads, il, 2.0 ** -21) + ulp_of(want, mant, emin)
        what = "rope_kv case %d (%s, %s)" % (i, name, "interleaved" if il else "halves")
        check(np.all(np.abs(got - want) <= tol), what)
        check(np.array_equal(c["out"][:, nh * hd:], x[:, nh * hd:]), what + ": padding changed")


def test_softmax_silu(rec):
    for i, c in enumerate(cases(rec, "softmax")):
        x = c["x"]
        e = np.exp(x - x.max())
        # x - max is rounded to fp32 before exp: a relative error of u |x - max| on top
        rel = 1e-6 + U * np.abs(x - x.max())
        check(rel_ok(c["out"], e / e.sum(), rel, 1e-44), "softmax case %d (n=%d)" % (i, x.size))
    for i, c in enumerate(cases(rec, "silu")):
        g, up = c["gate"], c["up"]
        with np.errstate(over="ignore"):
            want = g / (1.0 + np.exp(-g)) * up
        # for g < -88.7 expf(-g) overflows to inf and fp32 gives 0 for |g| e^g < 3e-37
        check(rel_ok(c["out"], want, 1e-6, 3e-37), "silu case %d (n=%d)" % (i, g.size))


def test_layernorm_gelu(rec):
    for i, c in enumerate(cases(rec, "layernorm")):
        x = c["x"]
        d = x - x.mean()
        want = d / np.sqrt((d * d).mean() + c["eps"]) * c["w"] + c["b"]
        # one rounding of each result (the reference works in double); cancellation of the
        # normed term against the bias makes the bound absolute on their magnitudes
        t = np.abs(d / np.sqrt((d * d).mean() + c["eps"]) * c["w"]) + np.abs(c["b"])
        check(np.all(np.abs(c["out"] - want) <= 1e-6 * t), "layernorm case %d (n=%d)" % (i, x.size))
    erfc = np.vectorize(math.erfc)
    for i, c in enumerate(cases(rec, "gelu_tanh")):
        x = c["x"]
        # the textbook 0.5 x (1 + tanh u), written as x sigmoid(2u) so that it does not cancel
        u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
        with np.errstate(over="ignore"):
            want = x / (1.0 + np.exp(-2.0 * u))
        check(np.allclose(want[x > -3], (0.5 * x * (1.0 + np.tanh(u)))[x > -3], rtol=1e-12, atol=0),
              "gelu tanh case %d: the sigmoid form equals the textbook one" % i)
        check(rel_ok(c["out"], want, 1e-6, 1e-44), "gelu tanh case %d (n=%d)" % (i, x.size))
    for i, c in enumerate(cases(rec, "gelu_erf")):
        x = c["x"]
        want = 0.5 * x * erfc(-x / math.sqrt(2.0))
        check(rel_ok(c["out"], want, 1e-6, 1e-44), "gelu erf case %d (n=%d)" % (i, x.size))


def test_kv_store(rec):
    c = cases(rec, "kv_store")[0]
    x = c["x"].astype(np.float32)
    with np.errstate(over="ignore"):
        f16 = x.astype(np.float16).view(np.uint16)
    check(np.array_equal(c["f16_bits"].astype(np.uint16), f16), "fp16 store vs numpy float16")
    bits = c["bf16_bits"].astype(np.uint32)
    as_f = lambda b: (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    got = as_f(bits)
    lo = as_f((x.view(np.uint32) >> 16))                # truncation toward zero
    hi = as_f((x.view(np.uint32) >> 16) + 1)            # next away from zero
    xd = x.astype(np.float64)
    dlo, dhi, dgot = np.abs(xd - lo), np.abs(xd - hi), np.abs(xd - got)
    nearest = dgot <= np.minimum(dlo, dhi)
    tie = dlo == dhi
    even = (bits & 1) == 0
    check(bool(np.all(nearest & (~tie | even))), "bf16 store is not round-to-nearest-even")


def gamma(n):
    return n * U / (1 - n * U)


def test_attention(rec):
    for i, c in enumerate(cases(rec, "attention")):
        q, k, v, got = c["q"], c["k"], c["v"], c["out"]
        n_tokens, nh, hd = q.shape
        group, head0, kv_head0 = (int(c[f][0]) for f in ("group", "head0", "kv_head0"))
        rows = k.shape[0]
        mask = c.get("mask")
        scale = 1.0 / np.sqrt(hd)
        ok = True
        for t in range(n_tokens):
            vis = mask[t] != 0 if mask is not None else np.arange(rows) <= rows - n_tokens + t
            for h in range(nh):
                g = (head0 + h) // group - kv_head0  # global head head0 + h, cache from kv_head0
                K = k[vis, g * hd:(g + 1) * hd]
                V = v[vis, g * hd:(g + 1) * hd]
                if K.shape[0] == 0:
                    ok &= bool(np.all(got[t, h] == 0))
                    continue
                s = K @ q[t, h] * scale
                p = np.exp(s - s.max())
                p /= p.sum()
                want = p @ V
                smax = np.max(np.abs(K * q[t, h]).sum(axis=1) * scale)
                tol = (4 * gamma(hd + 4) * smax + gamma(4 * K.shape[0] + 32)) * (p @ np.abs(V)) + 1e-30
                ok &= bool(np.all(np.abs(got[t, h] - want) <= tol))
        kind = "masked" if mask is not None else "causal"
        check(ok, "attention case %d (%d heads from %d, group %d, %s)" % (i, nh, head0, group, kind))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ops.bin")
        subprocess.run([sys.argv[1], path], check=True)
        rec = load(path)
    test_rmsnorm(rec)
    test_rope(rec)
    test_rope_kv(rec)
    test_rope_freqs(rec)
    test_softmax_silu(rec)
    test_layernorm_gelu(rec)
    test_kv_store(rec)
    test_attention(rec)
    print("%d passed, %d failed" % (checks - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
