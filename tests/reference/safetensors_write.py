"""Hugging Face model directories: config.json plus safetensors (single file or sharded with
model.safetensors.index.json).

safetensors: u64 LE header length N, N bytes of JSON ({name: {dtype, shape, data_offsets}},
"__metadata__": {"format": "pt"}), padded with spaces to a multiple of 8, then the data;
data_offsets are [begin, end) relative to the end of the header.
"""
import json
import os
import struct

import numpy as np

import dtypes
from llama_model import hf_shapes

TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def hf_config(cfg, dtype="F32"):
    scaling = {"rope_scaling": dict(cfg.rope_scaling)} if cfg.rope_scaling else {}
    return scaling | {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "num_hidden_layers": cfg.n_layers,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "tie_word_embeddings": cfg.tied,
        "torch_dtype": TORCH_DTYPE[dtype],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
    }


def safetensors_bytes(entries):
    """entries: list of (name, dtype string, shape, data bytes). Returns the file's bytes."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, data in entries:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(e[3] for e in entries)


def write_safetensors(directory, entries, shards=1):
    """Writes entries (name, dtype string, shape, data bytes) as model.safetensors, or split
    in order into `shards` files model-0000k-of-0000n.safetensors plus
    model.safetensors.index.json."""
    if shards == 1:
        with open(os.path.join(directory, "model.safetensors"), "wb") as f:
            f.write(safetensors_bytes(entries))
        return
    weight_map, total = {}, 0
    for k, part in enumerate(np.array_split(np.arange(len(entries)), shards)):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        chunk = [entries[i] for i in part]
        with open(os.path.join(directory, fname), "wb") as f:
            f.write(safetensors_bytes(chunk))
        for e in chunk:
            weight_map[e[0]] = fname
            total += len(e[3])
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_hf(directory, cfg, weights, dtype="F32", shards=1):
    """Writes config.json and the weights (every tensor, norms included, as dtype).
    Returns the weights a reader sees."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(cfg, dtype), f, indent=2)
    names = list(hf_shapes(cfg))
    entries = [(n, dtype, weights[n].shape, dtypes.encode(weights[n], dtype)) for n in names]
    write_safetensors(directory, entries, shards)
    return {n: dtypes.roundtrip(weights[n], dtype) for n in names}
