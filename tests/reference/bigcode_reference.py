"""Independent NumPy (float64) forward pass of a GPT-BigCode (StarCoder) decoder.

Weights under the HF names of bigcode_model.py. For tokens x at positions p:
  h = wte[x] + wpe[p]
  per layer:
    a = LN(h; ln_1);  [Q | K | V] = a @ c_attn^T + b   (rows: q_dim, kv_dim, kv_dim)
    h = h + attn(Q, K, V) @ attn.c_proj^T + b
    h = h + gelu(LN(h; ln_2) @ c_fc^T + b) @ mlp.c_proj^T + b
  logits = LN(h; ln_f) @ W_out^T, W_out = wte when tied
with LN(x; w, b) = (x - mean) / sqrt(mean((x - mean)^2) + eps) * w + b, causal attention
scaled by 1/sqrt(head_dim), query head h reading KV head h // (n_heads / n_kv_heads), and
gelu either 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ("tanh") or x Phi(x) ("none").
"""
import math

import numpy as np

from bigcode_model import LM_HEAD, LN_F_B, LN_F_W, WPE, WTE, layer_names
from reference import Reference, causal_attention, checked_feed

_erf = np.vectorize(math.erf, otypes=[np.float64])


def layer_norm(x, w, b, eps):
    c = x - x.mean(axis=-1, keepdims=True)
    return c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps) * w + b


def gelu(x, approx):
    if approx == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


class BigCodeReference:
    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        self.layers = [{k: self.w[n] for k, n in layer_names(i).items()}
                       for i in range(cfg.n_layers)]
        self.out = self.w[WTE] if cfg.tied else self.w[LM_HEAD]
        self.reset()

    # The KV caches and position, as the Llama reference keeps them.
    reset = Reference.reset

    def forward(self, tokens):
        """Feeds tokens at the next positions; returns their logits [n, vocab]."""
        cfg = self.cfg
        p0 = self.pos
        tokens = checked_feed(cfg, p0, tokens)
        n = len(tokens)
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        q_dim, kv_dim = cfg.q_dim, cfg.kv_dim
        eps = cfg.norm_eps

        x = self.w[WTE][tokens] + self.w[WPE][p0:p0 + n]               # [n, dim]
        for li, L in enumerate(self.layers):
            a = layer_norm(x, L["ln_1_w"], L["ln_1_b"], eps)
            qkv = a @ L["qkv_w"].T + L["qkv_b"]                        # [n, q_dim + 2 kv_dim]
            q = qkv[:, :q_dim].reshape(n, nh, hd)
            self.k_cache[li, p0:p0 + n] = qkv[:, q_dim:q_dim + kv_dim].reshape(n, nkv, hd)
            self.v_cache[li, p0:p0 + n] = qkv[:, q_dim + kv_dim:].reshape(n, nkv, hd)
            att = causal_attention(q, self.k_cache[li, :p0 + n], self.v_cache[li, :p0 + n], p0)
            x = x + att @ L["o_w"].T + L["o_b"]
            m = layer_norm(x, L["ln_2_w"], L["ln_2_b"], eps)
            f = gelu(m @ L["fc_w"].T + L["fc_b"], cfg.gelu)               # [n, ffn_dim]
            x = x + f @ L["proj_w"].T + L["proj_b"]
        self.pos += n
        return layer_norm(x, self.w[LN_F_W], self.w[LN_F_B], eps) @ self.out.T

    # Greedy decoding from a fresh state, the same driver as the Llama reference's:
    # (prompt_logits [n_prompt, vocab], generated ids, logits that chose each id [n_new, vocab]).
    generate = Reference.generate
