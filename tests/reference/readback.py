"""Minimal readers for the files the writers produce, used only to self-test the writers
(write -> read back -> same function) and to parse published GGUF files as a format check."""
import json
import os
import struct

import numpy as np

import dtypes
from gguf_write import ARRAY, STRING, _SCALAR
from llama_model import LlamaConfig, EMBED, FINAL_NORM, LM_HEAD, layer_names, rope_deinterleave

GGML_NAME = {v: k for k, v in dtypes.GGML_TYPE.items()}


def read_gguf(path):
    """Returns (version, metadata dict, {name: (ne, type_name, bytes)})."""
    data = open(path, "rb").read()
    if data[:4] != b"GGUF":
        raise ValueError("bad magic")
    version, n_t, n_kv = struct.unpack_from("<IQQ", data, 4)
    off = 24

    def u(fmt):
        nonlocal off
        v = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return v[0]

    def s():
        nonlocal off
        n = u("<Q")
        off += n
        return data[off - n:off].decode("utf-8")

    def val(t):
        if t == STRING:
            return s()
        if t == ARRAY:
            et, n = u("<I"), u("<Q")
            return [val(et) for _ in range(n)]
        return u(_SCALAR[t])

    md = {}
    for _ in range(n_kv):
        k = s()
        md[k] = val(u("<I"))
    infos = []
    for _ in range(n_t):
        name = s()
        nd = u("<I")
        ne = [u("<Q") for _ in range(nd)]
        infos.append((name, ne, u("<I"), u("<Q")))
    align = md.get("general.alignment", 32)
    base = -(-off // align) * align
    tensors = {}
    for name, ne, t, o in infos:
        tn = GGML_NAME[t]
        n = int(np.prod(ne))
        nbytes = len(dtypes.encode(np.zeros(n, np.float32), tn))
        tensors[name] = (ne, tn, data[base + o: base + o + nbytes])
    return version, md, tensors


def gguf_llama_model(path):
    """Reads a llama GGUF written by gguf_write into (cfg, HF-convention weights)."""
    _, md, t = read_gguf(path)
    a = "llama."
    cfg = LlamaConfig(
        dim=md[a + "embedding_length"], hidden_dim=md[a + "feed_forward_length"],
        n_layers=md[a + "block_count"], n_heads=md[a + "attention.head_count"],
        n_kv_heads=md[a + "attention.head_count_kv"], vocab_size=md[a + "vocab_size"],
        context_length=md[a + "context_length"], head_dim=md[a + "rope.dimension_count"],
        rope_theta=float(md[a + "rope.freq_base"]),
        norm_eps=float(md[a + "attention.layer_norm_rms_epsilon"]),
        tied="output.weight" not in t)

    def get(name):
        ne, tn, b = t[name]
        return dtypes.decode(b, tn, tuple(reversed(ne)))

    w = {EMBED: get("token_embd.weight"), FINAL_NORM: get("output_norm.weight")}
    if not cfg.tied:
        w[LM_HEAD] = get("output.weight")
    g = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
         "wo": "attn_output", "ffn_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up",
         "w_down": "ffn_down"}
    for i in range(cfg.n_layers):
        for key, hf in layer_names(i).items():
            m = get(f"blk.{i}.{g[key]}.weight")
            if key == "wq":
                m = rope_deinterleave(m, cfg.n_heads)
            elif key == "wk":
                m = rope_deinterleave(m, cfg.n_kv_heads)
            w[hf] = m
    return cfg, w


def _read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b = data[8 + n + e["data_offsets"][0]: 8 + n + e["data_offsets"][1]]
        out[name] = dtypes.decode(b, e["dtype"], tuple(e["shape"]))
    return out


def hf_model(directory):
    c = json.load(open(os.path.join(directory, "config.json")))
    cfg = LlamaConfig(dim=c["hidden_size"], hidden_dim=c["intermediate_size"],
                      n_layers=c["num_hidden_layers"], n_heads=c["num_attention_heads"],
                      n_kv_heads=c["num_key_value_heads"], vocab_size=c["vocab_size"],
                      context_length=c["max_position_embeddings"], head_dim=c["head_dim"],
                      rope_theta=c["rope_theta"], norm_eps=c["rms_norm_eps"],
                      rope_scaling=c.get("rope_scaling"),
                      tied=c["tie_word_embeddings"])
    return cfg, hf_weights(directory)


def hf_weights(directory):
    """{name: values} of every tensor in a directory's model.safetensors or its shards."""
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(single):
        return _read_safetensors(single)
    index = json.load(open(os.path.join(directory, "model.safetensors.index.json")))
    w = {}
    for f in sorted(set(index["weight_map"].values())):
        w.update(_read_safetensors(os.path.join(directory, f)))
    return w
