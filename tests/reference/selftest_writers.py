#!/usr/bin/python3
"""Self-test of the reference side (no C involved): every writer's file, read back by the
independent readers in readback.py / llama2c_io.py, must give the weights the writer says a
reader sees; the RoPE permutation must invert; the block decoders must agree with a scalar
byte-by-byte decoding; and the reference must be causal and batch/step consistent."""
import os
import struct
import sys
import tempfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import dtypes  # noqa: E402
import golden_cases  # noqa: E402
import gptq_write  # noqa: E402
import llama2c_io  # noqa: E402
import readback  # noqa: E402
from llama_model import random_model, rope_deinterleave, rope_interleave  # noqa: E402
from reference import Reference  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def fp16(b, o):
    return float(np.frombuffer(b, "<f2", 1, o)[0])


def scalar_decode(buf, dtype, n):
    out = []
    if dtype == "Q8_0":
        for blk in range(n // 32):
            o = blk * 34
            d = fp16(buf, o)
            out += [d * q for q in struct.unpack_from("<32b", buf, o + 2)]
    elif dtype in ("Q4_0", "Q4_1"):
        size = 18 if dtype == "Q4_0" else 20
        for blk in range(n // 32):
            o = blk * size
            d = fp16(buf, o)
            m = fp16(buf, o + 2) if dtype == "Q4_1" else 0.0
            qs = buf[o + size - 16: o + size]
            nib = [qs[j] & 15 for j in range(16)] + [qs[j] >> 4 for j in range(16)]
            out += [d * (q - 8) if dtype == "Q4_0" else d * q + m for q in nib]
    elif dtype == "Q4_K":                   # ggml's dequantize_row_q4_K, one value at a time
        for blk in range(n // 256):
            o = blk * 144
            d, dmin = np.float32(fp16(buf, o)), np.float32(fp16(buf, o + 2))
            sb = buf[o + 4: o + 16]
            qs = buf[o + 16: o + 144]
            for j in range(8):
                if j < 4:
                    sc, m = sb[j] & 63, sb[j + 4] & 63
                else:
                    sc = (sb[j + 4] & 0x0F) | ((sb[j - 4] >> 6) << 4)
                    m = (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4)
                for l in range(32):
                    byte = qs[32 * (j // 2) + l]
                    q = byte >> 4 if j % 2 else byte & 0x0F
                    out.append(float(d * np.float32(sc) * np.float32(q) - dmin * np.float32(m)))
    elif dtype == "Q6_K":                   # ggml's dequantize_row_q6_K, one value at a time
        for blk in range(n // 256):
            o = blk * 210
            d = fp16(buf, o + 208)
            vals = [0.0] * 256
            for half in range(2):
                ql = buf[o + 64 * half: o + 64 * half + 64]
                qh = buf[o + 128 + 32 * half: o + 128 + 32 * half + 32]
                for l in range(32):
                    q = [(ql[l] & 15) | (((qh[l] >> 0) & 3) << 4),
                         (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                         (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                         (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)]
                    for k in range(4):
                        v = 128 * half + 32 * k + l
                        sc = struct.unpack_from("<b", buf, o + 192 + v // 16)[0]
                        vals[v] = d * sc * (q[k] - 32)
            out += vals
    return np.array(out)


def gptq_scalar_values(entries, n_out, n_in, zero_offset):
    """value[o][k] of a GPTQ layer decoded word by word and nibble by nibble from its bytes."""
    b = {name: (shape, data) for name, _, shape, data in entries}
    words = lambda suffix: struct.unpack(f"<{len(b[suffix][1]) // 4}i", b[suffix][1])  # noqa: E731
    (_, qzs), (_, sc) = b["p.qzeros"], b["p.scales"]
    qw, qz, g_idx = words("p.qweight"), words("p.qzeros"), words("p.g_idx")
    scales = struct.unpack(f"<{len(sc) // 2}e", sc)
    out = np.empty((n_out, n_in))
    for o in range(n_out):
        for k in range(n_in):
            g = g_idx[k]
            q = (qw[(k // 8) * n_out + o] >> (4 * (k % 8))) & 15
            z = ((qz[g * (n_out // 8) + o // 8] >> (4 * (o % 8))) & 15) + zero_offset
            out[o, k] = scales[g * n_out + o] * (q - z)
    return out


def check_gptq(rng):
    w = rng.standard_normal((16, 64))
    for group, act_order, sym, edge, fmt in ((32, True, False, True, "gptq"), (-1, False, True, False, "gptq"),
                                             (32, False, False, True, "gptq_v2"),
                                             (64, True, False, False, "gptq")):
        what = f"gptq g{group} act_order={act_order} sym={sym} edge zeros={edge} {fmt}"
        offset = 1 if fmt == "gptq" else 0
        ql = gptq_write.quantize(w, group, rng, act_order, sym, zero_min=offset, edge_zeros=edge)
        entries = gptq_write.linear_entries("p", ql, offset)
        check(np.array_equal(gptq_write.dequantize(ql), gptq_scalar_values(entries, 16, 64, offset)),
              f"{what}: packed bytes decode to the dequantized weights")
        gs = 64 if group == -1 else group
        check(np.all(np.bincount(ql.g_idx) == gs), f"{what}: {gs} inputs per group")
        check((act_order and gs < 64) != np.array_equal(ql.g_idx, np.arange(64) // gs), f"{what}: g_idx order")
        check(ql.zeros.min() >= offset and ql.zeros.max() <= 15, f"{what}: zero points in range")
        if edge:
            check({offset, 15} <= set(ql.zeros.ravel()), f"{what}: both extreme zero points used")
        else:
            err = np.abs(gptq_write.dequantize(ql) - w).max() / np.abs(w).max()
            check(err < 0.1, f"{what}: quantization error {err:.3f}")


def main():
    rng = np.random.default_rng(0)
    check_gptq(rng)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    x[1, 5] = 0.0
    x[2, :32] = 0.0                         # an all-zero block
    for dt in ("Q8_0", "Q4_0", "Q4_1"):
        buf = dtypes.encode(x, dt)
        check(len(buf) == {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[dt] * 9, f"{dt} size")
        v = dtypes.decode(buf, dt, x.shape)
        check(np.array_equal(v.ravel(), scalar_decode(buf, dt, x.size)), f"{dt} decode")
        err = np.abs(v - x).max() / np.abs(x).max()
        check(err < {"Q8_0": 0.01, "Q4_0": 0.15, "Q4_1": 0.1}[dt], f"{dt} error {err}")
    xk = rng.standard_normal((3, 512)).astype(np.float32)
    xk[1, 7] = 0.0
    xk[2, :256] = 0.0                       # an all-zero super-block
    xk[0, 256:] *= 40.0                     # super-blocks of different magnitudes
    for dt, size, tol in (("Q4_K", 144, 0.15), ("Q6_K", 210, 0.03)):
        buf = dtypes.encode(xk, dt)
        check(len(buf) == size * 6, f"{dt} size")
        v = dtypes.decode(buf, dt, xk.shape)
        check(np.array_equal(v.ravel(), scalar_decode(buf, dt, xk.size)), f"{dt} decode")
        err = max(np.abs(v[r] - xk[r]).max() / max(np.abs(xk[r]).max(), 1e-30) for r in range(3))
        check(err < tol, f"{dt} error {err}")
    bf = dtypes.f32_to_bf16_bits(np.array([1.0, 1.00390625, 1.01171875, -2.5], np.float32))
    check(list(bf) == [0x3F80, 0x3F80, 0x3F82, 0xC020], f"bf16 rounding {bf}")

    w = rng.standard_normal((4 * 16, 8))
    check(np.array_equal(rope_deinterleave(rope_interleave(w, 4), 4), w), "rope permutation")
    check(np.array_equal(rope_interleave(w, 4)[1], w[8]), "rope permutation: row 1 = row hd/2")

    tmp = tempfile.mkdtemp()
    for cfg_name, (cfg, seed) in golden_cases.CONFIGS.items():
        weights = random_model(cfg, seed)
        prompt = golden_cases.prompt_for(cfg, seed)
        # batch == step by step, and a later token does not change earlier logits
        ref = Reference(cfg, weights)
        ref.reset()
        batch = ref.forward(prompt)
        ref.reset()
        steps = np.concatenate([ref.forward([t]) for t in prompt])
        check(np.abs(batch - steps).max() < 1e-9, f"{cfg_name}: batch vs step logits")
        ref.reset()
        check(np.abs(ref.forward(prompt[:-1]) - batch[:-1]).max() < 1e-12, f"{cfg_name}: causal")
        for group, formats in golden_cases.GROUPS.items():
            for label, kind, opts in formats:
                if not golden_cases.expressible(group, kind, cfg_name, cfg):
                    continue
                path = golden_cases.model_path(tmp, label, cfg_name, kind)
                seen = golden_cases.write_model(kind, opts, path, cfg, weights)
                if kind == "gguf":
                    version = readback.read_gguf(path)[0]
                    check(version == opts["version"], f"{label}: version {version}")
                    rcfg, rw = readback.gguf_llama_model(path)
                elif kind == "hf":
                    rcfg, rw = readback.hf_model(path)
                else:
                    rcfg, rw = llama2c_io.read(path)
                name = f"{label}/{cfg_name}"
                # GGUF stores eps as float32: 1e-5 comes back as 9.9999997e-06; readback does
                # not parse GGUF's RoPE scaling (the golden tests check it through the engine)
                scaling = cfg.rope_scaling if kind == "gguf" else rcfg.rope_scaling
                same = rcfg.with_(norm_eps=cfg.norm_eps, rope_scaling=scaling) == cfg and \
                    np.float32(rcfg.norm_eps) == np.float32(cfg.norm_eps)
                check(same, f"{name}: config read back {rcfg} != {cfg}")
                check(set(rw) == set(seen), f"{name}: tensor names")
                for k in seen:
                    if not np.array_equal(rw[k], seen[k]):
                        check(False, f"{name}: {k} read back differs")
                        break
    print(f"{len(failures)} failure(s)" if failures
          else "PASS: writers, readers and reference agree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
