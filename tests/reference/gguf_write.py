"""GGUF v2/v3 writer (both store counts and lengths as u64; only the version differs).

Layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/values (u64-length
string key, u32 type, value); n_tensors tensor infos (name, u32 n_dims, u64 ne[n_dims]
innermost first, u32 ggml type, u64 offset from the data section); padding to
general.alignment; the data section with each tensor at an aligned offset.

`llama_tensors` / `llama_metadata` turn an HF-convention model into GGUF arch "llama" (Q and
K rows permuted so that RoPE rotates adjacent pairs). `write_gguf` takes plain lists so tests
can write deliberately broken files.
"""
import struct
from dataclasses import dataclass, field

import numpy as np

import dtypes
from llama_model import (EMBED, FINAL_NORM, LM_HEAD, layer_names, rope_interleave)

# GGUF metadata value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, \
    FLOAT64 = range(13)
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


@dataclass
class Tensor:
    name: str
    ne: list            # innermost first
    type_id: int        # ggml type id
    data: bytes


@dataclass
class Layout:
    """Byte offsets of the file's regions, for tests that truncate it."""
    kv_start: int = 0
    tensor_infos_start: int = 0
    data_start: int = 0
    size: int = 0
    tensor_offsets: dict = field(default_factory=dict)   # name -> absolute offset


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(vtype, v):
    if vtype == STRING:
        return _str(v)
    if vtype == ARRAY:
        etype, items = v
        out = struct.pack("<IQ", etype, len(items))
        if etype == STRING:
            return out + b"".join(_str(s) for s in items)
        return out + np.asarray(items, dtype=np.dtype(_SCALAR[etype])).tobytes()
    return struct.pack(_SCALAR[vtype], v)


def write_gguf(path, metadata, tensors, version=3, alignment=32, magic=b"GGUF"):
    """metadata: list of (key, vtype, value); ARRAY values are (elem_type, list).
    tensors: list of Tensor. Returns the Layout."""
    lay = Layout()
    head = magic + struct.pack("<IQQ", version, len(tensors), len(metadata))
    lay.kv_start = len(head)
    kv = b"".join(_str(k) + struct.pack("<I", t) + _value(t, v) for k, t, v in metadata)
    lay.tensor_infos_start = lay.kv_start + len(kv)
    infos, offset, rel = [], 0, {}
    for t in tensors:
        offset = -(-offset // alignment) * alignment
        rel[t.name] = offset
        infos.append(_str(t.name) + struct.pack("<I", len(t.ne))
                     + struct.pack(f"<{len(t.ne)}Q", *t.ne) + struct.pack("<IQ", t.type_id, offset))
        offset += len(t.data)
    blob = head + kv + b"".join(infos)
    lay.data_start = -(-len(blob) // alignment) * alignment
    with open(path, "wb") as f:
        f.write(blob)
        f.write(b"\0" * (lay.data_start - len(blob)))
        pos = 0
        for t in tensors:
            f.write(b"\0" * (rel[t.name] - pos))
            f.write(t.data)
            pos = rel[t.name] + len(t.data)
        lay.size = lay.data_start + pos
    lay.tensor_offsets = {k: lay.data_start + v for k, v in rel.items()}
    return lay


def llama_vocab(n):
    """A llama/SentencePiece-style vocabulary of n tokens: <unk> <s> </s>, byte tokens,
    then word pieces. Returns (tokens, scores, token_types)."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]                       # unknown, control, control
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)                     # byte
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    i = 0
    while len(tokens) < n:
        word, k = "", i                     # i written in base 26: unique pieces
        while True:
            k, r = divmod(k, len(letters))
            word += letters[r]
            if k == 0:
                break
        tokens.append("\u2581" + word)
        types.append(1)                     # normal
        i += 1
    tokens, types = tokens[:n], types[:n]
    scores = [0.0 if t != 1 else -float(k) for k, t in enumerate(types)]
    return tokens, scores, types


# llama.cpp's llama_ftype of a file whose matrices are all of one type (or of the mixture)
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K": 15, "Q4_K_M": 15,
             "Q6_K": 18, "BF16": 32}

# Mixtures: (type of most matrices, {role: type}), a role being the GGUF name's part before
# ".weight" (blk.0.attn_v.weight -> attn_v). Q4_K_M keeps the value projections, the FFN down
# projections and the output head in Q6_K, as llama.cpp's Q4_K_M does (there for some layers).
MIXTURES = {"Q4_K_M": ("Q4_K", {"attn_v": "Q6_K", "ffn_down": "Q6_K", "output": "Q6_K"})}


def matrix_dtype(dtype, gguf_name):
    """The type a 2-D tensor is stored in, for a file of `dtype` (a type or a mixture)."""
    if dtype not in MIXTURES:
        return dtype
    base, special = MIXTURES[dtype]
    return special.get(gguf_name.split(".")[-2], base)


def llama_tokenizer_metadata(n):
    """The tokenizer.ggml.* keys of llama_vocab(n): <unk> 0, BOS 1, EOS 2."""
    tokens, scores, types = llama_vocab(n)
    return [
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (FLOAT32, scores)),
        ("tokenizer.ggml.token_type", ARRAY, (INT32, types)),
        ("tokenizer.ggml.bos_token_id", UINT32, 1),
        ("tokenizer.ggml.eos_token_id", UINT32, 2),
        ("tokenizer.ggml.unknown_token_id", UINT32, 0),
    ]


def rope_scaling_metadata(cfg):
    """llama.cpp's keys for linear and YaRN scaling; Llama 3's goes into the rope_freqs tensor."""
    rs = cfg.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind not in ("linear", "yarn"):
        return []
    md = [("llama.rope.scaling.type", STRING, kind), ("llama.rope.scaling.factor", FLOAT32, rs["factor"])]
    if "original_max_position_embeddings" in rs:
        md.append(("llama.rope.scaling.original_context_length", UINT32, rs["original_max_position_embeddings"]))
    return md


def rope_freqs_tensor(cfg):
    """Llama 3's "rope_freqs.weight" as llama.cpp's converter writes it: per pair, the plain
    frequency over the scaled one (F32)."""
    from reference import rope_frequencies
    plain = cfg.with_(rope_scaling=None)
    div = (rope_frequencies(plain)[0] / rope_frequencies(cfg)[0]).astype(np.float32)
    return Tensor("rope_freqs.weight", [cfg.head_dim // 2], dtypes.GGML_TYPE["F32"], dtypes.encode(div, "F32"))


def llama_metadata(cfg, alignment=32, name="infernode-test", dtype="F32"):
    file_type = FILE_TYPE[dtype]
    md = [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, name),
        ("general.alignment", UINT32, alignment),
        ("general.file_type", UINT32, file_type),
        ("llama.context_length", UINT32, cfg.context_length),
        ("llama.embedding_length", UINT32, cfg.dim),
        ("llama.block_count", UINT32, cfg.n_layers),
        ("llama.feed_forward_length", UINT32, cfg.hidden_dim),
        ("llama.attention.head_count", UINT32, cfg.n_heads),
        ("llama.attention.head_count_kv", UINT32, cfg.n_kv_heads),
        ("llama.rope.freq_base", FLOAT32, cfg.rope_theta),
        ("llama.attention.layer_norm_rms_epsilon", FLOAT32, cfg.norm_eps),
        ("llama.rope.dimension_count", UINT32, cfg.head_dim),
        ("llama.vocab_size", UINT32, cfg.vocab_size),
    ]
    md += rope_scaling_metadata(cfg)
    if cfg.head_dim * cfg.n_heads != cfg.dim:
        md += [("llama.attention.key_length", UINT32, cfg.head_dim),
               ("llama.attention.value_length", UINT32, cfg.head_dim)]
    return md + llama_tokenizer_metadata(cfg.vocab_size)


def llama_tensors(cfg, weights, dtype):
    """GGUF tensors of an HF-convention model with 2-D matrices stored as dtype (a type or a
    MIXTURES name) and norm weights as F32. Returns (tensors, weights a reader sees in HF
    convention)."""
    seen = {}
    tensors = []

    def add(gguf_name, hf_name, permute_heads=0):
        w = weights[hf_name]
        t = "F32" if w.ndim == 1 else matrix_dtype(dtype, gguf_name)
        stored = rope_interleave(w, permute_heads) if permute_heads else w
        data = dtypes.encode(stored, t)
        tensors.append(Tensor(gguf_name, list(reversed(w.shape)), dtypes.GGML_TYPE[t], data))
        # Quantization runs along rows and the permutation moves whole rows, so the values
        # a reader sees, un-permuted, are the round trip of the HF matrix.
        seen[hf_name] = dtypes.roundtrip(w, t)

    add("token_embd.weight", EMBED)
    for i in range(cfg.n_layers):
        n = layer_names(i)
        b = f"blk.{i}."
        add(b + "attn_norm.weight", n["attn_norm"])
        add(b + "attn_q.weight", n["wq"], cfg.n_heads)
        add(b + "attn_k.weight", n["wk"], cfg.n_kv_heads)
        add(b + "attn_v.weight", n["wv"])
        add(b + "attn_output.weight", n["wo"])
        add(b + "ffn_norm.weight", n["ffn_norm"])
        add(b + "ffn_gate.weight", n["w_gate"])
        add(b + "ffn_up.weight", n["w_up"])
        add(b + "ffn_down.weight", n["w_down"])
    add("output_norm.weight", FINAL_NORM)
    if not cfg.tied:
        add("output.weight", LM_HEAD)
    if (cfg.rope_scaling or {}).get("rope_type") == "llama3":
        tensors.append(rope_freqs_tensor(cfg))
    return tensors, seen


def write_llama(path, cfg, weights, dtype="F32", version=3, alignment=32):
    """Writes a whole model. Returns (weights a reader sees, Layout)."""
    tensors, seen = llama_tensors(cfg, weights, dtype)
    lay = write_gguf(path, llama_metadata(cfg, alignment, dtype=dtype), tensors, version,
                     alignment)
    return seen, lay
