"""Writers of a GPT-BigCode model (bigcode_model.py) in the two formats the engine reads.

GGUF, llama.cpp's architecture "starcoder" (gguf_write.write_gguf does the bytes):
  metadata  general.architecture = "starcoder"; u32 starcoder.{context_length,
            embedding_length, feed_forward_length, block_count, attention.head_count,
            attention.head_count_kv}; f32 starcoder.attention.layer_norm_epsilon; the
            tokenizer keys of the llama test files (gguf_write.llama_vocab)
  tensors   token_embd.weight [vocab, dim], position_embd.weight [ctx, dim],
            blk.N.{attn_norm, ffn_norm}.{weight, bias} [dim],
            blk.N.attn_qkv.weight [q_dim + 2 kv_dim, dim] + .bias, rows Q, K, V,
            blk.N.attn_output.weight [dim, q_dim] + .bias [dim],
            blk.N.ffn_up.weight [ffn, dim] + .bias [ffn], blk.N.ffn_down.weight [dim, ffn]
            + .bias [dim], output_norm.{weight, bias}, output.weight [vocab, dim] unless tied
  (shapes numpy [out, in], stored as GGUF ne {in, out}). Vectors are F32; matrices, the
  embeddings included, are in the file's dtype as the llama writer stores them. The FFN
  activation is always the tanh GELU.

HF directory, model_type "gpt_bigcode": config.json (n_embd, n_layer, n_head, n_positions,
n_inner or null for 4 n_embd, multi_query true, activation_function, ...) and safetensors
under the names of bigcode_model.py, every tensor in the directory's dtype. No tokenizer:
the tests feed token ids.
"""
import json
import os

import dtypes
import gguf_write
import safetensors_write
from bigcode_model import LM_HEAD, LN_F_B, LN_F_W, WPE, WTE, hf_shapes, layer_names
from gguf_write import FLOAT32, STRING, UINT32, Tensor

# layer role -> GGUF name under blk.N.
GGUF_ROLES = {
    "ln_1_w": "attn_norm.weight", "ln_1_b": "attn_norm.bias",
    "qkv_w": "attn_qkv.weight", "qkv_b": "attn_qkv.bias",
    "o_w": "attn_output.weight", "o_b": "attn_output.bias",
    "ln_2_w": "ffn_norm.weight", "ln_2_b": "ffn_norm.bias",
    "fc_w": "ffn_up.weight", "fc_b": "ffn_up.bias",
    "proj_w": "ffn_down.weight", "proj_b": "ffn_down.bias",
}


def gguf_names(cfg):
    """HF name -> GGUF name, in the order the tensors are written."""
    names = {WTE: "token_embd.weight", WPE: "position_embd.weight"}
    for i in range(cfg.n_layers):
        for role, hf in layer_names(i).items():
            names[hf] = f"blk.{i}.{GGUF_ROLES[role]}"
    names[LN_F_W] = "output_norm.weight"
    names[LN_F_B] = "output_norm.bias"
    if not cfg.tied:
        names[LM_HEAD] = "output.weight"
    return names


def starcoder_metadata(cfg, dtype="F32", alignment=32, name="infernode-test"):
    if cfg.gelu != "tanh":
        raise ValueError("GGUF starcoder has only the tanh GELU")
    a = "starcoder."
    return [
        ("general.architecture", STRING, "starcoder"),
        ("general.name", STRING, name),
        ("general.alignment", UINT32, alignment),
        ("general.file_type", UINT32, gguf_write.FILE_TYPE[dtype]),
        (a + "context_length", UINT32, cfg.context_length),
        (a + "embedding_length", UINT32, cfg.dim),
        (a + "feed_forward_length", UINT32, cfg.ffn_dim),
        (a + "block_count", UINT32, cfg.n_layers),
        (a + "attention.head_count", UINT32, cfg.n_heads),
        (a + "attention.head_count_kv", UINT32, cfg.n_kv_heads),
        (a + "attention.layer_norm_epsilon", FLOAT32, cfg.norm_eps),
    ] + gguf_write.llama_tokenizer_metadata(cfg.vocab_size)


def starcoder_tensors(cfg, weights, dtype):
    """GGUF tensors with vectors in F32 and matrices in dtype (a type or a gguf_write
    MIXTURES name). Returns (tensors, weights a reader sees under the HF names)."""
    tensors, seen = [], {}
    for hf, name in gguf_names(cfg).items():
        w = weights[hf]
        t = "F32" if w.ndim == 1 else gguf_write.matrix_dtype(dtype, name)
        tensors.append(Tensor(name, list(reversed(w.shape)), dtypes.GGML_TYPE[t],
                              dtypes.encode(w, t)))
        seen[hf] = dtypes.roundtrip(w, t)
    return tensors, seen


def write_starcoder(path, cfg, weights, dtype="F32", version=3, alignment=32):
    """Writes a whole model. Returns (weights a reader sees, Layout)."""
    tensors, seen = starcoder_tensors(cfg, weights, dtype)
    lay = gguf_write.write_gguf(path, starcoder_metadata(cfg, dtype, alignment), tensors,
                                version, alignment)
    return seen, lay


# HF activation_function names of each GELU (transformers' ACT2FN)
HF_ACTIVATIONS = {"tanh": ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"), "none": ("gelu",)}


def hf_config(cfg, dtype="F32", activation=None, n_inner_null=False):
    """config.json of GPTBigCodeForCausalLM. activation: one of HF_ACTIVATIONS[cfg.gelu]
    (default its first); n_inner_null writes n_inner null, which means 4 n_embd."""
    if cfg.n_kv_heads != 1:
        raise ValueError("HF gpt_bigcode has one KV head (multi_query) or n_heads")
    activation = activation or HF_ACTIVATIONS[cfg.gelu][0]
    if activation not in HF_ACTIVATIONS[cfg.gelu]:
        raise ValueError(f"activation {activation} is not the {cfg.gelu} GELU")
    if n_inner_null and cfg.ffn_dim != 4 * cfg.dim:
        raise ValueError("n_inner null means 4 n_embd")
    return {
        "architectures": ["GPTBigCodeForCausalLM"],
        "model_type": "gpt_bigcode",
        "n_embd": cfg.dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_positions": cfg.context_length,
        "n_inner": None if n_inner_null else cfg.ffn_dim,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": cfg.norm_eps,
        "multi_query": True,
        "activation_function": activation,
        "scale_attn_weights": True,
        "attention_softmax_in_fp32": True,
        "scale_attention_softmax_in_fp32": True,
        "tie_word_embeddings": cfg.tied,
        "torch_dtype": safetensors_write.TORCH_DTYPE[dtype],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "use_cache": True,
    }


def write_hf(directory, cfg, weights, dtype="F32", shards=1, activation=None,
             n_inner_null=False):
    """Writes config.json and the weights (every tensor as dtype). Returns the weights a
    reader sees."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(cfg, dtype, activation, n_inner_null), f, indent=2)
    names = list(hf_shapes(cfg))
    entries = [(n, dtype, weights[n].shape, dtypes.encode(weights[n], dtype)) for n in names]
    safetensors_write.write_safetensors(directory, entries, shards)
    return {n: dtypes.roundtrip(weights[n], dtype) for n in names}
