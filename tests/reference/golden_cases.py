"""The golden matrix: model configs x file formats, and the fixture that writes them.

Each case is one model file plus what the reference computed from the exact values stored in
it: logits at every prompt position and N_NEW greedy ids. Seeds are fixed and were chosen so
that, in every case, no greedy step is near a tie (top-2 gap >= MIN_GAP of max |logit|) and no
generated id is a special token (<unk>, BOS, EOS: whether generation stops there is not part
of the contract). The fixture re-checks both, so a mismatch in the ids is never legitimate.
"""
import json
import os

import numpy as np

import gguf_write
import llama2c_io
import safetensors_write
from llama_model import LlamaConfig, random_model
from reference import Reference, top2_gap

N_NEW = 32
PROMPT_LEN = 12
MIN_GAP = 1e-3
SPECIAL_IDS = (0, 1, 2)

# name -> (config, seed). Input dims of every matrix (dim, n_heads*head_dim, hidden) are
# multiples of 32 so the block formats apply; in KQ_CONFIGS, multiples of 256 for the
# K-quants' super-blocks.
CONFIGS = {
    # GQA 4:1, untied output, theta 1e4, vocab not a multiple of 64
    "gqa4-untied": (LlamaConfig(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=1,
                                vocab_size=333, context_length=128), 3),
    # MHA, tied output, 3 layers
    "mha-tied": (LlamaConfig(dim=64, hidden_dim=96, n_layers=3, n_heads=4, n_kv_heads=4,
                             vocab_size=300, context_length=160, tied=True), 7),
    # head_dim 32 != dim/heads 24, GQA 2:1, tied, theta 5e5
    "hd32-tied-theta5e5": (LlamaConfig(dim=96, hidden_dim=192, n_layers=2, n_heads=4,
                                       n_kv_heads=2, vocab_size=333, context_length=128,
                                       head_dim=32, rope_theta=500000.0, tied=True), 10),
    # head_dim 32 != dim/heads 16, GQA 4:1, untied, theta 5e5
    "hd32-untied-theta5e5": (LlamaConfig(dim=128, hidden_dim=224, n_layers=2, n_heads=8,
                                         n_kv_heads=2, vocab_size=333, context_length=256,
                                         head_dim=32, rope_theta=500000.0), 7),
    # head_dim 64 != dim/heads 16, GQA 4:1, untied; 4 KV heads and FFN 1024 so that 2..4
    # ranks can split it on 256-value boundaries
    "kq-hd64-untied": (LlamaConfig(dim=256, hidden_dim=1024, n_layers=2, n_heads=16,
                                   n_kv_heads=4, vocab_size=333, context_length=128,
                                   head_dim=64), 25),
}
KQ_CONFIGS = ("kq-hd64-untied",)

# RoPE scaling (docs/formats.md): head_dim 32, an original context of 64 stretched 4x to 256,
# prompts of ROPE_PROMPT_LEN tokens so that the logits checked and the greedy steps lie beyond
# the original context. Llama 3 goes into GGUF as llama.cpp's converter writes it (the
# rope_freqs tensor), linear and YaRN as llama.rope.scaling.* keys.
_ROPE_BASE = LlamaConfig(dim=64, hidden_dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
                         context_length=256, head_dim=32)
ROPE_SCALINGS = {
    "rope-linear-f4": ({"rope_type": "linear", "factor": 4.0}, 7),
    "rope-llama3-f4": ({"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64}, 5),
    "rope-yarn-f4": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, 5),
}
for _name, (_rs, _seed) in ROPE_SCALINGS.items():
    CONFIGS[_name] = (_ROPE_BASE.with_(rope_scaling=_rs), _seed)
ROPE_CONFIGS = tuple(ROPE_SCALINGS)
ROPE_PROMPT_LEN = 100

# "As stored" runs (no --quant) of the K-quant files: the default packing (Q4_K losslessly as
# W4 g32 asymmetric, Q6_K converted to W8 g32 by round to nearest), both with int8 activations
# (A8), against the reference on the exact stored values. Tolerances (of max|logit|), measured
# on kq-hd64-untied over seeds 20..31 and on the other configs' Q4_0/Q4_1/Q8_0 files, which
# are also packed losslessly:
#   A8 alone moves logits by 1.7e-2..3.2e-2 (Q4_K 1.7e-2..2.2e-2): 4e-2 for Q4_K.
#   Q6_K's conversion alone (the reference on the converted weights; 0.5-0.7% relative RMS
#   weight error, docs/formats.md) moves them by 1.8e-2..2.2e-2 with every matrix in Q6_K, 1.0e-2..
#   1.3e-2 in Q4_K_M: 3e-2 more where there are Q6_K tensors. Measured together: 2.3e-2..
#   2.9e-2 (Q6_K), 1.8e-2..2.6e-2 (Q4_K_M).
# Greedy ids are not compared: shifts this size exceed the random models' top-2 gaps. The
# exact values are checked by the same files at --quant f32 (REL_TOL of run_golden.py), the
# packing bit for bit by tests/kernels/test_kquant.py.
STORED_TOL = {"Q4_K": 4e-2, "Q6_K": 7e-2, "Q4_K_M": 7e-2}

# group -> list of (format label, writer kind, options). Groups become ctest tests.
GROUPS = {
    "gguf_v3_float": [(f"gguf-v3-{d.lower()}", "gguf", {"dtype": d, "version": 3})
                      for d in ("F32", "F16", "BF16")],
    "gguf_v3_quant": [(f"gguf-v3-{d.lower()}", "gguf", {"dtype": d, "version": 3})
                      for d in ("Q8_0", "Q4_0", "Q4_1")],
    "gguf_v2": [(f"gguf-v2-{d.lower()}", "gguf", {"dtype": d, "version": 2})
                for d in ("F32", "Q8_0")],
    "hf": [(f"hf-{d.lower()}", "hf", {"dtype": d, "shards": 1}) for d in ("F32", "F16", "BF16")],
    "hf_sharded": [(f"hf-{d.lower()}-2shards", "hf", {"dtype": d, "shards": 2})
                   for d in ("F32", "F16", "BF16")],
    "llama2c": [("llama2c", "llama2c", {})],
    "gguf_v3_kquant": [(f"gguf-v3-{d.lower()}", "gguf",
                        {"dtype": d, "version": 3, "stored_tol": STORED_TOL[d]})
                       for d in ("Q4_K", "Q6_K", "Q4_K_M")],
}
GROUPS["rope_scaling"] = [("gguf-v3-f32", "gguf", {"dtype": "F32", "version": 3}),
                          ("hf-f32", "hf", {"dtype": "F32", "shards": 1})]
# The groups that run on KQ_CONFIGS (ROPE_CONFIGS), and only there (the others keep their
# smaller models).
KQ_GROUPS = ("gguf_v3_kquant",)
ROPE_GROUPS = ("rope_scaling",)


def write_model(kind, opts, path, cfg, weights):
    """Writes one file/directory; returns the weights a reader sees (HF convention)."""
    if kind == "gguf":
        return gguf_write.write_llama(path, cfg, weights, opts["dtype"], opts["version"])[0]
    if kind == "hf":
        return safetensors_write.write_hf(path, cfg, weights, opts["dtype"], opts["shards"])
    if kind == "llama2c":
        return llama2c_io.write(path, cfg, weights)
    raise ValueError(kind)


def model_path(out_dir, label, cfg_name, kind):
    ext = {"gguf": ".gguf", "hf": "", "llama2c": ".bin"}[kind]
    return os.path.join(out_dir, f"{cfg_name}.{label}{ext}")


def prompt_for(cfg, seed):
    rng = np.random.default_rng(1000 + seed)
    n = ROPE_PROMPT_LEN if getattr(cfg, "rope_scaling", None) else PROMPT_LEN
    return [1] + [int(t) for t in rng.integers(3, cfg.vocab_size, n - 1)]


def expressible(group, kind, cfg_name, cfg):
    if (group in KQ_GROUPS) != (cfg_name in KQ_CONFIGS):
        return False
    if (group in ROPE_GROUPS) != (cfg_name in ROPE_CONFIGS):
        return False
    if kind != "llama2c":
        return True
    try:
        llama2c_io.check_expressible(cfg)
        return True
    except ValueError:
        return False


def build(out_dir, groups=None, configs=None):
    """Writes every case under out_dir and its manifest.json; returns the manifest. A case
    runs with --quant f32 and must match the reference within run_golden.REL_TOL, greedy ids
    included, unless it says otherwise ("quant": null for as stored, "rel_tol",
    "compare_ids")."""
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for cfg_name, (cfg, seed) in CONFIGS.items():
        if configs and cfg_name not in configs:
            continue
        weights = random_model(cfg, seed)
        prompt = prompt_for(cfg, seed)
        for group, formats in GROUPS.items():
            if groups and group not in groups:
                continue
            for label, kind, opts in formats:
                if not expressible(group, kind, cfg_name, cfg):
                    continue
                path = model_path(out_dir, label, cfg_name, kind)
                seen = write_model(kind, opts, path, cfg, weights)
                logits, ids, step_logits = Reference(cfg, seen).generate(prompt, N_NEW)
                name = f"{label}/{cfg_name}"
                logits_path = os.path.join(out_dir, f"{cfg_name}.{label}.logits.npy")
                np.save(logits_path, logits.astype(np.float64))
                case = {
                    "name": name, "group": group, "model": path, "prompt": prompt,
                    "n": N_NEW, "ids": ids, "logits": logits_path,
                    "vocab": cfg.vocab_size,
                    "gaps": [float(f"{g:.3g}") for g in top2_gap(step_logits)],
                    "min_gap": float(top2_gap(step_logits).min()),
                }
                cases.append(case)
                if "stored_tol" in opts:
                    cases.append({**case, "name": f"{name} [as stored]", "quant": None,
                                  "rel_tol": opts["stored_tol"], "compare_ids": False})
    manifest = {"cases": cases}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
