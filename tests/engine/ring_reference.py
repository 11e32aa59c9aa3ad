"""NumPy (float64) reference of a StreamingLLM KV ring: what a slot's outputs must be after its
oldest non-sink entries were discarded.

A slot keeps, per layer, the entries of the tokens it was fed: each token's key BEFORE RoPE
and its value, as computed when that token was evaluated (hidden states of kept tokens are
never recomputed: StreamingLLM keeps the cached entries). Discarding d entries removes those
of positions n_keep..n_keep+d-1 and renumbers the later ones down by d. Every step then
rebuilds the keys from scratch: RoPE of each kept pre-RoPE key at its current (renumbered)
position, so the reference never rotates a rotated key (it is independent of the engine's
shift-RoPE, which re-rotates cached keys by -d). New tokens are evaluated at the positions
that continue from the slot's length, queries at those positions, with causal attention over
all entries before them. Without a discard this is exactly reference.Reference (self-checked
by the runner).

`store` emulates a KV cache kept in fp16 or bf16 the way ops.h describes one (keys stored
after RoPE and rounded to nearest even, values rounded, and at each discard the kept keys
widened, turned back by d positions and rounded again). It is not what the engine is compared
with: it measures how far rounding alone moves the logits, to show that the runner's
tolerances have room for it and are still far below what a wrong rotation does
(`store="norotate"`: keys keep their old angles after a discard, the bug shift-RoPE exists to
avoid).

Weights are in Hugging Face convention (readback.py de-interleaves GGUF's Q/K rows), so the
same code serves both RoPE layouts: the layout is the file's business, and the engine must
undo it to match."""
import numpy as np

from dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from llama_model import EMBED, FINAL_NORM
from reference import Reference, causal_attention, rms_norm, silu

STORES = ("exact", "f32", "f16", "bf16", "norotate")


def round_to(x, store):
    """x rounded to the storage type (nearest even), as float64."""
    if store == "f16":
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float64)
    if store == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(x)).astype(np.float64).reshape(np.shape(x))
    if store == "f32":
        return np.asarray(x, dtype=np.float32).astype(np.float64)
    return x


class RingSlot:
    """One slot: a ring of `window` positions with n_keep attention sinks."""

    def __init__(self, cfg, window, n_keep, store="exact"):
        if not (1 <= window and 0 <= n_keep < window) or store not in STORES:
            raise ValueError(f"bad ring ({window}, {n_keep}, {store})")
        self.window, self.n_keep, self.store = window, n_keep, store
        empty = np.zeros((0, cfg.n_kv_heads, cfg.head_dim))
        # per layer [len, n_kv_heads, head_dim]: exact: keys before RoPE; otherwise the keys as
        # the emulated cache holds them (after RoPE, rounded)
        self.k = [empty] * cfg.n_layers
        self.v = [empty] * cfg.n_layers

    def __len__(self):
        return len(self.k[0])


class RingReference(Reference):
    """reference.Reference's weights and RoPE, with the KV state kept per RingSlot."""

    def new_slot(self, window, n_keep, store="exact"):
        return RingSlot(self.cfg, window, n_keep, store)

    def step(self, slot, discard, pos0, tokens):
        """Drops positions n_keep..n_keep+discard-1, keeps positions 0..pos0-1 of what is left,
        then feeds tokens at pos0..; returns their logits [n, vocab]."""
        cfg = self.cfg
        n, k0 = len(tokens), slot.n_keep
        if not 0 <= discard <= max(len(slot) - k0, 0):
            raise ValueError(f"discard {discard} of a slot of {len(slot)} with {k0} sinks")
        if not 0 <= pos0 <= len(slot) - discard or pos0 + n > slot.window or n < 1:
            raise ValueError(f"pos0 {pos0} + {n} tokens in a slot of {len(slot)} - {discard}, window {slot.window}")
        for li in range(cfg.n_layers):
            k = np.concatenate([slot.k[li][:k0], slot.k[li][k0 + discard:]])[:pos0]
            if discard and slot.store not in ("exact", "norotate"):
                # the emulated cache turns the kept non-sinks back by discard and rounds them
                turned = self._rope(k[k0:], np.full(len(k[k0:]), -float(discard)))
                k = np.concatenate([k[:k0], round_to(turned, slot.store)])
            slot.k[li] = k
            slot.v[li] = np.concatenate([slot.v[li][:k0], slot.v[li][k0 + discard:]])[:pos0]

        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.arange(pos0, pos0 + n, dtype=np.float64)
        t = pos0 + n
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        x = self.w[EMBED][tokens]                                      # [n, dim]
        for li, L in enumerate(self.layers):
            xn = rms_norm(x, L["attn_norm"], cfg.norm_eps)
            q = self._rope((xn @ L["wq"].T).reshape(n, nh, hd), positions)
            k = (xn @ L["wk"].T).reshape(n, nkv, hd)                   # before RoPE
            v = (xn @ L["wv"].T).reshape(n, nkv, hd)
            if slot.store == "exact":
                slot.k[li] = np.concatenate([slot.k[li], k])
                slot.v[li] = np.concatenate([slot.v[li], v])
                keys = self._rope(slot.k[li], np.arange(t, dtype=np.float64))  # at today's positions
            else:
                slot.k[li] = np.concatenate([slot.k[li], round_to(self._rope(k, positions), slot.store)])
                slot.v[li] = np.concatenate([slot.v[li], round_to(v, slot.store)])
                keys = slot.k[li]
            vals = slot.v[li]                                          # [t, nkv, hd]
            x = x + causal_attention(q, keys, vals, pos0) @ L["wo"].T
            xn = rms_norm(x, L["ffn_norm"], cfg.norm_eps)
            x = x + (silu(xn @ L["w_gate"].T) * (xn @ L["w_up"].T)) @ L["w_down"].T
        return rms_norm(x, self.w[FINAL_NORM], cfg.norm_eps) @ self.out.T
