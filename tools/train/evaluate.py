#!/usr/bin/python3
"""Measures the exported default models; the numbers go into models/README.md.

  evaluate.py --data DIR --target T.gguf --draft D.gguf --infernode BIN --work DIR
              [--out results.json]

All models are the exported files: the GGUF's stored (F16) weights are loaded back into the
PyTorch model (model.py), so what is measured is what ships.

  * held-out perplexity (per token) and bits per byte of target and draft over the whole
    held-out split, document by document (<s> given, every later token and the closing
    </s> predicted), in windows of the training context with a stride of 3/4 of it (every
    token but those of a document's first window sees at least 1/4 context of history);
    matmuls in bf16 autocast as in training (fast here); on the first windows the same is
    computed in float32 to show the difference;
  * the unigram baseline on the same predicted tokens: token frequencies of the training
    split with add-one smoothing;
  * the draft's greedy top-1 agreement with the target at every predicted position;
  * the C engine against PyTorch: `infernode generate --prompt-ids ... -n 0 --logits-out`
    on held-out windows, against the PyTorch model with the F16-rounded weights run in
    float64; for the GGUF file and for the Hugging Face directory export.py makes from it;
    max |difference| / max |logit| (the golden tolerance is 1e-4);
  * greedy completions of code prompts by `infernode generate -m T.gguf -p P -n 48 --temp 0`.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import export
import model as M

PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n",
    "class Stack:\n",
    "def read_json(path):\n    \"\"\"",
    "    for i in range(len(",
]


def load_gguf_model(path, dtype=torch.float32):
    cfg_d, weights, _ = export.read_gguf_model(path)
    cfg = M.Config(vocab_size=cfg_d["vocab_size"], dim=cfg_d["dim"], n_layers=cfg_d["n_layers"],
                   n_heads=cfg_d["n_heads"], n_kv_heads=cfg_d["n_kv_heads"],
                   ffn_dim=cfg_d["ffn_dim"], context=cfg_d["context"],
                   rope_theta=cfg_d["rope_theta"], norm_eps=cfg_d["norm_eps"],
                   tied=cfg_d["tied"])
    net = M.Llama(cfg)
    sd = {}
    for k, v in weights.items():
        sd[k[len("model."):] if k.startswith("model.") else k] = torch.from_numpy(v.copy())
    if cfg.tied:
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected and all(m.startswith("rope_") for m in missing), (missing, unexpected)
    net = net.to(dtype).eval()
    # rope tables in the model's dtype, computed in float64
    cos, sin = M.rope_tables(cfg, cfg.context, dtype=dtype)
    net.rope_cos, net.rope_sin = cos, sin
    return cfg, net


def windows(doc_len, ctx):
    """[(start, end, first scored position)] covering positions 1..doc_len-1 of a document."""
    out, stride = [], ctx * 3 // 4
    start = 0
    while True:
        end = min(doc_len, start + ctx)
        first = 1 if start == 0 else start + ctx - stride
        out.append((start, end, first))
        if end == doc_len:
            return out
        start += stride


@torch.no_grad()
def logprobs_and_argmax(net, ids, bf16):
    x = torch.from_numpy(ids.astype(np.int64))[None]
    if bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
    else:
        logits = net(x)
    lp = F.log_softmax(logits[0].double(), dim=-1)
    return lp, logits[0].argmax(-1)


def heldout_docs(data_dir):
    ids = np.fromfile(os.path.join(data_dir, "heldout.u16"), dtype=np.uint16)
    starts = np.fromfile(os.path.join(data_dir, "heldout.docs.u32"), dtype=np.uint32).tolist()
    ends = starts[1:] + [len(ids)]
    return [ids[s:e] for s, e in zip(starts, ends)]


def unigram_logprobs(data_dir, vocab):
    train = np.fromfile(os.path.join(data_dir, "train.u16"), dtype=np.uint16)
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def perplexities(nets, docs, ctx, unigram, bf16, max_windows=None):
    """{name: nats}, n_tokens, agreement counts over the given documents."""
    nats = {name: 0.0 for name in nets}
    nats["unigram"] = 0.0
    n_tok, agree, n_win = 0, 0, 0
    for doc in docs:
        for start, end, first in windows(len(doc), ctx):
            if max_windows is not None and n_win >= max_windows:
                return nats, n_tok, agree
            n_win += 1
            seg = doc[start:end]
            targets = torch.from_numpy(seg[first - start:].astype(np.int64))
            argmaxes = {}
            for name, net in nets.items():
                lp, am = logprobs_and_argmax(net, seg[:-1], bf16)
                lp = lp[first - start - 1:]
                nats[name] -= lp.gather(1, targets[:, None]).sum().item()
                argmaxes[name] = am[first - start - 1:]
            nats["unigram"] -= float(unigram[seg[first - start:]].sum())
            n_tok += len(targets)
            if "target" in argmaxes and "draft" in argmaxes:
                agree += int((argmaxes["target"] == argmaxes["draft"]).sum())
    return nats, n_tok, agree


def run_c_logits(binary, model_path, ids, out_path, vocab):
    cmd = [binary, "generate", "-m", model_path, "--prompt-ids", ",".join(map(str, ids)),
           "-n", "0", "--temp", "0", "--logits-out", out_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("evaluate: %s failed:\n%s" % (" ".join(cmd[:4]), r.stderr))
    return np.fromfile(out_path, dtype="<f4").reshape(len(ids), vocab)


def c_vs_torch(binary, gguf_path, hf_dir, docs, n_windows, length, work):
    cfg, net = load_gguf_model(gguf_path, torch.float64)
    out = {"gguf": 0.0, "hf": 0.0, "gguf_vs_hf": 0.0, "windows": n_windows, "tokens": length}
    for w in range(n_windows):
        doc = docs[w * (len(docs) // n_windows)]
        ids = doc[:length].tolist()
        with torch.no_grad():
            ref = net(torch.tensor([ids]))[0].numpy()
        scale = np.abs(ref).max()
        got = {}
        for kind, path in (("gguf", gguf_path), ("hf", hf_dir)):
            got[kind] = run_c_logits(binary, path, ids, os.path.join(work, "logits.f32"),
                                     cfg.vocab_size)
            out[kind] = max(out[kind], float(np.abs(got[kind] - ref).max() / scale))
        out["gguf_vs_hf"] = max(out["gguf_vs_hf"],
                                float(np.abs(got["gguf"] - got["hf"]).max() / scale))
    return out


def completions(binary, gguf_path):
    out = []
    for p in PROMPTS:
        r = subprocess.run([binary, "generate", "-m", gguf_path, "-p", p, "-n", "48", "--temp",
                            "0"], check=True, capture_output=True, text=True)
        out.append({"prompt": p, "output": r.stdout})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fp32-windows", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    res = {}
    t0 = time.time()

    docs = heldout_docs(args.data)
    nbytes = 0
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.data, "tokenizer.model"))
    for d in docs:
        nbytes += len(sp.decode(d[1:-1].tolist()).encode("utf-8"))
    nets = {}
    for name, path in (("target", args.target), ("draft", args.draft)):
        cfg, nets[name] = load_gguf_model(path)
    ctx = cfg.context
    unigram = unigram_logprobs(args.data, cfg.vocab_size)

    nats, n_tok, agree = perplexities(nets, docs, ctx, unigram, bf16=True)
    res["heldout"] = {"documents": len(docs), "tokens": n_tok, "bytes": nbytes,
                      "agreement_top1": agree / n_tok}
    for name, v in nats.items():
        res["heldout"][name] = {"ppl": math.exp(v / n_tok), "bpb": v / math.log(2) / nbytes,
                                "nats_per_token": v / n_tok}
    print(json.dumps(res, indent=1), flush=True)

    # the same on the first windows in bf16 and in float32, to show what bf16 changes
    sub = {}
    for bf16 in (True, False):
        nats, n, _ = perplexities(nets, docs, ctx, unigram, bf16, args.fp32_windows)
        sub["bf16" if bf16 else "fp32"] = {k: math.exp(v / n) for k, v in nats.items()}
    sub["tokens"] = n
    res["heldout_subset_bf16_vs_fp32"] = sub
    print(json.dumps(sub, indent=1), flush=True)

    res["c_vs_torch"] = {}
    for name, path in (("target", args.target), ("draft", args.draft)):
        hf_dir = os.path.join(args.work, "hf-" + name)
        export.write_hf_from_gguf(path, hf_dir)
        res["c_vs_torch"][name] = c_vs_torch(args.infernode, path, hf_dir, docs, 3, 256,
                                             args.work)
    print(json.dumps(res["c_vs_torch"], indent=1), flush=True)
    res["completions"] = completions(args.infernode, args.target)
    for c in res["completions"]:
        print("---- %r\n%s" % (c["prompt"], c["output"]))
    res["seconds"] = time.time() - t0
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
