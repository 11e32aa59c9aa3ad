"""A GPT-BigCode (StarCoder) model as the reference sees it: a config plus weights under the
Hugging Face names (torch [out, in] matrices, the fused c_attn rows ordered Q, K, V).

`random_model(cfg, seed)` makes a tiny model to write as GGUF (arch "starcoder") or as an HF
directory (model_type "gpt_bigcode"). The writers return the weights a reader of the file sees,
still under these names, so the reference computes exactly the function the file encodes.
"""
from dataclasses import dataclass, asdict, replace

import numpy as np

GELU_APPROX = ("tanh", "none")      # torch.nn.functional.gelu's `approximate`: tanh or erf


@dataclass(frozen=True)
class BigCodeConfig:
    dim: int
    ffn_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int                 # 1: multi-query attention (HF multi_query=true)
    vocab_size: int
    context_length: int = 128       # rows of the learned position embedding
    norm_eps: float = 1e-5
    tied: bool = False              # the LM head is the token embedding
    gelu: str = "tanh"
    plain: bool = False             # weights without GAIN and FC_BIAS_MEAN (see random_model)

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ValueError("dim must be a multiple of n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.gelu not in GELU_APPROX:
            raise ValueError(f"gelu must be one of {GELU_APPROX}")

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    @property
    def q_dim(self):
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_dim

    @property
    def qkv_dim(self):
        return self.q_dim + 2 * self.kv_dim

    def to_dict(self):
        return asdict(self)

    def with_(self, **kw):
        return replace(self, **kw)


WTE = "transformer.wte.weight"
WPE = "transformer.wpe.weight"
LN_F_W = "transformer.ln_f.weight"
LN_F_B = "transformer.ln_f.bias"
LM_HEAD = "lm_head.weight"

# layer role -> HF name suffix under transformer.h.N.
LAYER_ROLES = {
    "ln_1_w": "ln_1.weight", "ln_1_b": "ln_1.bias",
    "qkv_w": "attn.c_attn.weight", "qkv_b": "attn.c_attn.bias",
    "o_w": "attn.c_proj.weight", "o_b": "attn.c_proj.bias",
    "ln_2_w": "ln_2.weight", "ln_2_b": "ln_2.bias",
    "fc_w": "mlp.c_fc.weight", "fc_b": "mlp.c_fc.bias",
    "proj_w": "mlp.c_proj.weight", "proj_b": "mlp.c_proj.bias",
}


def layer_names(i):
    return {role: f"transformer.h.{i}.{suffix}" for role, suffix in LAYER_ROLES.items()}


def hf_shapes(cfg):
    """HF tensor name -> shape, in a stable order."""
    d, f = cfg.dim, cfg.ffn_dim
    shapes = {WTE: (cfg.vocab_size, d), WPE: (cfg.context_length, d)}
    for i in range(cfg.n_layers):
        n = layer_names(i)
        shapes.update({
            n["ln_1_w"]: (d,), n["ln_1_b"]: (d,),
            n["qkv_w"]: (cfg.qkv_dim, d), n["qkv_b"]: (cfg.qkv_dim,),
            n["o_w"]: (d, cfg.q_dim), n["o_b"]: (d,),
            n["ln_2_w"]: (d,), n["ln_2_b"]: (d,),
            n["fc_w"]: (f, d), n["fc_b"]: (f,),
            n["proj_w"]: (d, f), n["proj_b"]: (d,),
        })
    shapes[LN_F_W] = (d,)
    shapes[LN_F_B] = (d,)
    if not cfg.tied:
        shapes[LM_HEAD] = (cfg.vocab_size, d)
    return shapes


# Standard deviation x sqrt(in) of each matrix (1 for the others). c_attn: a sharper attention
# keeps greedy decoding from settling on one repeated token, so that generated positions
# exercise attention over the KV cache. mlp: with c_fc's bias near -2.5 most pre-activations
# lie in GELU's negative tail, where its tanh and erf forms differ most relative to their value,
# and the large c_proj carries that difference into the logits (over 1e-3 of max|logit|, ten
# times the golden tolerance; near 1e-4 with plain weights).
GAIN = {"attn.c_attn": 3.0, "attn.c_proj": 2.0, "mlp.c_fc": 1.5, "mlp.c_proj": 20.0}
FC_BIAS_MEAN = -2.5


def random_model(cfg, seed):
    """Float32 weights: matrices ~ N(0, GAIN^2/in), token and position embeddings
    ~ N(0, 0.09), LayerNorm weights ~ U(0.7, 1.3), every bias, LayerNorm biases included,
    ~ N(0, 0.01) (so that a reader that drops any of them is caught), c_fc's around
    FC_BIAS_MEAN. cfg.plain: every gain 1 and c_fc's bias mean 0, for the quantized paths'
    runs, whose errors GAIN's large c_proj would amplify about tenfold."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in hf_shapes(cfg).items():
        role = ".".join(name.split(".")[-3:-1])             # e.g. mlp.c_fc
        if name.endswith(".bias"):
            mean = FC_BIAS_MEAN if role == "mlp.c_fc" and not cfg.plain else 0
            w[name] = 0.1 * rng.standard_normal(shape) + mean
        elif len(shape) == 1:
            w[name] = rng.uniform(0.7, 1.3, size=shape)
        elif name in (WTE, WPE):
            w[name] = 0.3 * rng.standard_normal(shape)
        else:
            gain = 1.0 if cfg.plain else GAIN.get(role, 1.0)
            w[name] = gain * rng.standard_normal(shape) / np.sqrt(shape[1])
        w[name] = w[name].astype(np.float32)
    return w
