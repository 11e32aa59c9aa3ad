"""A Llama-family model as the reference sees it: a config plus weights in Hugging Face
convention (torch [out, in] matrices, RoPE over the pairs (i, i + head_dim/2) of each head).

`random_model(cfg, seed)` makes a tiny model to write in every format. The writers store it
and return the weights a reader of that file sees (after its dtype's rounding), still in HF
convention, so the reference computes exactly the function the file encodes.
"""
from dataclasses import dataclass, asdict, replace

import numpy as np


@dataclass(frozen=True)
class LlamaConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    context_length: int = 128
    head_dim: int = 0          # 0: dim // n_heads
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied: bool = False          # output projection shares the token embedding
    rope_scaling: dict = None   # config.json's "rope_scaling" (reference.rope_frequencies)

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even")

    @property
    def q_dim(self):
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_dim

    def to_dict(self):
        return asdict(self)

    @staticmethod
    def from_dict(d):
        return LlamaConfig(**d)

    def with_(self, **kw):
        return replace(self, **kw)


def layer_names(i):
    p = f"model.layers.{i}."
    return {
        "attn_norm": p + "input_layernorm.weight",
        "wq": p + "self_attn.q_proj.weight",
        "wk": p + "self_attn.k_proj.weight",
        "wv": p + "self_attn.v_proj.weight",
        "wo": p + "self_attn.o_proj.weight",
        "ffn_norm": p + "post_attention_layernorm.weight",
        "w_gate": p + "mlp.gate_proj.weight",
        "w_up": p + "mlp.up_proj.weight",
        "w_down": p + "mlp.down_proj.weight",
    }


EMBED = "model.embed_tokens.weight"
FINAL_NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"


def hf_shapes(cfg):
    """HF tensor name -> shape, in a stable order."""
    shapes = {EMBED: (cfg.vocab_size, cfg.dim)}
    for i in range(cfg.n_layers):
        n = layer_names(i)
        shapes[n["attn_norm"]] = (cfg.dim,)
        shapes[n["wq"]] = (cfg.q_dim, cfg.dim)
        shapes[n["wk"]] = (cfg.kv_dim, cfg.dim)
        shapes[n["wv"]] = (cfg.kv_dim, cfg.dim)
        shapes[n["wo"]] = (cfg.dim, cfg.q_dim)
        shapes[n["ffn_norm"]] = (cfg.dim,)
        shapes[n["w_gate"]] = (cfg.hidden_dim, cfg.dim)
        shapes[n["w_up"]] = (cfg.hidden_dim, cfg.dim)
        shapes[n["w_down"]] = (cfg.dim, cfg.hidden_dim)
    shapes[FINAL_NORM] = (cfg.dim,)
    if not cfg.tied:
        shapes[LM_HEAD] = (cfg.vocab_size, cfg.dim)
    return shapes


def random_model(cfg, seed):
    """HF-convention float32 weights: matrices ~ N(0, 1/in) except the projections back into
    the residual stream (o_proj, down_proj) ~ N(0, 4/in), embedding ~ N(0, 0.09), norm
    weights ~ U(0.7, 1.3). The small embedding and the larger residual updates keep greedy
    decoding from repeating the last token (tied models otherwise do), so that generated
    positions exercise attention over the KV cache."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in hf_shapes(cfg).items():
        if len(shape) == 1:
            w[name] = rng.uniform(0.7, 1.3, size=shape).astype(np.float32)
        elif name == EMBED:
            w[name] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
        else:
            gain = 2.0 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            w[name] = (gain * rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    return w


def rope_interleave(w, n_heads):
    """HF rows -> the GGUF/llama2.c layout where RoPE rotates adjacent pairs (2i, 2i+1).
    Within each head, row j (first half) goes to 2j and row j + hd/2 goes to 2j + 1."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.reshape(n_heads, 2, hd // 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def rope_deinterleave(w, n_heads):
    """Inverse of rope_interleave."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.reshape(n_heads, hd // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)
