#!/usr/bin/python3
"""Writes the fuzz harnesses' seed corpora (tests/fuzz/corpus/<harness>/) and the fixed
weights of fuzz_hf_config (tests/fuzz/data/), all small and deterministic, with the writers of
the NumPy reference (tests/reference/). The output is committed; run this again after changing
it:

  tests/fuzz/make_corpus.py [--out DIR]   (default: the folder of this script)"""
import argparse
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402

import dtypes  # noqa: E402
import gguf_write  # noqa: E402
import gptq_write  # noqa: E402
import llama2c_io  # noqa: E402
import safetensors_write  # noqa: E402
from llama_model import LlamaConfig, hf_shapes, random_model  # noqa: E402

# Tiny shapes: a seed should be a few KB so that the fuzzer's mutations stay cheap.
CFG = LlamaConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=64,
                  context_length=16, tied=True)
SEED = 7


def put(out, harness, name, data):
    d = os.path.join(out, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gguf_seeds(out, tmp):
    w = random_model(CFG, SEED)
    for dtype in ("Q8_0", "Q4_0"):  # F16 tensors: the safetensors and GPTQ seeds
        path = os.path.join(tmp, "m.gguf")
        gguf_write.write_llama(path, CFG, w, dtype)
        put(out, "gguf", f"llama-{dtype.lower()}.gguf", open(path, "rb").read())
    # metadata only: a 300-token vocabulary with all 256 byte tokens, no tensors
    path = os.path.join(tmp, "t.gguf")
    gguf_write.write_gguf(path, gguf_write.llama_tokenizer_metadata(300), [])
    put(out, "gguf", "tokenizer-only.gguf", open(path, "rb").read())


def hf_entries(cfg, w, dtype):
    return [(n, dtype, w[n].shape, dtypes.encode(w[n], dtype)) for n in hf_shapes(cfg)]


def safetensors_seeds(out):
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((4, 4)).astype(np.float32)
    entries = [("a", "F32", a.shape, dtypes.encode(a, "F32")),
               ("b", "BF16", (8,), dtypes.encode(rng.standard_normal(8), "BF16")),
               ("c", "F16", (2, 1, 3), dtypes.encode(rng.standard_normal((2, 1, 3)), "F16")),
               ("d", "I32", (2, 3), np.arange(6, dtype="<i4").tobytes()),
               ("e", "F32", (), dtypes.encode(np.float32(1.5).reshape(()), "F32"))]
    put(out, "safetensors", "mixed.safetensors", safetensors_write.safetensors_bytes(entries))
    w = random_model(CFG, SEED)
    put(out, "safetensors", "llama-f16.safetensors", safetensors_write.safetensors_bytes(hf_entries(CFG, w, "F16")))


def hf_config_seeds(out):
    w = random_model(CFG, SEED)
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    with open(os.path.join(out, "data", "hf_weights.safetensors"), "wb") as f:
        f.write(safetensors_write.safetensors_bytes(hf_entries(CFG, w, "F16")))
    good = safetensors_write.hf_config(CFG, "F16")
    put(out, "hf_config", "llama.json", json.dumps(good, indent=1).encode())
    put(out, "hf_config", "mistral.json", json.dumps({**good, "model_type": "mistral", "sliding_window": 8,
                                                      "rope_scaling": None}).encode())
    bigcode = {"model_type": "gpt_bigcode", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_inner": 64,
               "vocab_size": 64, "n_positions": 16, "multi_query": True, "layer_norm_epsilon": 1e-5,
               "activation_function": "gelu_pytorch_tanh", "tie_word_embeddings": True}
    put(out, "hf_config", "gpt_bigcode.json", json.dumps(bigcode).encode())
    quant = gptq_write.quant_config(gptq_write.Options(group_size=32, act_order=True, sym=False))
    put(out, "hf_config", "llama-gptq.json", json.dumps({**good, "quantization_config": quant}).encode())
    put(out, "hf_config", "numbers.json", json.dumps({**good, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
                                                      "head_dim": 16.0}).encode())
    # 1e999 parses to inf: the reader once cast it to long before its range check
    put(out, "hf_config", "inf.json", json.dumps(good).replace('"hidden_size": 32', '"hidden_size": 1e999').encode())


def gptq_seeds(out):
    w = random_model(CFG, SEED)
    variants = {"act-order-asym-g32": gptq_write.Options(group_size=32, act_order=True, sym=False),
                "sym-per-row-v2": gptq_write.Options(group_size=-1, sym=True, checkpoint_format="gptq_v2")}
    for name, opts in variants.items():
        entries, _ = gptq_write.quantize_model(CFG, w, opts)
        config = {**safetensors_write.hf_config(CFG, "F16"), "quantization_config": gptq_write.quant_config(opts)}
        blob = json.dumps(config).encode() + b"\0" + safetensors_write.safetensors_bytes(entries)
        put(out, "gptq", name, blob)


def llama2c_seeds(out, tmp):
    cfg = CFG.with_(n_kv_heads=2, dim=16, head_dim=8, hidden_dim=32, vocab_size=32, context_length=8)
    w = random_model(cfg, SEED)
    for tied in (True, False):
        c = cfg.with_(tied=tied)
        if not tied:
            w = {**w, "lm_head.weight": w["model.embed_tokens.weight"] * 0.5}
        path = os.path.join(tmp, "m.bin")
        llama2c_io.write(path, c, w)
        put(out, "llama2c", f"{'tied' if tied else 'untied'}.bin", open(path, "rb").read())


def byte_chars():
    """GPT-2's printable stand-in character of each byte."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def tokenizer_json_seeds(out):
    meta = "\u2581"
    spm = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [meta, "a", "b", meta + "a", "ab", meta + "ab"]
    llama2 = {"model": {"type": "BPE", "byte_fallback": True, "fuse_unk": True, "unk_token": "<unk>",
                        "vocab": {t: i for i, t in enumerate(spm)},
                        "merges": [f"{meta} a", "a b", f"{meta}a b"]},
              "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": meta},
                                                                 {"type": "Replace", "pattern": {"String": " "},
                                                                  "content": meta}]},
              "pre_tokenizer": None,
              "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
              "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                               {"id": 1, "content": "<s>", "special": True},
                               {"id": 2, "content": "</s>", "special": True}],
              "post_processor": {"type": "TemplateProcessing",
                                 "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]}}
    config = {"add_bos_token": True, "bos_token": "<s>", "eos_token": {"content": "</s>"}}
    put(out, "tokenizer_json", "llama2-metaspace.json",
        json.dumps(llama2).encode() + b"\0" + json.dumps(config).encode())
    put(out, "tokenizer_json", "metaspace-pretok.json", json.dumps(
        {**llama2, "normalizer": None,
         "pre_tokenizer": {"type": "Metaspace", "replacement": meta, "prepend_scheme": "first", "split": False}}).encode())
    bc = byte_chars()
    g = bc[ord(" ")]
    vocab = [bc[b] for b in range(256)] + [g + "t", "he", g + "the", "<|endoftext|>"]
    gpt2 = {"model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(vocab)},
                      "merges": [f"{g} t", "h e", [g + "t", "he"]]},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "decoder": {"type": "ByteLevel"},
            "added_tokens": [{"id": len(vocab) - 1, "content": "<|endoftext|>", "special": True,
                              "lstrip": False, "rstrip": True}]}
    put(out, "tokenizer_json", "gpt2-bytelevel.json", json.dumps(gpt2).encode())
    starcoder = {**gpt2, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]}}
    put(out, "tokenizer_json", "starcoder-digits.json", json.dumps(starcoder).encode())
    put(out, "tokenizer_json", "inf-id.json", json.dumps(gpt2).replace('"he": 257', '"he": -1e999').encode())
    llama3_re = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    llama3 = {**gpt2, "model": {**gpt2["model"], "ignore_merges": True},
              "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                  {"type": "Split", "pattern": {"Regex": llama3_re}, "behavior": "Isolated", "invert": False},
                  {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}}
    put(out, "tokenizer_json", "llama3-split.json", json.dumps(llama3).encode())


TEXTS = [b"def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
         b"Hello world! 1234567 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
         b"<s>[INST] hi [/INST]</s> <|endoftext|> <fim_prefix>a<fim_suffix>b<fim_middle>",
         b"  \t\n\n   x\r\n\xff\xfe\xc3 trailing  ",
         b"", b"    ", b"a"]


def tokenize_seeds(out):
    for i, text in enumerate(TEXTS):
        for mode in range(0, 16, 5):
            put(out, "tokenize", f"text{i}-mode{mode}", bytes([mode * 3 + i % 3]) + text)
    put(out, "tokenize", "fim", bytes([4 * 3]) + b"def f(x):\n    \0\n    return y\n")


def detokenize_seeds(out):
    rng = np.random.default_rng(SEED)
    for i in range(6):
        ids = rng.integers(0, 1 << 16, 12 if i < 4 else 40)
        put(out, "detokenize", f"ids{i}", bytes([i * 7 % 256]) + struct.pack(f"<{len(ids)}H", *ids))
    put(out, "detokenize", "low-ids", bytes([0]) + struct.pack("<12H", *range(0, 24, 2)))


def varint(n):
    n &= (1 << 64) - 1
    b = bytearray()
    while True:
        b.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(b)


def field(num, value):
    """A protobuf field: int -> varint, float -> fixed32, bytes/str -> length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(num << 3) + varint(int(value))
    if isinstance(value, float):
        return varint(num << 3 | 5) + struct.pack("<f", value)
    value = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | 2) + varint(len(value)) + value


GENERATE, STREAM, TOKENIZE, DETOKENIZE, MODEL_INFO, DELETE_SESSION = range(6)


def request_seeds(out):
    sampling = field(1, 0.7) + field(2, 40) + field(3, 0.9) + field(4, 0.05) + field(5, 1.1) + field(6, 42)
    kv = field(1, 32) + field(2, 4) + field(3, -1)
    reqs = {
        "generate-text": (GENERATE, field(1, "def f(x):") + field(3, 8)),
        "generate-full": (STREAM, field(1, "import os\n") + field(3, 16) + field(4, sampling) + field(5, "\n\n")
                          + field(5, "return") + field(6, True) + field(7, False) + field(9, kv)
                          + field(10, field(1, True) + field(2, 3)) + field(11, True)),
        "generate-ids": (GENERATE, field(2, b"".join(field(1, i) for i in (1, 5, 7, 300))) + field(3, 4)),
        "generate-session": (6 + GENERATE, field(1, "x") + field(3, 2) + field(8, "0123456789abcdef")),
        "generate-fim": (6 + STREAM, field(12, field(1, "def f(x):\n    ") + field(2, "\n    return y\n")) + field(3, 4)),
        "tokenize": (TOKENIZE, field(1, "<s>hello world") + field(2, True) + field(3, True)),
        "tokenize-fim": (TOKENIZE, field(4, field(1, "a") + field(2, "b")) + field(2, True)),
        "detokenize": (DETOKENIZE, b"".join(field(1, i) for i in (1, 50, 300, 2000)) + field(2, True)),
        "model-info": (MODEL_INFO, b""),
        "delete-session": (DELETE_SESSION, field(1, "0123456789abcdef")),
    }
    for name, (method, msg) in reqs.items():
        put(out, "request", name, bytes([method]) + msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=HERE)
    out = ap.parse_args().out
    shutil.rmtree(os.path.join(out, "corpus"), ignore_errors=True)
    tmp = os.path.join(out, ".tmp")
    os.makedirs(tmp, exist_ok=True)
    try:
        gguf_seeds(out, tmp)
        safetensors_seeds(out)
        hf_config_seeds(out)
        gptq_seeds(out)
        llama2c_seeds(out, tmp)
        tokenizer_json_seeds(out)
        tokenize_seeds(out)
        detokenize_seeds(out)
        request_seeds(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
