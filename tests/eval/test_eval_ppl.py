#!/usr/bin/python3
"""`infernode eval ppl` and `eval kl` against an independent NumPy float64 computation.

  test_eval_ppl.py --infernode BIN --work DIR --case text --models DIR --cases model_cases.json
                   --gguf-reader tools/train
  test_eval_ppl.py --infernode BIN --work DIR --case ids --shared DIR
  test_eval_ppl.py --infernode BIN --work DIR --case mpi --models DIR --cases model_cases.json

The reference is tests/reference/reference.py's forward pass on the stored weights, in
float64, and the sliding windows are written here as Hugging Face's strided-perplexity loop
(begin in range(0, n, stride), end = min(begin + ctx, n), the last end - prev_end labels
scored, the window's first token never); infernode's sums must agree to REL (relative), its
token and window counts exactly.

text: the shipped target and draft (models/README.md) on held-out texts of
tests/model/model_cases.json, whose SentencePiece ids (BOS first) plus EOS are the sequences
infernode must make of the files. ppl: target with -f and the default windows (256, stride
192), draft with --file-list at --ctx 100 --stride 37, target at --ctx 64 --stride 64 (no
overlap: the first token of each later window is not scored). kl, default windows: draft
against target (KL sum, both NLL sums, and top-1 agreement up to the rows whose top two
logits are within TIE of each other in either model); the target against itself (KL 0,
agreement 1, delta 0); W4A8 g128 against F32 (the reference's NLL as NumPy's; KL small but
not zero; the model's NLL as 'eval ppl --quant w4a8-g128' gives it).
ids: ../shared/models/stories260K.bin (llama2.c, no tokenizer) with --ids, random sequences of
several lengths down to 2 tokens, at the default and a small window (skip, exit 77, when
absent, unless CI=true).
mpi: 'eval ppl' under mpirun -np 2 equals one process (to 1e-6).
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))

import llama2c_io  # noqa: E402
import mpi_util  # noqa: E402
from llama_model import LlamaConfig  # noqa: E402
from reference import Reference  # noqa: E402

REL = 1e-4
TIE = 1e-3
EOS = 2
TIMEOUT = 300

failures = []


def check(ok, what):
    print("%s %s" % ("PASS" if ok else "FAIL", what))
    if not ok:
        failures.append(what)


def close(got, want, rel=REL):
    return abs(got - want) <= rel * max(abs(want), 1e-12)


def run_eval(infernode, args, launcher=()):
    cmd = list(launcher) + [infernode, "eval"] + args + ["--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        raise SystemExit("FAIL: %s exited %d\n%s" % (" ".join(cmd), p.returncode, p.stderr))
    return json.loads(p.stdout)


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def windows(n, ctx, stride):
    """Hugging Face's strided perplexity: (begin, end, first scored position) per window."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + ctx, n)
        trg_len = end - prev_end
        out.append((begin, end, max(end - trg_len, begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


_window_cache = {}


def window_lp(name, ref, ids):
    """log_softmax of the reference's logits over a window (memoized: the NumPy forward is
    most of this test's time)."""
    key = (name, tuple(ids))
    if key not in _window_cache:
        ref.reset()
        _window_cache[key] = log_softmax(ref.forward(ids))
    return _window_cache[key]


def reference_scores(refs, seqs, ctx, stride):
    """Per model: log-probabilities [scored rows, vocab] of every scored position, in order,
    with the scored targets; and the window count."""
    rows = {name: [] for name in refs}
    targets, n_windows = [], 0
    for ids in seqs:
        for begin, end, first in windows(len(ids), ctx, stride):
            n_windows += 1
            for name, ref in refs.items():
                lp = window_lp(name, ref, ids[begin:end])
                rows[name].append(lp[first - 1 - begin:end - 1 - begin])
            targets.extend(ids[first:end])
    return {k: np.concatenate(v) for k, v in rows.items()}, np.array(targets), n_windows


def nll_sum(lp, targets):
    return float(-lp[np.arange(len(targets)), targets].sum())


def check_ppl(tag, got, lp, targets, n_windows, seqs, n_bytes=None):
    want = nll_sum(lp, targets)
    check(got["tokens"] == sum(len(s) for s in seqs) and got["tokens_scored"] == len(targets)
          and got["windows"] == n_windows,
          "%s: %d tokens, %d scored in %d windows (infernode: %d, %d, %d)"
          % (tag, sum(len(s) for s in seqs), len(targets), n_windows, got["tokens"],
             got["tokens_scored"], got["windows"]))
    check(close(got["nll_sum"], want) and close(got["ppl"], math.exp(want / len(targets))),
          "%s: NLL sum %.6f, NumPy %.6f (ppl %.4f, NumPy %.4f)"
          % (tag, got["nll_sum"], want, got["ppl"], math.exp(want / len(targets))))
    if n_bytes is not None:
        bpb = want / math.log(2) / n_bytes
        check(got["bytes"] == n_bytes and close(got["bits_per_byte"], bpb),
              "%s: %d bytes, %.6f bits/byte (NumPy %.6f)" % (tag, got["bytes"],
                                                            got["bits_per_byte"], bpb))


def gguf_reference(reader_dir, path):
    sys.path.insert(0, reader_dir)
    import export
    c, w, _ = export.read_gguf_model(path)
    cfg = LlamaConfig(dim=c["dim"], hidden_dim=c["ffn_dim"], n_layers=c["n_layers"],
                      n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"],
                      vocab_size=c["vocab_size"], context_length=c["context"],
                      head_dim=c["head_dim"], rope_theta=c["rope_theta"],
                      norm_eps=c["norm_eps"], tied=c["tied"])
    return Reference(cfg, w)


def text_inputs(cases_path, work, n):
    """n held-out texts written to files, and the ids infernode must make of them."""
    with open(cases_path, encoding="utf-8") as fh:
        cases = [c for c in json.load(fh)["cases"] if c["heldout"]][:n]
    paths, seqs, n_bytes = [], [], 0
    for i, c in enumerate(cases):
        path = os.path.join(work, "text%d.py" % i)
        data = c["text"].encode("utf-8")
        with open(path, "wb") as fh:
            fh.write(data)
        paths.append(path)
        seqs.append(c["ids"] + [EOS])
        n_bytes += len(data)
    return paths, seqs, n_bytes


def case_text(a):
    target = os.path.join(a.models, "infernode-code-target-f16.gguf")
    draft = os.path.join(a.models, "infernode-code-draft-f16.gguf")
    refs = {"target": gguf_reference(a.gguf_reader, target), "draft": gguf_reference(a.gguf_reader, draft)}
    paths, seqs, n_bytes = text_inputs(a.cases, a.work, 3)
    listing = os.path.join(a.work, "files.txt")
    with open(listing, "w") as fh:
        fh.write("\n".join(paths) + "\n\n")

    got = run_eval(a.infernode, ["ppl", "-m", target, "-f", paths[0]] + paths[1:])
    lp, tg, nw = reference_scores({"target": refs["target"]}, seqs, 256, 192)
    check(got["ctx"] == 256 and got["stride"] == 192, "ppl target: default window 256, stride 192 "
          "(got %d, %d)" % (got["ctx"], got["stride"]))
    check_ppl("ppl target -f, ctx 256 stride 192", got, lp["target"], tg, nw, seqs, n_bytes)
    per_file = [s["nll_sum"] for s in got["inputs"]]
    check(close(sum(per_file), got["nll_sum"], 1e-12) and [s["name"] for s in got["inputs"]] == paths,
          "ppl target: per-file sums add up to the total, files in order")

    got = run_eval(a.infernode, ["ppl", "-m", draft, "--file-list", listing, "--ctx", "100",
                                 "--stride", "37"])
    lp, tg, nw = reference_scores({"draft": refs["draft"]}, seqs, 100, 37)
    check_ppl("ppl draft --file-list, ctx 100 stride 37", got, lp["draft"], tg, nw, seqs, n_bytes)

    got = run_eval(a.infernode, ["ppl", "-m", target, "-f", paths[0], "--ctx", "64", "--stride", "64"])
    lp, tg, nw = reference_scores({"target": refs["target"]}, seqs[:1], 64, 64)
    check(len(tg) == len(seqs[0]) - nw, "stride = ctx: one token per window unscored (%d of %d "
          "scored in %d windows)" % (len(tg), len(seqs[0]), nw))
    check_ppl("ppl target, ctx 64 stride 64", got, lp["target"], tg, nw, seqs[:1])

    got = run_eval(a.infernode, ["kl", "-m", draft, "--ref", target, "-f"] + paths)
    lp, tg, nw = reference_scores(refs, seqs, 256, 192)
    p_ref = np.exp(lp["target"])
    kl = float((p_ref * (lp["target"] - lp["draft"])).sum())
    check(got["tokens_scored"] == len(tg) and got["windows"] == nw,
          "kl draft vs target: %d scored in %d windows (infernode: %d, %d)"
          % (len(tg), nw, got["tokens_scored"], got["windows"]))
    check(close(got["kl_sum"], kl) and close(got["kl_mean"], kl / len(tg)),
          "kl draft vs target: KL(target || draft) sum %.6f, NumPy %.6f (mean %.6f nats)"
          % (got["kl_sum"], kl, kl / len(tg)))
    want_nll, want_ref = nll_sum(lp["draft"], tg), nll_sum(lp["target"], tg)
    check(close(got["nll_sum"], want_nll) and close(got["ref_nll_sum"], want_ref),
          "kl draft vs target: NLL sums %.4f / %.4f, NumPy %.4f / %.4f"
          % (got["nll_sum"], got["ref_nll_sum"], want_nll, want_ref))
    want_delta = 100 * (math.exp((want_nll - want_ref) / len(tg)) - 1)
    check(abs(got["ppl_delta_pct"] - want_delta) < 1e-2, "kl draft vs target: ppl delta %+.3f %%, "
          "NumPy %+.3f %%" % (got["ppl_delta_pct"], want_delta))
    top = {k: v.argmax(axis=-1) for k, v in lp.items()}
    agree = int((top["draft"] == top["target"]).sum())
    ties = 0
    for v in lp.values():
        top2 = np.partition(v, -2, axis=-1)[:, -2:]
        ties += int((top2[:, 1] - top2[:, 0] < TIE).sum())
    check(abs(got["top1_agree"] - agree) <= ties,
          "kl draft vs target: top-1 agreement %d of %d, NumPy %d (near-ties allowed: %d)"
          % (got["top1_agree"], len(tg), agree, ties))

    got = run_eval(a.infernode, ["kl", "-m", target, "--ref", target, "-f"] + paths)
    check(abs(got["kl_sum"]) < 1e-9 and got["top1_agreement"] == 1.0 and got["ppl_delta_pct"] == 0.0,
          "kl target vs itself: KL sum %.3g, agreement %.4f, ppl delta %.3g %%"
          % (got["kl_sum"], got["top1_agreement"], got["ppl_delta_pct"]))

    got = run_eval(a.infernode, ["kl", "-m", target, "--quant", "w4a8-g128", "--ref", target,
                                 "--ref-quant", "f32", "-f"] + paths)
    lp, tg, nw = reference_scores({"target": refs["target"]}, seqs, 256, 192)
    want_ref = nll_sum(lp["target"], tg)
    check(close(got["ref_nll_sum"], want_ref), "kl w4a8-g128 vs f32: reference NLL %.4f, NumPy %.4f"
          % (got["ref_nll_sum"], want_ref))
    check(0 < got["kl_mean"] < 0.1 and got["top1_agreement"] > 0.8 and abs(got["ppl_delta_pct"]) < 5,
          "kl w4a8-g128 vs f32: KL %.5f nats/token, agreement %.4f, ppl delta %+.3f %%"
          % (got["kl_mean"], got["top1_agreement"], got["ppl_delta_pct"]))
    ppl = run_eval(a.infernode, ["ppl", "-m", target, "--quant", "w4a8-g128", "-f"] + paths)
    check(close(ppl["nll_sum"], got["nll_sum"], 1e-9), "eval ppl --quant w4a8-g128 gives the model's "
          "NLL of eval kl (%.6f, %.6f)" % (ppl["nll_sum"], got["nll_sum"]))


def case_ids(a):
    model = os.path.join(a.shared, "models", "stories260K.bin")
    if not os.path.exists(model):
        if os.environ.get("CI") == "true":
            print("FAIL: %s is missing (CI=true)" % model)
            return 1
        print("SKIP: %s is missing (the shared/ folder is not beside the project)" % model)
        return 77
    cfg, w = llama2c_io.read(model)
    ref = Reference(cfg, w)
    rng = np.random.default_rng(5)
    seqs = [[1] + rng.integers(0, cfg.vocab_size, size=n - 1).tolist() for n in (700, 300, 129, 2)]
    ids_path = os.path.join(a.work, "stories.ids")
    with open(ids_path, "w") as fh:
        fh.write("\n".join(" ".join(map(str, s)) for s in seqs[:2]) + "\n\n  \n")
        fh.write("\t".join(map(str, seqs[2])) + "\r\n" + " ".join(map(str, seqs[3])))
    for ctx, stride, extra in ((cfg.context_length, cfg.context_length * 3 // 4, []),
                               (48, 20, ["--ctx", "48", "--stride", "20"])):
        got = run_eval(a.infernode, ["ppl", "-m", model, "--ids", ids_path] + extra)
        lp, tg, nw = reference_scores({"m": ref}, seqs, ctx, stride)
        check_ppl("ppl stories260K --ids, ctx %d stride %d" % (ctx, stride), got, lp["m"], tg, nw, seqs)
        check("bits_per_byte" not in got, "ppl --ids: no bits per byte")
    return 0


def case_mpi(a):
    target = os.path.join(a.models, "infernode-code-target-f16.gguf")
    paths, _, _ = text_inputs(a.cases, a.work, 2)
    args = ["ppl", "-m", target, "--ctx", "128", "--stride", "100", "-f"] + paths
    one = run_eval(a.infernode, args)
    two = run_eval(a.infernode, args, mpi_util.mpirun_cmd(2, []))
    check(two["tokens_scored"] == one["tokens_scored"] and close(two["nll_sum"], one["nll_sum"], 1e-6),
          "ppl under mpirun -np 2: NLL sum %.6f, one process %.6f" % (two["nll_sum"], one["nll_sum"]))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--case", required=True, choices=("text", "ids", "mpi"))
    ap.add_argument("--models")
    ap.add_argument("--cases")
    ap.add_argument("--gguf-reader")
    ap.add_argument("--shared")
    a = ap.parse_args()
    a.work = os.path.join(a.work, a.case)
    os.makedirs(a.work, exist_ok=True)
    rc = {"text": lambda: case_text(a) or 0, "ids": lambda: case_ids(a), "mpi": lambda: case_mpi(a)}[a.case]()
    if rc:
        return rc
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
