"""llama2.c legacy `.bin` checkpoints, written and read independently of the C engine.

Header: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len); a
negative vocab_size means a separate classifier follows the weights, positive means the
classifier is the token embedding. Then fp32 arrays, torch [out, in] row-major:
token_embedding [vocab, dim], rms_att [L, dim], wq [L, q_dim, dim], wk [L, kv_dim, dim],
wv [L, kv_dim, dim], wo [L, dim, q_dim], rms_ffn [L, dim], w1 [L, hidden, dim],
w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim], freq_cis_real [seq_len, hd/2],
freq_cis_imag [seq_len, hd/2], wcls [vocab, dim] (only if not shared).
wq/wk rows are in the interleaved RoPE layout (adjacent pairs). The format implies
head_dim = dim / n_heads, rope_theta = 10000 and rms eps 1e-5.
"""
import struct

import numpy as np

from llama_model import (EMBED, FINAL_NORM, LM_HEAD, LlamaConfig, layer_names,
                         rope_deinterleave, rope_interleave)

HEADER = struct.Struct("<7i")


def check_expressible(cfg):
    if cfg.head_dim * cfg.n_heads != cfg.dim:
        raise ValueError("llama2.c needs head_dim == dim / n_heads")
    if cfg.rope_theta != 10000.0 or cfg.norm_eps != 1e-5:
        raise ValueError("llama2.c needs rope_theta 10000 and eps 1e-5")


def _freq_cis(cfg):
    hd = cfg.head_dim
    inv = 10000.0 ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(cfg.context_length, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang), np.sin(ang)


def _stacked(weights, cfg, key, fn=None):
    mats = [weights[layer_names(i)[key]] for i in range(cfg.n_layers)]
    if fn is not None:
        mats = [fn(m) for m in mats]
    return np.stack(mats)


def write(path, cfg, weights):
    """Writes weights (HF convention) as fp32 llama2.c. Returns the weights a reader sees."""
    check_expressible(cfg)
    vocab = cfg.vocab_size if cfg.tied else -cfg.vocab_size
    parts = [
        weights[EMBED],
        _stacked(weights, cfg, "attn_norm"),
        _stacked(weights, cfg, "wq", lambda m: rope_interleave(m, cfg.n_heads)),
        _stacked(weights, cfg, "wk", lambda m: rope_interleave(m, cfg.n_kv_heads)),
        _stacked(weights, cfg, "wv"),
        _stacked(weights, cfg, "wo"),
        _stacked(weights, cfg, "ffn_norm"),
        _stacked(weights, cfg, "w_gate"),
        _stacked(weights, cfg, "w_down"),
        _stacked(weights, cfg, "w_up"),
        weights[FINAL_NORM],
        *_freq_cis(cfg),
    ]
    if not cfg.tied:
        parts.append(weights[LM_HEAD])
    with open(path, "wb") as f:
        f.write(HEADER.pack(cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads,
                            cfg.n_kv_heads, vocab, cfg.context_length))
        for p in parts:
            f.write(np.ascontiguousarray(p, dtype="<f4").tobytes())
    return {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in weights.items()}


def read(path):
    """Returns (cfg, weights in HF convention as float64)."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = HEADER.unpack_from(data, 0)
    tied = vocab > 0
    cfg = LlamaConfig(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                      n_kv_heads=n_kv, vocab_size=abs(vocab), context_length=seq_len,
                      tied=tied)
    hd = cfg.head_dim
    off = HEADER.size

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        if off + 4 * n > len(data):
            raise ValueError(f"{path}: file too short")
        a = np.frombuffer(data, dtype="<f4", count=n, offset=off).reshape(shape)
        off += 4 * n
        return a.astype(np.float64)

    L = n_layers
    w = {EMBED: take(cfg.vocab_size, dim)}
    per_layer = {}
    per_layer["attn_norm"] = take(L, dim)
    per_layer["wq"] = take(L, cfg.q_dim, dim)
    per_layer["wk"] = take(L, cfg.kv_dim, dim)
    per_layer["wv"] = take(L, cfg.kv_dim, dim)
    per_layer["wo"] = take(L, dim, cfg.q_dim)
    per_layer["ffn_norm"] = take(L, dim)
    per_layer["w_gate"] = take(L, hidden, dim)
    per_layer["w_down"] = take(L, dim, hidden)
    per_layer["w_up"] = take(L, hidden, dim)
    w[FINAL_NORM] = take(dim)
    take(seq_len, hd // 2)  # freq_cis_real, unused (RoPE is computed)
    take(seq_len, hd // 2)  # freq_cis_imag
    if not tied:
        w[LM_HEAD] = take(cfg.vocab_size, dim)
    for i in range(L):
        names = layer_names(i)
        for key, arr in per_layer.items():
            m = arr[i]
            if key == "wq":
                m = rope_deinterleave(m, n_heads)
            elif key == "wk":
                m = rope_deinterleave(m, n_kv)
            w[names[key]] = m
    return cfg, w
