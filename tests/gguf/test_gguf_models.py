#!/usr/bin/python3
"""Tiny Llama models stored in GGUF Q5_0, Q5_1, IQ4_NL, Q5_K, Q3_K and Q2_K, run by
`infernode generate`, against the same model in F32.

The model: golden_cases' kq-hd64-untied (every matrix's rows a multiple of 256) with random
weights; every 2-D tensor (embedding and output head included) is encoded in the type by the
NumPy reference (ggml_blocks.py), and "the same model in F32" holds the values those bytes
decode to. Per type:
  - with --quant f32, the logits of the prompt equal the F32 file's within 1e-4 of max|logit|
    (the golden tests' tolerance): the loader reads every value as ggml's formula gives it;
  - as stored, within TOL of max|logit|: the documented tolerance, int8 activations for the
    types packed losslessly into W8 g32 (as Q4_K's, 4e-2) and int8 activations plus the
    conversion to W8 g32 for the others (as Q6_K's, 7e-2); the load message names the
    packing ("q5_k -> w8a8-g32").
Refusals (exit 1 with a message, never a crash): tensors of types infernode does not read
(IQ2_XXS, IQ4_XS, TQ2_0), naming the tensor and the type; a Q5_K tensor whose rows are not a
multiple of 256, naming it and 256; Q3_K and Q5_0 files cut inside a tensor, naming it.

usage: test_gguf_models.py INFERNODE"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402

import ggml_blocks as gb  # noqa: E402
import gguf_write  # noqa: E402
from golden_cases import CONFIGS, prompt_for  # noqa: E402
from llama_model import random_model  # noqa: E402

INFERNODE = sys.argv[1]
CONFIG = "kq-hd64-untied"
REL_TOL = 1e-4
# Measured (max |logit - F32 logit| / max|F32 logit|) on this model over seeds 25..36: the
# lossless types 1.6e-2..2.4e-2 (int8 activations alone), the converted ones 2.1e-2..4.0e-2.
TOL = {"Q5_0": 4e-2, "IQ4_NL": 4e-2, "Q3_K": 4e-2, "Q5_1": 7e-2, "Q5_K": 7e-2, "Q2_K": 7e-2}
TIMEOUT = 300

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(model, prompt, out, quant):
    cmd = [INFERNODE, "generate", "-m", model, "--prompt-ids", ",".join(map(str, prompt)), "-n", "1",
           "--temp", "0", "--ids", "--kv-type", "f32", "--logits-out", out] + (["--quant", quant] if quant else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def logits(model, prompt, work, quant):
    """(logits [n_prompt][vocab] or None, stderr)."""
    out = os.path.join(work, "logits.f32")
    if os.path.exists(out):
        os.remove(out)
    p = run(model, prompt, out, quant)
    if p.returncode != 0 or not os.path.exists(out):
        return None, p.stderr.strip()
    return np.fromfile(out, "<f4").reshape(len(prompt), -1).astype(np.float64), p.stderr


def typed_tensors(tensors, dtype):
    """(tensors with every 2-D one in dtype, the same with those values in F32)."""
    typed, f32 = [], []
    for t in tensors:
        if len(t.ne) != 2:
            typed.append(t)
            f32.append(t)
            continue
        blocks = gb.encode(np.frombuffer(t.data, "<f4").reshape(t.ne[1], t.ne[0]), dtype)
        typed.append(gguf_write.Tensor(t.name, t.ne, gb.GGML_TYPE[dtype], blocks))
        f32.append(gguf_write.Tensor(t.name, t.ne, 0, gb.decode(blocks, dtype).astype("<f4").tobytes()))
    return typed, f32


def test_models(work):
    cfg, seed = CONFIGS[CONFIG]
    tensors, _ = gguf_write.llama_tensors(cfg, random_model(cfg, seed), "F32")
    md = gguf_write.llama_metadata(cfg)
    prompt = prompt_for(cfg, seed)
    for dtype in TOL:
        typed, f32 = typed_tensors(tensors, dtype)
        typed_path, f32_path = (os.path.join(work, f"{CONFIG}.{dtype.lower()}{s}.gguf") for s in ("", "-f32"))
        gguf_write.write_gguf(typed_path, md, typed)
        gguf_write.write_gguf(f32_path, md, f32)
        ref, err = logits(f32_path, prompt, work, "f32")
        if ref is None:
            check(False, f"{dtype}: the F32 model failed: {err}")
            continue
        scale = np.abs(ref).max()
        got, err = logits(typed_path, prompt, work, "f32")
        if got is None:
            check(False, f"{dtype} --quant f32: {err}")
            continue
        rel_f32 = np.abs(got - ref).max() / scale
        check(rel_f32 <= REL_TOL, f"{dtype} --quant f32: logits {rel_f32:.2e} x max|logit| from the F32 "
                                  f"model's (tolerance {REL_TOL:.0e})")
        got, err = logits(typed_path, prompt, work, None)
        if got is None:
            check(False, f"{dtype} as stored: {err}")
            continue
        rel = np.abs(got - ref).max() / scale
        check(rel <= TOL[dtype], f"{dtype} as stored: logits {rel:.2e} x max|logit| from the F32 model's "
                                 f"(documented tolerance {TOL[dtype]:.0e})")
        packing = f"{dtype.lower()} -> w8a8-g32"
        check(packing in err, f"{dtype} as stored: the load message does not say '{packing}': {err}")
        print(f"{dtype:6s} --quant f32: {rel_f32:.1e} x max|logit| from F32; as stored ({packing}): "
              f"{rel:.1e} (tolerance {TOL[dtype]:.0e})")


def refused(path, words, what):
    p = run(path, [1, 5, 9], os.path.join(os.path.dirname(path), "refused.f32"), None)
    msg = p.stderr.strip().splitlines()
    msg = next((line for line in msg if "error" in line), p.stderr.strip())
    ok = p.returncode == 1 and all(w in msg for w in words)
    check(ok, f"{what}: exit {p.returncode}, expected 1 with a message naming {words}: {msg}")
    if ok:
        print(f"refused, {what}: {msg}")


def test_refusals(work):
    cfg, seed = CONFIGS[CONFIG]
    tensors, _ = gguf_write.llama_tensors(cfg, random_model(cfg, seed), "F32")
    md = gguf_write.llama_metadata(cfg)
    name = "blk.0.ffn_gate.weight"
    for type_name, type_id in (("IQ2_XXS", 16), ("IQ4_XS", 23), ("TQ2_0", 35)):
        path = os.path.join(work, f"type-{type_name}.gguf")
        gguf_write.write_gguf(path, md, [gguf_write.Tensor(t.name, t.ne, type_id, t.data) if t.name == name else t
                                         for t in tensors])
        refused(path, [name, type_name], f"a tensor of type {type_name}")
    # rows of 64 values in a Q5_K tensor, with the bytes of one super-block per row
    vname = "blk.0.attn_v.weight"
    path = os.path.join(work, "q5_k-rows-of-64.gguf")
    gguf_write.write_gguf(path, md, [gguf_write.Tensor(t.name, [64, t.ne[1]], gb.GGML_TYPE["Q5_K"], b"\0" * (176 * t.ne[1]))
                                     if t.name == vname else t for t in tensors])
    refused(path, [vname, "256"], "Q5_K rows of 64 values")
    for dtype in ("Q3_K", "Q5_0"):
        typed, _ = typed_tensors(tensors, dtype)
        path = os.path.join(work, f"{dtype.lower()}-truncated.gguf")
        lay = gguf_write.write_gguf(path, md, typed)
        with open(path, "r+b") as f:
            f.truncate(lay.tensor_offsets["output.weight"] + 1000)
        refused(path, ["output.weight"], f"a {dtype} file cut inside its last tensor")


def main():
    with tempfile.TemporaryDirectory() as work:
        test_models(work)
        test_refusals(work)
    print(f"{len(failures)} failure(s)" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
