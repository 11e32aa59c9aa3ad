#!/usr/bin/python3
"""Exports a trained model (train.py's model.pt + the SentencePiece tokenizer) to GGUF, and a
GGUF file to a Hugging Face directory.

  export.py gguf --model model.pt --tokenizer tokenizer.model --out X.gguf --name NAME
                 [--dtype F16|BF16|F32]
      GGUF v3, general.architecture "llama": 2-D matrices as --dtype, norm weights F32, Q/K
      rows permuted for RoPE on adjacent pairs as llama.cpp's converter does, the tokenizer
      as tokenizer.ggml.* keys (SentencePiece BPE with byte fallback, no space prefix).
      Needs python3-torch and python3-sentencepiece.

  export.py hf --gguf X.gguf --out DIR
      DIR/config.json, model.safetensors (the GGUF's stored values, same dtypes, Q/K back in
      Hugging Face's rotate-half order), tokenizer.json, tokenizer_config.json. NumPy only,
      so CI can rebuild the directory from the shipped file.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

import gguf

META = "\u2581"
# token types of tokenizer.ggml.token_type
T_NORMAL, T_UNKNOWN, T_CONTROL, T_USER, T_UNUSED, T_BYTE = 1, 2, 3, 4, 5, 6

# (GGUF name, Hugging Face name) per layer; "q"/"k" rows are permuted in GGUF
LAYER_NAMES = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
]


def name_map(n_layers, tied):
    """[(GGUF tensor name, HF tensor name)] in file order."""
    out = [("token_embd.weight", "model.embed_tokens.weight")]
    for i in range(n_layers):
        for g, h in LAYER_NAMES:
            out.append(("blk.%d.%s.weight" % (i, g), "model.layers.%d.%s.weight" % (i, h)))
    out.append(("output_norm.weight", "model.norm.weight"))
    if not tied:
        out.append(("output.weight", "lm_head.weight"))
    return out


def rope_interleave(w, n_heads):
    """HF rows -> GGUF rows: within a head, row j goes to 2j and row j + hd/2 to 2j + 1."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.reshape(n_heads, 2, hd // 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def rope_deinterleave(w, n_heads):
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.reshape(n_heads, hd // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


# ---------------------------------------------------------------- tokenizer

def spm_vocab(model_path):
    """(tokens, scores, types) of a SentencePiece model."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(T_UNKNOWN)
        elif sp.is_control(i):
            types.append(T_CONTROL)
        elif sp.is_byte(i):
            types.append(T_BYTE)
        elif sp.is_unused(i):
            types.append(T_UNUSED)
        else:
            types.append(T_NORMAL)
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    return tokens, scores, types


def tokenizer_metadata(tokens, scores, types):
    G = gguf
    return [
        ("tokenizer.ggml.model", G.STRING, "llama"),
        ("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, tokens)),
        ("tokenizer.ggml.scores", G.ARRAY, (G.FLOAT32, scores)),
        ("tokenizer.ggml.token_type", G.ARRAY, (G.INT32, types)),
        ("tokenizer.ggml.unknown_token_id", G.UINT32, 0),
        ("tokenizer.ggml.bos_token_id", G.UINT32, 1),
        ("tokenizer.ggml.eos_token_id", G.UINT32, 2),
        ("tokenizer.ggml.add_bos_token", G.BOOL, True),
        ("tokenizer.ggml.add_eos_token", G.BOOL, False),
        # trained with add_dummy_prefix=False: nothing is put in front of the text
        ("tokenizer.ggml.add_space_prefix", G.BOOL, False),
    ]


def spm_merges(tokens, scores, types):
    """BPE merges equivalent to merging by score, derived as Hugging Face's Llama converter
    does: every split of a normal piece into two pieces is a merge, merges ordered by the
    merged piece's score (ties keep vocabulary order)."""
    vocab = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    merges = []
    for i, piece in enumerate(tokens):
        if types[i] != T_NORMAL:
            continue
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, scores[i]))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    return [[left, right] for left, right, _ in merges]


def tokenizer_json(tokens, scores, types):
    """tokenizer.json and tokenizer_config.json of the SentencePiece vocabulary (no dummy
    prefix: the normalizer only replaces spaces with U+2581, and the decoder strips
    nothing)."""
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (T_UNKNOWN, T_CONTROL)]
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"String": " "}, "content": META}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tokens[1], "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tokens[1], "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": tokens[1], "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tokens[1]: {"id": tokens[1], "ids": [1], "tokens": [tokens[1]]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": tokens[0],
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": spm_merges(tokens, scores, types),
        },
    }
    config = {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True,
              "add_eos_token": False, "add_prefix_space": False, "legacy": False,
              "bos_token": tokens[1], "eos_token": tokens[2], "unk_token": tokens[0],
              "model_max_length": None, "clean_up_tokenization_spaces": False}
    return tj, config


# ---------------------------------------------------------------- GGUF

def write_gguf(path, cfg, weights, vocab, name, dtype="F16"):
    """cfg: model.Config; weights: {HF name: float32 array}; vocab: (tokens, scores, types)."""
    G = gguf
    md = [
        ("general.architecture", G.STRING, "llama"),
        ("general.name", G.STRING, name),
        ("general.alignment", G.UINT32, G.ALIGNMENT),
        ("general.file_type", G.UINT32, G.FILE_TYPE[dtype]),
        ("llama.context_length", G.UINT32, cfg.context),
        ("llama.embedding_length", G.UINT32, cfg.dim),
        ("llama.block_count", G.UINT32, cfg.n_layers),
        ("llama.feed_forward_length", G.UINT32, cfg.ffn_dim),
        ("llama.attention.head_count", G.UINT32, cfg.n_heads),
        ("llama.attention.head_count_kv", G.UINT32, cfg.n_kv_heads),
        ("llama.rope.freq_base", G.FLOAT32, cfg.rope_theta),
        ("llama.rope.dimension_count", G.UINT32, cfg.head_dim),
        ("llama.attention.layer_norm_rms_epsilon", G.FLOAT32, cfg.norm_eps),
        ("llama.vocab_size", G.UINT32, cfg.vocab_size),
    ]
    if cfg.head_dim * cfg.n_heads != cfg.dim:
        md += [("llama.attention.key_length", G.UINT32, cfg.head_dim),
               ("llama.attention.value_length", G.UINT32, cfg.head_dim)]
    md += tokenizer_metadata(*vocab)
    tensors = []
    for gname, hname in name_map(cfg.n_layers, cfg.tied):
        w = np.asarray(weights[hname], dtype=np.float32)
        if ".attn_q." in gname:
            w = rope_interleave(w, cfg.n_heads)
        elif ".attn_k." in gname:
            w = rope_interleave(w, cfg.n_kv_heads)
        tensors.append((gname, w, "F32" if w.ndim == 1 else dtype))
    gguf.write(path, md, tensors)


def read_gguf_model(path):
    """(config dict, {HF name: float32 array of the stored values, in HF row order}, file)."""
    f = gguf.GGUF(path)
    m = f.meta
    if m.get("general.architecture") != "llama":
        raise ValueError("%s: general.architecture is %r, not llama"
                         % (path, m.get("general.architecture")))
    n_heads = m["llama.attention.head_count"]
    dim = m["llama.embedding_length"]
    cfg = {
        "vocab_size": len(m["tokenizer.ggml.tokens"]),
        "dim": dim,
        "n_layers": m["llama.block_count"],
        "n_heads": n_heads,
        "n_kv_heads": m.get("llama.attention.head_count_kv", n_heads),
        "ffn_dim": m["llama.feed_forward_length"],
        "context": m["llama.context_length"],
        "rope_theta": m.get("llama.rope.freq_base", 10000.0),
        "norm_eps": m["llama.attention.layer_norm_rms_epsilon"],
        "tied": "output.weight" not in f.tensors,
        "head_dim": m.get("llama.attention.key_length", dim // n_heads),
    }
    weights = {}
    for gname, hname in name_map(cfg["n_layers"], cfg["tied"]):
        w = f.tensor(gname)
        if ".attn_q." in gname:
            w = rope_deinterleave(w, cfg["n_heads"])
        elif ".attn_k." in gname:
            w = rope_deinterleave(w, cfg["n_kv_heads"])
        weights[hname] = w
    return cfg, weights, f


# ---------------------------------------------------------------- Hugging Face

TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def write_safetensors(path, entries):
    """entries: [(name, dtype string, shape, raw bytes)]."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, data in entries:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h)
        for e in entries:
            fh.write(e[3])


def write_hf_from_gguf(gguf_path, out_dir):
    cfg, _, f = read_gguf_model(gguf_path)
    os.makedirs(out_dir, exist_ok=True)
    matrix_dtype = "F16"
    entries = []
    for gname, hname in name_map(cfg["n_layers"], cfg["tied"]):
        dtype, shape, data = f.tensors[gname]
        if len(shape) == 2:
            matrix_dtype = dtype
        if ".attn_q." in gname or ".attn_k." in gname:
            # move whole rows back to HF order; the stored bytes of each row are unchanged
            heads = cfg["n_heads"] if ".attn_q." in gname else cfg["n_kv_heads"]
            rows = np.frombuffer(data, dtype=np.uint8).reshape(shape[0], -1)
            data = rope_deinterleave(rows, heads).tobytes()
        entries.append((hname, dtype, shape, data))
    write_safetensors(os.path.join(out_dir, "model.safetensors"), entries)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["ffn_dim"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_kv_heads"],
        "num_hidden_layers": cfg["n_layers"],
        "head_dim": cfg["head_dim"],
        "hidden_act": "silu",
        "rms_norm_eps": cfg["norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg["context"],
        "tie_word_embeddings": cfg["tied"],
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": TORCH_DTYPE[matrix_dtype],
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    m = f.meta
    tj, tcfg = tokenizer_json(m["tokenizer.ggml.tokens"], m["tokenizer.ggml.scores"],
                              m["tokenizer.ggml.token_type"])
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(tj, fh, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(tcfg, fh, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as fh:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, fh, indent=2)


# ---------------------------------------------------------------- main

def load_checkpoint(path):
    """(model.Config, {HF name: float32 array}) from train.py's model.pt."""
    import torch
    import model as M
    ck = torch.load(path, map_location="cpu")
    cfg = M.Config(**ck["config"])
    net = M.Llama(cfg)
    net.load_state_dict(ck["model"])
    sd = M.hf_state_dict(net)
    return cfg, {k: v.detach().float().numpy() for k, v in sd.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gguf")
    g.add_argument("--model", required=True)
    g.add_argument("--tokenizer", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--name", required=True)
    g.add_argument("--dtype", default="F16", choices=["F16", "BF16", "F32"])
    h = sub.add_parser("hf")
    h.add_argument("--gguf", required=True)
    h.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "gguf":
        cfg, weights = load_checkpoint(args.model)
        write_gguf(args.out, cfg, weights, spm_vocab(args.tokenizer), args.name, args.dtype)
        print("%s: %d parameters, %d bytes" % (args.out, sum(w.size for w in weights.values()),
                                              os.path.getsize(args.out)))
    else:
        write_hf_from_gguf(args.gguf, args.out)
        print("%s -> %s" % (args.gguf, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
