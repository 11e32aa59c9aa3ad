"""Independent NumPy (float64) forward pass of a Llama-family decoder.

Weights are in Hugging Face convention (see llama_model.py). Per layer:
  h = x + O(attn(RoPE(Q(norm(x))), RoPE(K(norm(x))), V(norm(x))))
  x = h + down(silu(gate(norm(h))) * up(norm(h)))
with RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w, RoPE rotating pairs (i, i + hd/2) by
pos * theta^(-2i/hd) (or the scaled frequencies of rope_frequencies, cos and sin times its
attention factor), causal attention scaled by 1/sqrt(hd), query head h reading KV head
h // (n_heads / n_kv_heads). Logits = final_norm(x) @ W_out^T, W_out = embedding when tied.
"""
import numpy as np

from llama_model import EMBED, FINAL_NORM, LM_HEAD, layer_names


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def checked_feed(cfg, p0, tokens):
    """tokens as int64 ids, after checking they fit the context from position p0 and the
    vocabulary (what both references' forward passes accept)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if p0 + len(tokens) > cfg.context_length:
        raise ValueError("sequence exceeds the context length")
    if len(tokens) == 0 or tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise ValueError("bad token ids")
    return tokens


def silu(x):
    return x / (1.0 + np.exp(-x))


def causal_attention(q, keys, vals, p0):
    """Softmax attention of queries q [n, nh, hd] at positions p0.. over keys and values
    [p0 + n, nkv, hd] (query head h reads KV head h // (nh / nkv)), causal: the query at
    p0 + i reads keys 0..p0 + i. Returns [n, nh * hd]."""
    n, nh, hd = q.shape
    group = nh // keys.shape[1]
    scale = 1.0 / np.sqrt(hd)
    # mask[i, j]: query at p0 + i may read key at j
    mask = np.arange(p0 + n)[None, :] <= (p0 + np.arange(n))[:, None]
    att = np.empty((n, nh, hd))
    for h in range(nh):
        kv = h // group
        s = (q[:, h, :] @ keys[:, kv, :].T) * scale                 # [n, t]
        s = np.where(mask, s, -np.inf)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        s /= s.sum(axis=1, keepdims=True)
        att[:, h, :] = s @ vals[:, kv, :]
    return att.reshape(n, nh * hd)


def rope_frequencies(cfg):
    """(inv_freq [hd/2], attention factor) of cfg.rope_scaling, as Hugging Face transformers
    defines them (modeling_rope_utils): "linear" divides every frequency by factor; "llama3"
    divides wavelengths above original/low_freq_factor by factor, keeps those below
    original/high_freq_factor and interpolates between; "yarn" blends f/factor and f by a
    ramp over the pairs between the correction dims of beta_fast and beta_slow rotations in
    the original context, and scales cos/sin by 0.1 ln(factor) + 1."""
    hd, base = cfg.head_dim, cfg.rope_theta
    inv = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return inv, 1.0
    factor = float(rs["factor"])
    orig = rs.get("original_max_position_embeddings", cfg.context_length)
    if kind == "linear":
        return inv / factor, 1.0
    if kind == "llama3":
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        wl = 2 * np.pi / inv
        t = np.clip((orig / wl - lo) / (hi - lo), 0.0, 1.0)   # 0 in the low band, 1 in the high
        out = (1 - t) * inv / factor + t * inv
        return np.where(wl > orig / lo, inv / factor, np.where(wl < orig / hi, inv, out)), 1.0
    if kind == "yarn":
        def dim_of(rotations):
            return hd * np.log(orig / (rotations * 2 * np.pi)) / (2 * np.log(base))
        low = max(np.floor(dim_of(rs.get("beta_fast", 32))), 0)
        high = min(np.ceil(dim_of(rs.get("beta_slow", 1))), hd - 1)
        ramp = np.clip((np.arange(hd // 2) - low) / max(high - low, 0.001), 0.0, 1.0)
        mscale = 0.1 * np.log(factor) + 1.0 if factor > 1 else 1.0
        return inv / factor * ramp + inv * (1 - ramp), rs.get("attention_factor", mscale)
    raise ValueError(f"rope_scaling type {kind}")


class Reference:
    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        self.layers = [{k: self.w[n] for k, n in layer_names(i).items()}
                       for i in range(cfg.n_layers)]
        self.out = self.w[EMBED] if cfg.tied else self.w[LM_HEAD]
        hd = cfg.head_dim
        self.inv_freq, self.rope_attn = rope_frequencies(cfg)
        self.reset()

    def reset(self):
        cfg = self.cfg
        shape = (cfg.n_layers, cfg.context_length, cfg.n_kv_heads, cfg.head_dim)
        self.k_cache = np.zeros(shape)
        self.v_cache = np.zeros(shape)
        self.pos = 0

    def _rope(self, x, positions):
        """x: [n, heads, hd]; rotates (i, i + hd/2) by positions * inv_freq[i]."""
        ang = positions[:, None] * self.inv_freq[None, :]      # [n, hd/2]
        cos = self.rope_attn * np.cos(ang)[:, None, :]
        sin = self.rope_attn * np.sin(ang)[:, None, :]
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def forward(self, tokens):
        """Feeds tokens at the next positions; returns their logits [n, vocab]."""
        cfg = self.cfg
        p0 = self.pos
        tokens = checked_feed(cfg, p0, tokens)
        n = len(tokens)
        positions = np.arange(p0, p0 + n, dtype=np.float64)
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads

        x = self.w[EMBED][tokens]                                   # [n, dim]
        for li, L in enumerate(self.layers):
            xn = rms_norm(x, L["attn_norm"], cfg.norm_eps)
            q = (xn @ L["wq"].T).reshape(n, nh, hd)
            k = (xn @ L["wk"].T).reshape(n, nkv, hd)
            v = (xn @ L["wv"].T).reshape(n, nkv, hd)
            q = self._rope(q, positions)
            k = self._rope(k, positions)
            self.k_cache[li, p0:p0 + n] = k
            self.v_cache[li, p0:p0 + n] = v
            att = causal_attention(q, self.k_cache[li, :p0 + n], self.v_cache[li, :p0 + n], p0)
            x = x + att @ L["wo"].T
            xn = rms_norm(x, L["ffn_norm"], cfg.norm_eps)
            x = x + (silu(xn @ L["w_gate"].T) * (xn @ L["w_up"].T)) @ L["w_down"].T
        self.pos += n
        return rms_norm(x, self.w[FINAL_NORM], cfg.norm_eps) @ self.out.T

    def generate(self, prompt, n_new):
        """Greedy decoding from a fresh state. Returns (prompt_logits [n_prompt, vocab],
        generated ids, logits that chose each generated id [n_new, vocab])."""
        self.reset()
        prompt_logits = self.forward(prompt)
        last = prompt_logits[-1]
        ids, step_logits = [], []
        for i in range(n_new):
            tok = int(np.argmax(last))
            ids.append(tok)
            step_logits.append(last)
            if i + 1 < n_new:
                last = self.forward([tok])[0]
        return prompt_logits, ids, np.array(step_logits)


def top2_gap(logits):
    """Per row: (top1 - top2) / max|logit|, how far greedy is from a tie."""
    s = np.sort(logits, axis=-1)
    return (s[..., -1] - s[..., -2]) / np.abs(logits).max(axis=-1)
