#!/usr/bin/python3
"""RoPE scaling the engine does not implement is refused by both loaders, naming the key and its
value (docs/formats.md, "RoPE scaling"): `infernode generate` exits 1 (not a signal) with the key
in its error. Tiny models are written by the reference writers into a temporary directory.

usage: run_rope_refusals.py --infernode BIN"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import gguf_write  # noqa: E402
import safetensors_write  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402

CFG = LlamaConfig(dim=64, hidden_dim=96, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=100, context_length=256,
                  head_dim=32)
S, F, U = gguf_write.STRING, gguf_write.FLOAT32, gguf_write.UINT32

# (name, GGUF keys added, expected words of the message)
GGUF_CASES = [
    ("gguf dynamic", [("llama.rope.scaling.type", S, "dynamic"), ("llama.rope.scaling.factor", F, 2.0)],
     ["llama.rope.scaling.type", '"dynamic"']),
    ("gguf unknown key", [("llama.rope.scaling.type", S, "linear"), ("llama.rope.scaling.factor", F, 2.0),
                          ("llama.rope.scaling.short_factor", F, 1.5)],
     ["llama.rope.scaling.short_factor", "1.5"]),
    ("gguf yarn log multiplier", [("llama.rope.scaling.type", S, "yarn"), ("llama.rope.scaling.factor", F, 4.0),
                                  ("llama.rope.scaling.yarn_log_multiplier", F, 0.1)],
     ["llama.rope.scaling.yarn_log_multiplier", "0.1"]),
    ("gguf factor without type none", [("llama.rope.scaling.type", S, "none"), ("llama.rope.scaling.factor", F, 2.0)],
     ["llama.rope.scaling.factor", "2"]),
]
# (name, rope_scaling, expected words)
HF_CASES = [
    ("hf longrope", {"rope_type": "longrope", "factor": 4.0, "short_factor": [1.0] * 16, "long_factor": [2.0] * 16,
                     "original_max_position_embeddings": 64}, ["rope_scaling.rope_type", '"longrope"']),
    ("hf dynamic", {"type": "dynamic", "factor": 2.0}, ["rope_scaling.type", '"dynamic"']),
    ("hf yarn factor disagrees", {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64},
     ["rope_scaling.original_max_position_embeddings", "64"]),
    ("hf yarn truncate false", {"rope_type": "yarn", "factor": 4.0, "truncate": False},
     ["rope_scaling.truncate"]),
]


def run(infernode, model, expect):
    p = subprocess.run([infernode, "generate", "-m", model, "--prompt-ids", "1,5,7", "-n", "2", "--ids"],
                       capture_output=True, text=True, timeout=120)
    missing = [w for w in expect if w not in p.stderr]
    if p.returncode <= 0 or p.returncode >= 128 or missing:
        return f"exit {p.returncode}, missing {missing} in: {p.stderr.strip()[-300:]}"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rope_refusals_")
    weights = random_model(CFG, 1)
    failures = 0
    for i, (name, keys, expect) in enumerate(GGUF_CASES):
        path = os.path.join(work, f"g{i}.gguf")
        tensors, _ = gguf_write.llama_tensors(CFG, weights, "F32")
        gguf_write.write_gguf(path, gguf_write.llama_metadata(CFG) + keys, tensors)
        err = run(a.infernode, path, expect)
        print(f"{'FAIL' if err else 'ok  '} {name}{': ' + err if err else ''}")
        failures += bool(err)
    for i, (name, scaling, expect) in enumerate(HF_CASES):
        path = os.path.join(work, f"hf{i}")
        safetensors_write.write_hf(path, CFG, weights, "F32", 1)
        cfg_path = os.path.join(path, "config.json")
        cfg = json.load(open(cfg_path))
        cfg["rope_scaling"] = scaling
        json.dump(cfg, open(cfg_path, "w"))
        err = run(a.infernode, path, expect)
        print(f"{'FAIL' if err else 'ok  '} {name}{': ' + err if err else ''}")
        failures += bool(err)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
