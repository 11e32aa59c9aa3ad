#!/usr/bin/python3
"""The engine on the shipped models.

For each model (a GGUF file; its Hugging Face directory is WORK/<name without .gguf>, made by
the model_export_hf fixture), on held-out texts of model_cases.json:
  * logits from the GGUF file and from the HF directory agree, and the GGUF's agree with an
    independent NumPy float64 forward pass on the stored weights: max |difference| at most
    1e-4 x max |logit| (the golden tolerance);
  * the loss on held-out text is far below the unigram baseline of the training split
    (perplexity at least --min-gain times lower): the default model is a trained model.

  test_model_logits.py --infernode BIN --cases model_cases.json --gguf-reader tools/train
                       --work DIR MODEL.gguf...
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

TOLERANCE = 1e-4


def c_logits(binary, model, ids, out, vocab):
    cmd = [binary, "generate", "-m", model, "--prompt-ids", ",".join(map(str, ids)), "-n", "0",
           "--temp", "0", "--kv-type", "f32", "--logits-out", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("FAIL: %s\n%s" % (" ".join(cmd[:4]), r.stderr))
    return np.fromfile(out, dtype="<f4").reshape(len(ids), vocab).astype(np.float64)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def reference_logits(cfg, w, ids):
    """float64 forward of the whole sequence; weights in Hugging Face convention (RoPE
    rotates (i, i + head_dim/2))."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    n, hd = len(ids), cfg["head_dim"]
    nh, nkv, eps = cfg["n_heads"], cfg["n_kv_heads"], cfg["norm_eps"]
    inv = cfg["rope_theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]   # [n, 1, hd/2]

    def rope(x):                                                   # [n, heads, hd]
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    mask = np.triu(np.full((n, n), -np.inf), 1)
    x = w["model.embed_tokens.weight"][ids]                        # [n, dim]
    for i in range(cfg["n_layers"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, nh, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, nkv, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd)
        out = np.empty((n, nh, hd))
        for head in range(nh):
            g = head // (nh // nkv)
            s = q[:, head] @ k[:, g].T / math.sqrt(hd) + mask    # [n, n]
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            out[:, head] = (s / s.sum(axis=-1, keepdims=True)) @ v[:, g]
        x = x + out.reshape(n, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
    out_w = w["model.embed_tokens.weight"] if cfg["tied"] else w["lm_head.weight"]
    return rms_norm(x, w["model.norm.weight"], eps) @ out_w.T


def nats(logits, ids):
    """-sum log p(ids[t+1] | ids[..t])"""
    z = logits[:-1]
    lse = np.log(np.exp(z - z.max(axis=-1, keepdims=True)).sum(axis=-1)) + z.max(axis=-1)
    return float((lse - z[np.arange(len(ids) - 1), ids[1:]]).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--gguf-reader", required=True, help="directory of export.py")
    ap.add_argument("--work", required=True)
    ap.add_argument("--loss-cases", type=int, default=4)
    ap.add_argument("--golden-cases", type=int, default=2)
    ap.add_argument("--min-gain", type=float, default=10.0)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_reader)
    import export
    with open(args.cases, encoding="utf-8") as fh:
        cases = [c for c in json.load(fh)["cases"] if c["heldout"]]
    # evenly spread over the held-out files
    step = max(1, len(cases) // args.loss_cases)
    cases = cases[::step][:args.loss_cases]
    os.makedirs(args.work, exist_ok=True)
    out = os.path.join(args.work, "logits.f32")
    failures = 0
    for model in args.models:
        cfg, weights, _ = export.read_gguf_model(model)
        if cfg["context"] < 256:
            raise SystemExit("FAIL: %s: context %d, the test needs 256" % (model, cfg["context"]))
        hf_dir = os.path.join(args.work, os.path.basename(model)[:-len(".gguf")])
        model_nats, uni_nats, n_tok = 0.0, 0.0, 0
        worst = {"reference": 0.0, "hf": 0.0}
        for i, c in enumerate(cases):
            ids = c["ids"][:256]
            got = c_logits(args.infernode, model, ids, out, cfg["vocab_size"])
            model_nats += nats(got, ids)
            n_tok += len(ids) - 1
            uni_nats += c["unigram_nats_256"]
            if i < args.golden_cases:
                ref = reference_logits(cfg, weights, ids)
                hf = c_logits(args.infernode, hf_dir, ids, out, cfg["vocab_size"])
                scale = np.abs(ref).max()
                worst["reference"] = max(worst["reference"], np.abs(got - ref).max() / scale)
                worst["hf"] = max(worst["hf"], np.abs(got - hf).max() / scale)
        for k, v in worst.items():
            ok = v <= TOLERANCE
            failures += not ok
            print("%s %s: GGUF logits vs %s: max |diff| / max |logit| = %.2e (tolerance %.0e)"
                  % ("PASS" if ok else "FAIL", os.path.basename(model),
                     "NumPy float64 reference" if k == "reference" else "the HF directory",
                     v, TOLERANCE))
        ppl, uni = math.exp(model_nats / n_tok), math.exp(uni_nats / n_tok)
        ok = ppl * args.min_gain <= uni
        failures += not ok
        print("%s %s: held-out perplexity %.2f on %d tokens; unigram baseline %.1f (must be at "
              "least %gx higher)" % ("PASS" if ok else "FAIL", os.path.basename(model), ppl,
                                      n_tok, uni, args.min_gain))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
