#!/usr/bin/python3
"""Malformed GPT-BigCode models: `infernode generate` must exit non-zero (not by a signal),
with a line on stderr naming the tensor or config field at fault (tests/bad_input's check).
A valid GGUF and a valid HF model run first and must succeed, so that an engine refusing the
architecture altogether cannot pass.

  starcoder GGUF, blk.1.attn_qkv.weight of [q_dim + kv_dim, dim] (no V rows)
  starcoder GGUF without position_embd.weight
  gpt_bigcode HF with transformer.h.1.attn.c_attn.weight of [3 dim, dim] (multi-head shaped)
  gpt_bigcode HF config with multi_query false

usage: run_bigcode_bad.py --infernode BIN --work DIR"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "bad_input"))

import numpy as np  # noqa: E402

import bigcode_write  # noqa: E402
import dtypes  # noqa: E402
import gguf_write  # noqa: E402
import safetensors_write  # noqa: E402
from bigcode_model import BigCodeConfig, random_model  # noqa: E402
from run_bad_input import SANITIZER_MARKS, Case, check, run  # noqa: E402

CFG = BigCodeConfig(dim=64, ffn_dim=128, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=300,
                    context_length=64)
SEED = 11


def gguf_models(d, w):
    md = bigcode_write.starcoder_metadata(CFG)
    tensors, _ = bigcode_write.starcoder_tensors(CFG, w, "F32")
    valid = os.path.join(d, "valid.gguf")
    gguf_write.write_gguf(valid, md, tensors)

    qkv = "blk.1.attn_qkv.weight"
    short = np.random.default_rng(0).standard_normal((CFG.q_dim + CFG.kv_dim, CFG.dim))
    wrong = [gguf_write.Tensor(t.name, [CFG.dim, CFG.q_dim + CFG.kv_dim], t.type_id,
                               dtypes.encode(short, "F32")) if t.name == qkv else t
             for t in tensors]
    p_qkv = os.path.join(d, "qkv-no-v-rows.gguf")
    gguf_write.write_gguf(p_qkv, md, wrong)

    p_pos = os.path.join(d, "no-position-embd.gguf")
    gguf_write.write_gguf(p_pos, md, [t for t in tensors if t.name != "position_embd.weight"])
    return valid, [Case("GGUF attn_qkv without V rows", p_qkv, [qkv]),
                   Case("GGUF without position_embd", p_pos, ["position_embd.weight"])]


def hf_models(d, w):
    valid = os.path.join(d, "valid-hf")
    bigcode_write.write_hf(valid, CFG, w)

    c_attn = "transformer.h.1.attn.c_attn"
    mha = dict(w)
    mha[c_attn + ".weight"] = np.zeros((3 * CFG.dim, CFG.dim), np.float32)
    mha[c_attn + ".bias"] = np.zeros(3 * CFG.dim, np.float32)
    p_mha = os.path.join(d, "c-attn-multi-head-shaped")
    os.makedirs(p_mha)
    shutil.copy(os.path.join(valid, "config.json"), p_mha)
    safetensors_write.write_safetensors(
        p_mha, [(n, "F32", v.shape, dtypes.encode(v, "F32")) for n, v in mha.items()])

    p_mq = os.path.join(d, "multi-query-false")
    shutil.copytree(valid, p_mq)
    cfg_path = os.path.join(p_mq, "config.json")
    config = json.load(open(cfg_path))
    config["multi_query"] = False
    json.dump(config, open(cfg_path, "w"), indent=2)
    return valid, [Case("HF c_attn shaped for multi-head attention", p_mha, [c_attn]),
                   Case("HF multi_query false", p_mq, ["multi_query"])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    if not os.access(a.infernode, os.X_OK):
        print(f"FAIL: {a.infernode} is not an executable")
        return 1
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    w = random_model(CFG, SEED)
    failed = total = 0
    for make in (gguf_models, hf_models):
        control, cases = make(a.work, w)
        _, p = run(a.infernode, control, "1,5,7", 4)
        total += 1
        if p is None or p.returncode != 0 or any(m in p.stderr for m in SANITIZER_MARKS):
            why = "hung" if p is None else f"exit {p.returncode}: {p.stderr.strip()[-300:]!r}"
            print(f"FAIL control (valid model {control}) does not run: {why}", flush=True)
            failed += 1
        else:
            print(f"PASS control: valid model {control} runs ({p.stdout.strip()})", flush=True)
        for c in cases:
            problems = check(a.infernode, c)
            total += 1
            if problems:
                failed += 1
                print(f"FAIL {c.name}: {'; '.join(problems)}\n     model: {c.model}", flush=True)
            else:
                print(f"PASS {c.name}", flush=True)
    print(f"{total - failed}/{total} cases passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
