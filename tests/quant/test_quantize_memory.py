"""infernode quantize holds one layer at a time: the peak resident memory of a calibrating
quantization stays within what one layer and the calibration statistics need, not the model.

Writes an 8-layer F32 model (dim 1024, FFN 2816, 16 heads over 4 KV heads: 43 MiB per layer,
344 MiB of layers), quantizes it with gptq-w4-g128 and sq-w8a8 on 512 random calibration ids
in windows of 128, and reads each run's peak resident set (os.wait4's ru_maxrss: anonymous
memory and the file pages mapped in). A child's ru_maxrss also counts the resident set of the
process it was spawned from (Linux keeps the larger of the two at exec), so the model is
written by a child of this script and this one stays small. The bound, from the sizes here:

  3 x one layer      the layer packed for the calibration passes, the same layer read as fp32
                     for quantizing, and its pages of the file's mapping
  2 x one layer      what the allocator keeps of the layers freed before, for reuse: glibc
                     raises its mmap threshold to the sizes freed, so later matrices under
                     32 MiB come from its heaps, which it does not hand back at once
                     (measured: it levels off after 2 layers)
  GPTQ's float64     the four Hessians of a layer (3 x dim^2 + ffn^2), the copy that Q/K/V and
  work               gate/up but the last of each are quantized against (dim^2), and GPTQ's
                     float inverse factor (ffn^2 x 4 bytes); none for SmoothQuant
  residual streams   calibration tokens x dim x 4 bytes, and the calibration context's fp32
                     KV cache (8 layers x 128 positions x 256 x 2 x 4 bytes)
  64 MiB             the process: the executable, libc, OpenMP and OpenBLAS threads' stacks
                     and buffers, the token embedding, the writer

A quantizer that holds the whole model (every layer packed, and the whole file read through
its mapping) ends about 11 layers above that, ~500 MiB over the bound (measured with the
quantizer that did: 923 MiB for GPTQ, 764 MiB for SmoothQuant; this one: ~295 and ~200).

The quantized files are used too: each loads in infernode generate, whose logits of a prompt
stay close to the float model's (cosine per position), and generates tokens.

usage: test_quantize_memory.py --infernode BIN --work DIR
       test_quantize_memory.py --write-model PATH  (the child that writes the model)"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

from gguf_write import write_llama  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402

MIB = 1 << 20
CFG = LlamaConfig(dim=1024, hidden_dim=2816, n_layers=8, n_heads=16, n_kv_heads=4, vocab_size=512,
                  context_length=256)
CALIB_TOKENS, CALIB_CTX = 512, 128
SLACK_MIB = 64
PROMPT = [1, 17, 99, 250, 3, 480, 77, 12, 301, 5, 44, 200]
# per scheme: the smallest cosine between a prompt position's logits and the float model's
MIN_COSINE = {"gptq-w4-g128": 0.7, "sq-w8a8": 0.98}

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def layer_bytes(cfg):
    """One transformer layer's linear weights in F32 (the norms are noise)."""
    d, f = cfg.dim, cfg.hidden_dim
    return 4 * (2 * d * cfg.q_dim + 2 * d * cfg.kv_dim + 3 * d * f)


def bound_bytes(cfg, gptq):
    """The peak the module docstring derives."""
    d, f = cfg.dim, cfg.hidden_dim
    work = 8 * (3 * d * d + f * f) + 8 * d * d + 4 * f * f if gptq else 0
    streams = CALIB_TOKENS * d * 4 + cfg.n_layers * CALIB_CTX * cfg.kv_dim * 2 * 4
    return 5 * layer_bytes(cfg) + work + streams + SLACK_MIB * MIB


def run_measured(cmd):
    """Runs cmd; returns (exit code, stderr, its own peak resident set in bytes)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, err, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def prompt_logits(infernode, model, work, tag):
    """The logits of PROMPT [len][vocab] from infernode generate, and the generated ids."""
    path = os.path.join(work, f"logits-{tag}.bin")
    r = subprocess.run([infernode, "generate", "-m", model, "--prompt-ids", ",".join(map(str, PROMPT)), "-n", "8",
                        "--temp", "0", "--ignore-eos", "--ids", "--kv-type", "f32", "--logits-out", path, "-t", "2"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, r.stderr.strip()
    logits = np.fromfile(path, dtype="<f4").reshape(len(PROMPT), CFG.vocab_size)
    return logits, [int(t) for t in r.stdout.split()], ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode")
    ap.add_argument("--work")
    ap.add_argument("--write-model")
    a = ap.parse_args()
    if a.write_model:
        write_llama(a.write_model, CFG, random_model(CFG, 5), "F32")
        return 0
    if not a.infernode or not a.work:
        ap.error("--infernode and --work are required")
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "model-f32.gguf")
    ids = os.path.join(a.work, "calib.ids")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--write-model", model], check=True)
    rng = np.random.default_rng(9)
    with open(ids, "w") as f:
        f.write(" ".join(str(t) for t in rng.integers(3, CFG.vocab_size, CALIB_TOKENS)))
    print(f"model: {os.path.getsize(model) / MIB:.0f} MiB, {layer_bytes(CFG) / MIB:.1f} MiB per layer", flush=True)

    ref, _, err = prompt_logits(a.infernode, model, a.work, "f32")
    check(ref is not None, f"the float model generates{': ' + err if err else ''}")
    for scheme in ("gptq-w4-g128", "sq-w8a8"):
        out = os.path.join(a.work, f"{scheme}.gguf")
        rc, err, peak = run_measured([a.infernode, "quantize", "-m", model, "-o", out, "--scheme", scheme,
                                      "--calib-ids", ids, "--calib-ctx", str(CALIB_CTX), "-t", "2"])
        check(rc == 0, f"{scheme}: quantize runs{'' if rc == 0 else ': ' + err.strip()[-500:]}")
        bound = bound_bytes(CFG, scheme.startswith("gptq"))
        check(peak <= bound, f"{scheme}: peak resident {peak / MIB:.0f} MiB <= {bound / MIB:.0f} MiB "
                             f"(the model's layers: {CFG.n_layers * layer_bytes(CFG) / MIB:.0f} MiB)")
        if rc != 0:
            continue
        got, gen, err = prompt_logits(a.infernode, out, a.work, scheme)
        check(got is not None and len(gen) == 8 and all(0 <= t < CFG.vocab_size for t in gen),
              f"{scheme}: the quantized file loads and generates 8 tokens{': ' + err if err else ''}")
        if got is not None and ref is not None:
            cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
            check(cos.min() >= MIN_COSINE[scheme],
                  f"{scheme}: logits follow the float model's (cosine min {cos.min():.4f} >= {MIN_COSINE[scheme]})")
        os.remove(out)
    os.remove(model)
    print(f"{'FAIL' if failures else 'ok'}: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
