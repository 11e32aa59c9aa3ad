"""GPTQ checkpoints in the AutoGPTQ / Transformers layout, written with NumPy alone.

A linear layer W [out, in] (torch convention) is quantized to 4 bits by round-to-nearest in
groups of `group_size` inputs (-1: one group per row). With act-order the inputs are visited
in a permuted order (as GPTQ does by decreasing Hessian diagonal) and group j holds the inputs
perm[j*group_size : (j+1)*group_size], so g_idx[perm[i]] = i // group_size. Stored:

  <p>.qweight  int32 [in/8, out]        nibble i (bits 4i..4i+3) of word [w, o]: q[o, 8w + i]
  <p>.qzeros   int32 [n_groups, out/8]  nibble i of word [g, c]: zero[g, 8c + i] - offset
  <p>.scales   fp16  [n_groups, out]
  <p>.g_idx    int32 [in]               group of each input

offset is 1 for checkpoint_format "gptq" (AutoGPTQ stores zero - 1) and 0 for "gptq_v2".
value(o, k) = scales[g_idx[k], o] * (q[o, k] - zero[g_idx[k], o]): `dequantize` gives it, and is
what the reference computes with.
"""
import json
import os
from dataclasses import dataclass

import numpy as np

import dtypes
from llama_model import EMBED, LM_HEAD, hf_shapes
from safetensors_write import hf_config, safetensors_bytes

LINEAR_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class QLinear:
    q: np.ndarray       # [out, in] 0..15
    scales: np.ndarray  # [n_groups, out] float16
    zeros: np.ndarray   # [n_groups, out] 0..15
    g_idx: np.ndarray   # [in] int32


def quantize(w, group_size, rng, act_order=False, sym=True, zero_min=1, edge_zeros=False):
    """RTN 4-bit quantization of w [out, in]. Asymmetric zero points are kept in
    [zero_min, 15] (zero_min 1 for "gptq", which cannot store a zero point of 0); edge_zeros
    moves one group-row in eight to a zero point at either end of that range, so that the
    extreme nibbles are exercised."""
    w = np.asarray(w, dtype=np.float64)
    n_out, n_in = w.shape
    gs = n_in if group_size == -1 else group_size
    n_groups = n_in // gs
    perm = rng.permutation(n_in) if act_order else np.arange(n_in)
    g_idx = np.empty(n_in, dtype=np.int32)
    g_idx[perm] = np.arange(n_in) // gs
    q = np.empty((n_out, n_in), dtype=np.int64)
    scales = np.empty((n_groups, n_out), dtype=np.float16)
    zeros = np.empty((n_groups, n_out), dtype=np.int64)
    for g in range(n_groups):
        cols = perm[g * gs:(g + 1) * gs]
        x = w[:, cols]
        if sym:
            s = np.maximum(np.abs(x).max(axis=1), 1e-8) / 7.5
            z = np.full(n_out, 8)
        else:
            lo, hi = x.min(axis=1), x.max(axis=1)
            s = np.maximum(hi - lo, 1e-8) / 15.0
            z = np.clip(np.round(-lo / s), zero_min, 15).astype(np.int64)
            if edge_zeros:
                pick = rng.random(n_out) < 1 / 8
                z[pick] = np.where(rng.random(pick.sum()) < 0.5, zero_min, 15)
        s16 = s.astype(np.float16)
        q[:, cols] = np.clip(np.round(x / s16.astype(np.float64)[:, None]) + z[:, None], 0, 15)
        scales[g] = s16
        zeros[g] = z
    return QLinear(q, scales, zeros, g_idx)


def dequantize(ql):
    """float32 [out, in]: scale * (q - zero) of each input's group (exact in fp32)."""
    s = ql.scales.astype(np.float64)[ql.g_idx].T          # [out, in]
    z = ql.zeros[ql.g_idx].T
    return (s * (ql.q - z)).astype(np.float32)


def pack_nibbles(a):
    """Packs 4-bit values along axis 0 of a [8n, m] into uint32 [n, m]: row 8w + i of a goes to
    bits 4i..4i+3 of row w."""
    a = np.asarray(a, dtype=np.uint32)
    a = a.reshape(a.shape[0] // 8, 8, a.shape[1])
    return sum(a[:, i, :] << np.uint32(4 * i) for i in range(8)).astype(np.uint32)


def linear_entries(prefix, ql, zero_offset):
    """The four safetensors entries of a quantized layer."""
    qweight = pack_nibbles(ql.q.T).view(np.int32)                       # [in/8, out]
    qzeros = pack_nibbles((ql.zeros - zero_offset).T).T.view(np.int32)   # [n_groups, out/8]
    qzeros = np.ascontiguousarray(qzeros)
    return [
        (prefix + ".qweight", "I32", qweight.shape, qweight.astype("<i4").tobytes()),
        (prefix + ".qzeros", "I32", qzeros.shape, qzeros.astype("<i4").tobytes()),
        (prefix + ".scales", "F16", ql.scales.shape, ql.scales.astype("<f2").tobytes()),
        (prefix + ".g_idx", "I32", ql.g_idx.shape, ql.g_idx.astype("<i4").tobytes()),
    ]


@dataclass
class Options:
    group_size: int = 128
    act_order: bool = False
    sym: bool = True
    checkpoint_format: str = "gptq"   # or "gptq_v2"
    lm_head: bool = False             # quantize the output projection too (untied models)
    zero_bias: bool = False           # write all-zero biases beside the quantized layers
    seed: int = 0


def quantize_model(cfg, weights, opts):
    """(safetensors entries, weights a reader of them sees: HF names, float32). Linear layers
    are quantized; the embedding and lm_head (unless opts.lm_head) are stored as fp16, norms
    as fp32."""
    rng = np.random.default_rng(opts.seed)
    zero_offset = 1 if opts.checkpoint_format == "gptq" else 0
    entries, seen = [], {}
    for name in hf_shapes(cfg):
        w = weights[name]
        prefix = name[:-len(".weight")]
        quantized = prefix.endswith(LINEAR_SUFFIXES) or (name == LM_HEAD and opts.lm_head)
        if quantized:
            ql = quantize(w, opts.group_size, rng, opts.act_order, opts.sym,
                          zero_min=zero_offset, edge_zeros=not opts.sym)
            entries += linear_entries(prefix, ql, zero_offset)
            if opts.zero_bias:
                entries.append((prefix + ".bias", "F16", (w.shape[0],), bytes(2 * w.shape[0])))
            seen[name] = dequantize(ql)
        else:
            dt = "F32" if w.ndim == 1 else "F16"
            entries.append((name, dt, w.shape, dtypes.encode(w, dt)))
            seen[name] = dtypes.roundtrip(w, dt)
    return entries, seen


def quant_config(opts):
    return {"quant_method": "gptq", "bits": 4, "group_size": opts.group_size,
            "desc_act": opts.act_order, "sym": opts.sym, "damp_percent": 0.01,
            "true_sequential": True, "static_groups": False,
            "checkpoint_format": opts.checkpoint_format, "lm_head": opts.lm_head}


def write_dir(directory, config, entries, quant, layout="transformers", shards=1):
    """Writes a GPTQ directory. layout "transformers": config.json carries quant as
    quantization_config, weights in model.safetensors (or `shards` files with an index);
    "autogptq": quant goes to quantize_config.json and the weights to AutoGPTQ's own file
    name, <model_file_base_name>.safetensors. quant None writes no quantization config."""
    os.makedirs(directory, exist_ok=True)
    config = dict(config)
    base = None
    if quant is not None and layout == "transformers":
        config["quantization_config"] = quant
    elif quant is not None:
        # AutoGPTQ's file before 0.7 had neither quant_method nor checkpoint_format ("gptq")
        if quant.get("checkpoint_format") == "gptq":
            quant = {k: v for k, v in quant.items() if k not in ("quant_method", "checkpoint_format", "lm_head")}
        base = f"gptq_model-4bit-{quant['group_size']}g"
        with open(os.path.join(directory, "quantize_config.json"), "w") as f:
            json.dump({**quant, "model_name_or_path": directory, "model_file_base_name": base}, f, indent=2)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if shards == 1:
        fname = f"{base}.safetensors" if base else "model.safetensors"
        with open(os.path.join(directory, fname), "wb") as f:
            f.write(safetensors_bytes(entries))
        return
    weight_map = {}
    for k, part in enumerate(np.array_split(np.arange(len(entries)), shards)):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        chunk = [entries[i] for i in part]
        with open(os.path.join(directory, fname), "wb") as f:
            f.write(safetensors_bytes(chunk))
        weight_map.update({e[0]: fname for e in chunk})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def write_gptq(directory, cfg, weights, opts, layout="transformers", shards=1):
    """Quantizes weights (HF names, float) and writes the directory; returns the weights a
    reader sees. opts.lm_head unties the output projection (quantized, from the embedding
    when the model was tied)."""
    if opts.lm_head and cfg.tied:
        cfg = cfg.with_(tied=False)
        weights = {**weights, LM_HEAD: weights[EMBED]}
    entries, seen = quantize_model(cfg, weights, opts)
    write_dir(directory, hf_config(cfg, "F16"), entries, quant_config(opts), layout, shards)
    return cfg, seen

