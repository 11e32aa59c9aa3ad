"""The GPT-BigCode (StarCoder) golden cases and the fixture that writes them.

Each case is one model file plus what bigcode_reference computed from the exact values stored
in it: logits at every prompt position and N_NEW greedy ids, in golden_cases' manifest format
(so tests/golden/run_golden.py runs them). Prompt, length and the acceptance rules are the
Llama golden cases': seeds were chosen so that in every case no greedy step is near a tie
(top-2 gap >= MIN_GAP of max |logit|) and no generated id is a special one; the fixture
re-checks both.

Shapes let 2 and 3 ranks split every model: 6 heads of 16 (3 ranks: 2 heads, 32 inputs of
attn_output each), FFN 384 (128 per rank), every matrix input a multiple of 32 for the block
formats. Quantized files run at --quant f32, which computes with the stored values exactly.
"""
import json
import os

import numpy as np

import bigcode_write
from bigcode_model import BigCodeConfig, random_model
from bigcode_reference import BigCodeReference
from golden_cases import MIN_GAP, N_NEW, SPECIAL_IDS, prompt_for
from reference import top2_gap

GROUP = "bigcode"

# name -> (config, seed)
CONFIGS = {
    # multi-query (one KV head), untied LM head, 2 layers
    "mqa-untied": (BigCodeConfig(dim=96, ffn_dim=384, n_layers=2, n_heads=6, n_kv_heads=1,
                                 vocab_size=333), 12),
    # multi-query, LM head tied to the token embedding, 3 layers, eps 1e-6
    "mqa-tied": (BigCodeConfig(dim=96, ffn_dim=384, n_layers=3, n_heads=6, n_kv_heads=1,
                               vocab_size=301, norm_eps=1e-6, tied=True), 3),
    # two KV heads (3 query heads each) in the fused QKV: GGUF only
    "gqa2-untied": (BigCodeConfig(dim=96, ffn_dim=384, n_layers=2, n_heads=6, n_kv_heads=2,
                                  vocab_size=347), 6),
    # multi-query with the exact (erf) GELU: HF activation_function "gelu"
    "mqa-erf": (BigCodeConfig(dim=96, ffn_dim=384, n_layers=2, n_heads=6, n_kv_heads=1,
                              vocab_size=333, gelu="none"), 1),
    # plain weights (no GELU-tail shaping) for the quantized compute paths: QUANT_RUNS
    "mqa-plain": (BigCodeConfig(dim=96, ffn_dim=384, n_layers=2, n_heads=6, n_kv_heads=1,
                                vocab_size=333, plain=True), 3),
}

# The kernels' quantized paths on the plain model: the prompt's logits within these fractions
# of max|logit| of the reference on the file's exact values (ids not compared: they may part at
# a near-tie). Q8_0 and Q4_0 run as stored ("stored": W8A8 g32, W4A8 g32, their weights
# unchanged) and Q4_0 also as W4A16, so those runs measure the kernels' activation rounding
# alone; from F32, bf16 and W8A8 per channel round the weights too. Tolerances are about twice
# the largest error measured over seeds 1..12 (in the comments); the Llama golden models'
# (golden_cases.STORED_TOL) are of the same size.
F32_RUNS = {"bf16": 1.5e-2, "f16": 1.5e-3, "w8a8": 6e-2}  # 4.3e-3..6.9e-3, 4.0e-4..6.3e-4, 1.6e-2..2.9e-2
Q8_RUNS = {"stored": 3e-2}                              # 9.0e-3..1.6e-2
Q4_RUNS = {"stored": 3e-2, "w4a16-g32": 1.5e-2}     # 1.1e-2..1.6e-2, 4.9e-3..8.2e-3

# (format label, config, writer kind, writer options)
CASES = [
    ("gguf-f32", "mqa-untied", "gguf", {"dtype": "F32"}),
    ("gguf-q8_0", "mqa-untied", "gguf", {"dtype": "Q8_0"}),
    ("gguf-q4_0", "mqa-untied", "gguf", {"dtype": "Q4_0"}),
    ("gguf-f16", "mqa-tied", "gguf", {"dtype": "F16"}),
    ("gguf-f32", "gqa2-untied", "gguf", {"dtype": "F32"}),
    ("gguf-bf16", "gqa2-untied", "gguf", {"dtype": "BF16"}),
    ("hf-f32", "mqa-untied", "hf", {"dtype": "F32"}),
    ("hf-bf16-2shards-gelu_new", "mqa-untied", "hf",
     {"dtype": "BF16", "shards": 2, "activation": "gelu_new"}),
    ("hf-f16-ninner_null", "mqa-tied", "hf", {"dtype": "F16", "n_inner_null": True}),
    ("hf-f32-gelu_fast", "mqa-tied", "hf", {"dtype": "F32", "activation": "gelu_fast"}),
    ("hf-f32", "mqa-erf", "hf", {"dtype": "F32"}),
    ("gguf-f32", "mqa-plain", "gguf", {"dtype": "F32", "quant_runs": F32_RUNS}),
    ("gguf-q8_0", "mqa-plain", "gguf", {"dtype": "Q8_0", "quant_runs": Q8_RUNS}),
    ("gguf-q4_0", "mqa-plain", "gguf", {"dtype": "Q4_0", "quant_runs": Q4_RUNS}),
]


def write_model(kind, opts, path, cfg, weights):
    """Writes one file/directory; returns the weights a reader sees (HF names)."""
    if kind == "gguf":
        return bigcode_write.write_starcoder(path, cfg, weights, opts["dtype"])[0]
    if kind == "hf":
        return bigcode_write.write_hf(path, cfg, weights, opts["dtype"], opts.get("shards", 1),
                                      opts.get("activation"), opts.get("n_inner_null", False))
    raise ValueError(kind)


def model_path(out_dir, label, cfg_name, kind):
    return os.path.join(out_dir, f"{cfg_name}.{label}{'.gguf' if kind == 'gguf' else ''}")


def case_name(label, cfg_name):
    return f"{label}/{cfg_name}"


def build(out_dir, configs=None, seeds=None):
    """Writes every case under out_dir and its manifest.json; returns the manifest.
    seeds: {config name: seed} overriding CONFIGS' (for choosing seeds)."""
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for label, cfg_name, kind, opts in CASES:
        if configs and cfg_name not in configs:
            continue
        cfg, seed = CONFIGS[cfg_name]
        seed = (seeds or {}).get(cfg_name, seed)
        weights = random_model(cfg, seed)
        prompt = prompt_for(cfg, seed)
        path = model_path(out_dir, label, cfg_name, kind)
        seen = write_model(kind, opts, path, cfg, weights)
        logits, ids, step_logits = BigCodeReference(cfg, seen).generate(prompt, N_NEW)
        logits_path = os.path.join(out_dir, f"{cfg_name}.{label}.logits.npy")
        np.save(logits_path, logits.astype(np.float64))
        gaps = top2_gap(step_logits)
        case = {
            "name": case_name(label, cfg_name), "group": GROUP, "model": path,
            "prompt": prompt, "n": N_NEW, "ids": ids, "logits": logits_path,
            "vocab": cfg.vocab_size, "config": cfg_name, "seed": seed, "kind": kind,
            "gaps": [float(f"{g:.3g}") for g in gaps], "min_gap": float(gaps.min()),
        }
        cases.append(case)
        for quant, tol in opts.get("quant_runs", {}).items():
            stored = quant == "stored"
            cases.append({**case, "name": f"{case['name']} [{'as stored' if stored else '--quant ' + quant}]",
                          "quant": None if stored else quant, "rel_tol": tol, "compare_ids": False})
    manifest = {"cases": cases}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def problems(case):
    """Why a case's seed is unfit: a near-tie or a special id among the greedy ids."""
    out = []
    if case["min_gap"] < MIN_GAP:
        out.append(f"NEAR-TIE {case['min_gap']:.2e}")
    special = sorted(set(case["ids"]) & set(SPECIAL_IDS))
    if special:
        out.append(f"SPECIAL {special}")
    return out
