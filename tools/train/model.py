"""A Llama-architecture decoder in PyTorch: RMSNorm, rotary position embeddings (Hugging Face
"rotate half" pairing (i, i + head_dim/2)), grouped-query attention, SwiGLU feed-forward,
optionally tied input/output embeddings. Parameter names follow Hugging Face's
LlamaForCausalLM so that export.py can write model.safetensors directly."""
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class Config:
    vocab_size: int = 8192
    dim: int = 256
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 4
    ffn_dim: int = 768
    context: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied: bool = False

    @property
    def head_dim(self):
        return self.dim // self.n_heads


PRESETS = {
    # the default target: 6.2M parameters (2.1M of them the tied embedding)
    "target": Config(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=640, context=256,
                     tied=True),
    # the draft: same tokenizer, 1.2M parameters (5.3x fewer), one KV head
    "draft": Config(dim=96, n_layers=4, n_heads=3, n_kv_heads=1, ffn_dim=256, context=256,
                    tied=True),
}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # fp32 statistics; under autocast the result is bf16, which the next matmul takes
        # without another cast
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        if torch.is_autocast_cpu_enabled():
            return y.to(torch.get_autocast_cpu_dtype())
        return y.to(x.dtype)


def rope_tables(cfg, n, device=None, dtype=torch.float32):
    """cos, sin: [n, head_dim] in the rotate-half layout."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(device=device, dtype=dtype), ang.sin().to(device=device, dtype=dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        c = self.cfg
        hd = c.head_dim
        q = self.q_proj(x).view(b, t, c.n_heads, hd).transpose(1, 2)     # [b, h, t, hd]
        k = self.k_proj(x).view(b, t, c.n_kv_heads, hd).transpose(1, 2)  # [b, kvh, t, hd]
        v = self.v_proj(x).view(b, t, c.n_kv_heads, hd).transpose(1, 2)
        cos, sin = cos[:t].to(q.dtype), sin[:t].to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = c.n_heads // c.n_kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        bias = torch.full((t, t), float("-inf"), device=x.device).triu(1).to(q.dtype)
        att = torch.baddbmm(bias.expand(b * c.n_heads, t, t), q.reshape(b * c.n_heads, t, hd),
                            k.reshape(b * c.n_heads, t, hd).transpose(1, 2),
                            alpha=1.0 / math.sqrt(hd))                   # [b*h, t, t]
        att = att.softmax(-1, dtype=torch.float32).to(v.dtype)
        y = torch.bmm(att, v.reshape(b * c.n_heads, t, hd)).view(b, c.n_heads, t, hd)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, c.n_heads * hd))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tied:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(cfg, cfg.context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2 style: residual projections scaled down with depth
        for name, p in self.named_parameters():
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, ids):
        """ids [b, t] -> logits [b, t, vocab]"""
        t = ids.shape[1]
        if t > self.rope_cos.shape[0]:
            cos, sin = rope_tables(self.cfg, t, ids.device)
        else:
            cos, sin = self.rope_cos, self.rope_sin
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))

    def n_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights counted once


def hf_state_dict(model):
    """{HF name: tensor} as LlamaForCausalLM names them (lm_head omitted when tied)."""
    out = {}
    for name, p in model.state_dict().items():
        if name.startswith("rope_"):
            continue
        if name == "lm_head.weight":
            if model.cfg.tied:
                continue
            out[name] = p
        else:
            out["model." + name] = p
    return out
