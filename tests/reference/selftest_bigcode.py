#!/usr/bin/python3
"""Self-test of the GPT-BigCode reference side (no C involved):

1. bigcode_reference (NumPy, float64, KV cache, one loop per head) against a second forward
   pass written apart from it in this file (float64, whole sequence at once as Hugging Face's
   GPTBigCode computes it: KV heads repeated to the query heads, one masked softmax, LayerNorm
   through var, GELU through the logistic function or erfc): logits within 1e-10 of
   max|logit| on random models of odd shapes (MHA, GQA, MQA, tied, both GELUs, up to the full
   context) and on the golden configs, whose 32 greedy ids it recomputes too. Both GELUs are
   checked at table values of the normal CDF. (This replaced a PyTorch comparison, so that
   the suite needs no python3-torch: docs/layout.md, "Dependencies".)
2. The reference fed all at once, token by token and in chunks gives the same logits, and a
   later token does not change earlier ones.
3. Every golden case's file, read back by readback.py, holds exactly the tensors of the
   contract (names, shapes, types written out here) with the values the writer says a reader
   sees, and metadata/config.json describing the same model.
4. The golden tolerance (1e-4 of max|logit|) can see the mistakes an engine could make: the
   other GELU, dropped LayerNorm biases, no position embedding, K and V swapped, a query head
   reading the wrong KV head.
"""
import json
import math
import os
import sys
import tempfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import bigcode_cases  # noqa: E402
import dtypes  # noqa: E402
import readback  # noqa: E402
from bigcode_model import BigCodeConfig, random_model  # noqa: E402
from bigcode_reference import BigCodeReference, gelu as bigcode_gelu  # noqa: E402

TOL = 1e-10
GOLDEN_TOL = 1e-4
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


# Table values of the standard normal CDF Phi (x = 0.5, 1, 2, 3); the exact GELU is x Phi(x).
PHI = {0.5: 0.6914624612740131, 1.0: 0.8413447460685429, 2.0: 0.9772498680518208,
       3.0: 0.9986501019683699}


def second_gelu(x, approx):
    """GELU written apart from bigcode_reference's: the tanh form through the logistic
    function (0.5 (1 + tanh z) = sigmoid(2 z)), the exact form as x Phi(x) with Phi from
    math.erfc, whose values check_gelu compares with the table above."""
    if approx == "tanh":
        z = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return x / (1.0 + np.exp(-2.0 * z))
    phi = np.vectorize(lambda t: 0.5 * math.erfc(-t / math.sqrt(2.0)), otypes=[np.float64])
    return x * phi(x)


def second_layer_norm(x, w, b, eps):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


def sequence_logits(cfg, w, tokens):
    """Logits [T, vocab] of tokens at positions 0..T-1, float64, no cache: the whole sequence
    at once, KV heads expanded to the query heads (repeat), one masked softmax over
    [heads, T, T], as Hugging Face's GPTBigCodeAttention computes it. It shares no code with
    bigcode_reference (KV cache, a loop over heads, reference.causal_attention)."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    n = len(tokens)
    nh, nkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.dim // cfg.n_heads
    h = t["transformer.wte.weight"][np.asarray(tokens)] + t["transformer.wpe.weight"][:n]
    future = np.triu(np.ones((n, n), dtype=bool), 1)
    for i in range(cfg.n_layers):
        p = lambda s: t[f"transformer.h.{i}.{s}"]  # noqa: E731
        a = second_layer_norm(h, p("ln_1.weight"), p("ln_1.bias"), cfg.norm_eps)
        qkv = np.einsum("td,od->to", a, p("attn.c_attn.weight")) + p("attn.c_attn.bias")
        q, k, v = np.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
        q = q.reshape(n, nh, hd).transpose(1, 0, 2)                          # [nh, n, hd]
        k = np.repeat(k.reshape(n, nkv, hd).transpose(1, 0, 2), nh // nkv, axis=0)
        v = np.repeat(v.reshape(n, nkv, hd).transpose(1, 0, 2), nh // nkv, axis=0)
        s = np.einsum("hqd,hkd->hqk", q, k) / math.sqrt(hd)
        s[:, future] = -np.inf
        e = np.exp(s - s.max(-1, keepdims=True))
        o = np.einsum("hqk,hkd->qhd", e / e.sum(-1, keepdims=True), v).reshape(n, nh * hd)
        h = h + o @ p("attn.c_proj.weight").T + p("attn.c_proj.bias")
        m = second_layer_norm(h, p("ln_2.weight"), p("ln_2.bias"), cfg.norm_eps)
        f = second_gelu(m @ p("mlp.c_fc.weight").T + p("mlp.c_fc.bias"), cfg.gelu)
        h = h + f @ p("mlp.c_proj.weight").T + p("mlp.c_proj.bias")
    h = second_layer_norm(h, t["transformer.ln_f.weight"], t["transformer.ln_f.bias"],
                          cfg.norm_eps)
    head = t["transformer.wte.weight"] if cfg.tied else t["lm_head.weight"]
    return h @ head.T


def sequence_greedy(cfg, w, prompt, n_new):
    seq = list(prompt)
    for _ in range(n_new):
        seq.append(int(np.argmax(sequence_logits(cfg, w, seq)[-1])))
    return seq[len(prompt):]


def check_gelu():
    """Both GELUs at table points: the exact one is x Phi(x); the tanh form stays within its
    known approximation error (below 1e-3 absolute) of it; bigcode_reference's agree."""
    for x, phi in PHI.items():
        for sign in (1.0, -1.0):
            xs = np.array([sign * x])
            want = sign * x * (phi if sign > 0 else 1.0 - phi)
            for approx in ("none", "tanh"):
                mine, ref = second_gelu(xs, approx)[0], bigcode_gelu(xs, approx)[0]
                tol = 1e-15 if approx == "none" else 1e-3
                check(abs(mine - want) <= tol * max(1.0, abs(want)),
                      f"gelu {approx}({xs[0]}) = {mine!r}, table gives {want!r}")
                check(abs(mine - ref) <= 1e-14, f"gelu {approx}({xs[0]}): reference {ref!r}")
    print(f"GELU: exact form equals x Phi(x) at {len(PHI) * 2} table points, tanh form within "
          "1e-3 of it, the reference's agree")


RANDOM_CONFIGS = [
    (BigCodeConfig(dim=40, ffn_dim=72, n_layers=2, n_heads=5, n_kv_heads=1, vocab_size=57,
                   context_length=24), 101),
    (BigCodeConfig(dim=48, ffn_dim=100, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=61,
                   context_length=20, tied=True, gelu="none"), 102),
    (BigCodeConfig(dim=32, ffn_dim=64, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=50,
                   context_length=16, norm_eps=1e-3), 103),
]


def check_against_sequence():
    for cfg, seed in RANDOM_CONFIGS:
        w = random_model(cfg, seed)
        rng = np.random.default_rng(seed)
        tokens = [int(x) for x in rng.integers(0, cfg.vocab_size, cfg.context_length)]
        ref = BigCodeReference(cfg, w)
        got = ref.forward(tokens)
        e = rel(got, sequence_logits(cfg, w, tokens))
        check(e < TOL, f"random {cfg}: reference vs sequence {e:.1e}")
        print(f"random dim {cfg.dim} heads {cfg.n_heads}/{cfg.n_kv_heads} gelu {cfg.gelu} "
              f"tied {cfg.tied}, {len(tokens)} positions: reference vs sequence {e:.1e}")
        ref.reset()
        steps = np.concatenate([ref.forward([x]) for x in tokens])
        ref.reset()
        chunks = np.concatenate([ref.forward(tokens[:5]), ref.forward(tokens[5:11]),
                                 ref.forward(tokens[11:])])
        check(rel(steps, got) < TOL and rel(chunks, got) < TOL,
              f"random {cfg}: batch vs step vs chunks")
        ref.reset()
        head = ref.forward(tokens[:7])
        check(np.array_equal(head, got[:7]) or rel(head, got[:7]) < TOL, f"random {cfg}: causal")
    for name, (cfg, seed) in bigcode_cases.CONFIGS.items():
        w = random_model(cfg, seed)
        prompt = bigcode_cases.prompt_for(cfg, seed)
        logits, ids, steps = BigCodeReference(cfg, w).generate(prompt, bigcode_cases.N_NEW)
        e = rel(logits, sequence_logits(cfg, w, prompt))
        check(e < TOL, f"{name}: prompt logits vs sequence {e:.1e}")
        seq = list(prompt) + ids[:-1]
        e_steps = rel(steps, sequence_logits(cfg, w, seq)[len(prompt) - 1:])
        check(e_steps < TOL, f"{name}: generation logits vs sequence {e_steps:.1e}")
        tids = sequence_greedy(cfg, w, prompt, bigcode_cases.N_NEW)
        check(tids == ids, f"{name}: greedy ids vs sequence\n  {ids}\n  {tids}")
        print(f"{name}: reference vs sequence: prompt {e:.1e}, {len(ids)} generation steps "
              f"{e_steps:.1e}, ids {'identical' if tids == ids else 'DIFFER'}")


def check_sensitivity():
    """Each mistake moves the golden models' prompt logits by well over the tolerance."""
    for name in ("mqa-untied", "gqa2-untied", "mqa-erf"):
        cfg, seed = bigcode_cases.CONFIGS[name]
        w = random_model(cfg, seed)
        prompt = bigcode_cases.prompt_for(cfg, seed)
        good = BigCodeReference(cfg, w).forward(prompt)
        q, kv = cfg.q_dim, cfg.kv_dim

        def zeroed(*suffixes):
            return {k: (0 * v if k.endswith(suffixes) else v) for k, v in w.items()}

        def qkv_rows(order):
            out = dict(w)
            for i in range(cfg.n_layers):
                for s in ("weight", "bias"):
                    k = f"transformer.h.{i}.attn.c_attn.{s}"
                    out[k] = np.concatenate([w[k][a:b] for a, b in order])
            return out

        mistakes = {
            "other GELU": (cfg.with_(gelu="none" if cfg.gelu == "tanh" else "tanh"), w),
            "no LayerNorm biases": (cfg, zeroed("ln_1.bias", "ln_2.bias", "ln_f.bias")),
            "no linear biases": (cfg, zeroed("c_attn.bias", "c_proj.bias", "c_fc.bias")),
            "no position embedding": (cfg, zeroed("wpe.weight")),
            "K and V swapped": (cfg, qkv_rows([(0, q), (q + kv, q + 2 * kv), (q, q + kv)])),
        }
        if cfg.n_kv_heads > 1:      # query heads grouped h // group, not h % n_kv_heads
            hd, g = cfg.head_dim, cfg.n_heads // cfg.n_kv_heads
            perm = [h % g * cfg.n_kv_heads + h // g for h in range(cfg.n_heads)]
            rows = [(p * hd, p * hd + hd) for p in perm] + [(q, q + 2 * kv)]
            mistakes["KV heads interleaved"] = (cfg, qkv_rows(rows))
        for what, (c, wm) in mistakes.items():
            e = rel(BigCodeReference(c, wm).forward(prompt), good)
            check(e > 10 * GOLDEN_TOL, f"{name}: {what} moves logits only {e:.1e}")
            print(f"{name}: {what} moves the logits by {e:.1e} of max|logit|")


# The contract, written out: GGUF name -> (HF name, numpy shape), vectors F32.
def contract_gguf(cfg):
    d, f, v = cfg.dim, cfg.ffn_dim, cfg.vocab_size
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * (d // cfg.n_heads)
    t = {"token_embd.weight": ("transformer.wte.weight", (v, d)),
         "position_embd.weight": ("transformer.wpe.weight", (cfg.context_length, d)),
         "output_norm.weight": ("transformer.ln_f.weight", (d,)),
         "output_norm.bias": ("transformer.ln_f.bias", (d,))}
    if not cfg.tied:
        t["output.weight"] = ("lm_head.weight", (v, d))
    for i in range(cfg.n_layers):
        b, h = f"blk.{i}.", f"transformer.h.{i}."
        for g, hf, shape in (("attn_norm.weight", "ln_1.weight", (d,)),
                             ("attn_norm.bias", "ln_1.bias", (d,)),
                             ("attn_qkv.weight", "attn.c_attn.weight", (qkv, d)),
                             ("attn_qkv.bias", "attn.c_attn.bias", (qkv,)),
                             ("attn_output.weight", "attn.c_proj.weight", (d, d)),
                             ("attn_output.bias", "attn.c_proj.bias", (d,)),
                             ("ffn_norm.weight", "ln_2.weight", (d,)),
                             ("ffn_norm.bias", "ln_2.bias", (d,)),
                             ("ffn_up.weight", "mlp.c_fc.weight", (f, d)),
                             ("ffn_up.bias", "mlp.c_fc.bias", (f,)),
                             ("ffn_down.weight", "mlp.c_proj.weight", (d, f)),
                             ("ffn_down.bias", "mlp.c_proj.bias", (d,))):
            t[b + g] = (h + hf, shape)
    return t


def check_gguf(name, path, cfg, dtype, seen):
    version, md, tensors = readback.read_gguf(path)
    a = "starcoder."
    want_md = {"general.architecture": "starcoder", a + "context_length": cfg.context_length,
               a + "embedding_length": cfg.dim, a + "feed_forward_length": cfg.ffn_dim,
               a + "block_count": cfg.n_layers, a + "attention.head_count": cfg.n_heads,
               a + "attention.head_count_kv": cfg.n_kv_heads}
    for k, v in want_md.items():
        check(md.get(k) == v, f"{name}: metadata {k} = {md.get(k)!r}, expected {v!r}")
    eps = md.get(a + "attention.layer_norm_epsilon")
    check(eps is not None and np.float32(eps) == np.float32(cfg.norm_eps), f"{name}: eps {eps}")
    check(len(md.get("tokenizer.ggml.tokens", [])) == cfg.vocab_size, f"{name}: vocab size")
    contract = contract_gguf(cfg)
    check(sorted(tensors) == sorted(contract), f"{name}: tensor names {sorted(tensors)}")
    got = {}
    for gname, (hf, shape) in contract.items():
        if gname not in tensors:
            continue
        ne, tn, b = tensors[gname]
        check(ne == list(reversed(shape)), f"{name}: {gname} ne {ne}, expected {shape[::-1]}")
        check(tn == ("F32" if len(shape) == 1 else dtype), f"{name}: {gname} stored as {tn}")
        got[hf] = dtypes.decode(b, tn, shape)
    return got


def check_hf(name, path, cfg, opts, seen):
    c = json.load(open(os.path.join(path, "config.json")))
    check(c["model_type"] == "gpt_bigcode" and c["architectures"] == ["GPTBigCodeForCausalLM"]
          and c["multi_query"] is True and c["scale_attn_weights"] is True,
          f"{name}: config.json model_type/architectures/multi_query/scale_attn_weights")
    check((c["n_inner"] is None) == bool(opts.get("n_inner_null")), f"{name}: n_inner")
    gelu = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh",
            "gelu": "none"}[c["activation_function"]]
    read = BigCodeConfig(dim=c["n_embd"], ffn_dim=c["n_inner"] or 4 * c["n_embd"],
                         n_layers=c["n_layer"], n_heads=c["n_head"], n_kv_heads=1,
                         vocab_size=c["vocab_size"], context_length=c["n_positions"],
                         norm_eps=c["layer_norm_epsilon"], tied=c["tie_word_embeddings"],
                         gelu=gelu)
    check(read == cfg, f"{name}: config.json describes {read}, not {cfg}")
    check(c["torch_dtype"] == {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[
        opts["dtype"]], f"{name}: torch_dtype {c['torch_dtype']}")
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    check(len(files) == opts.get("shards", 1), f"{name}: safetensors files {files}")
    for f in files:
        with open(os.path.join(path, f), "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        bad = [k for k, e in header.items() if k != "__metadata__" and e["dtype"] != opts["dtype"]]
        check(not bad, f"{name}: {f}: tensors not in {opts['dtype']}: {bad[:3]}")
    got = readback.hf_weights(path)
    want = {hf: shape for hf, shape in contract_gguf(cfg).values()}
    check(sorted(got) == sorted(want), f"{name}: tensor names {sorted(set(got) ^ set(want))}")
    for k, shape in want.items():
        if k in got:
            check(got[k].shape == shape, f"{name}: {k} shape {got[k].shape}, expected {shape}")
    return got


def check_writers():
    tmp = tempfile.mkdtemp(prefix="selftest_bigcode_")
    for label, cfg_name, kind, opts in bigcode_cases.CASES:
        cfg, seed = bigcode_cases.CONFIGS[cfg_name]
        name = bigcode_cases.case_name(label, cfg_name)
        path = bigcode_cases.model_path(tmp, label, cfg_name, kind)
        w = random_model(cfg, seed)
        seen = bigcode_cases.write_model(kind, opts, path, cfg, w)
        if kind == "gguf":
            got = check_gguf(name, path, cfg, opts["dtype"], seen)
        else:
            got = check_hf(name, path, cfg, opts, seen)
        check(set(got) == set(seen), f"{name}: read back tensors differ from the written ones")
        differ = [k for k in seen if k in got and not np.array_equal(got[k], seen[k])]
        check(not differ, f"{name}: read back values differ: {differ[:3]}")
        err = max(np.abs(seen[k] - w[k]).max() / np.abs(w[k]).max() for k in seen)
        print(f"{name}: read back exactly, {len(seen)} tensors, stored values within "
              f"{err:.1e} of the float32 weights")


def main():
    check_gelu()
    check_against_sequence()
    check_sensitivity()
    check_writers()
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("PASS: the BigCode reference agrees with the second forward pass and the writers "
          "with the readers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
