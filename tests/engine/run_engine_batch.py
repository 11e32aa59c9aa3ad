#!/usr/bin/python3
"""Batched engine steps against the NumPy reference run on each sequence alone.

A plan of steps over 4 KV slots (context 64, n_batch 40) runs through engine_batch_dump: a
prefill of one sequence beside single-token decodes of others, sequences listed out of slot
order, a slot restarted at pos0 0 after it held a longer sequence, rollbacks to a smaller pos0,
a 4-token verification step with 4 ARGMAX rows, a step of exactly n_batch tokens, a slot filled
to its last position, engine_eval split into steps of n_batch (after engine_reset) and with
mode NONE, and a battery of bad steps (each must fail with its status and a message naming the
field, change no slot's length, and leave the KV caches as they were: the steps after it are
compared with the reference like every other).

Every output row is checked against the reference's logits at that position of its sequence's
history (the slot's tokens before pos0, then the step's), as the golden tests do, in F32
(--quant f32, tolerance 1e-4 x max|logit| of the row):
  FULL    the row within tolerance;
  ARGMAX  the id is an argmax of the reference within tolerance, its value the reference's;
  TOPK    k distinct ids, values descending (ids ascending among equal values), each value the
          reference's, each id among the reference's k largest within tolerance.
Models (written by tests/reference/make_golden.py, read back by readback.py): GQA 4:1 untied
(interleaved RoPE), MHA tied from a Hugging Face directory (RoPE over halves), and head_dim 32
with 2 KV heads (replicated over 3 ranks). A fourth model, written here, repeats its output
head's best row at ids in different ranks' vocabulary rows: the exact ties must go to the
lowest id in ARGMAX and TOPK, as in one process.

usage: run_engine_batch.py --driver BIN --models GOLDEN_DIR --work DIR [--np 1,2,3]"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))

import numpy as np  # noqa: E402

import gguf_write  # noqa: E402
import mpi_util  # noqa: E402
import readback  # noqa: E402
from llama_model import LM_HEAD, LlamaConfig, random_model  # noqa: E402
from reference import Reference  # noqa: E402

TOL = 1e-4
N_SLOTS, CTX, N_BATCH = 4, 64, 40
N_BAD_CASES = 37  # engine_batch_dump's bad_cases table
MODELS = ["gguf-v3-f32/gqa4-untied", "hf-f32/mha-tied", "gguf-v3-f32/hd32-untied-theta5e5"]


class Plan:
    """The plan file's lines, and what each step must give: per output row the sequence's
    history and the row's position in it; per step the slots' lengths afterwards."""

    def __init__(self):
        self.lines = [f"engine {N_SLOTS} {CTX} {N_BATCH} f32"]
        self.slots = [[] for _ in range(N_SLOTS)]
        self.steps = []  # [(rows {(seq, j): ((history, position), mode, top_k)}, lens)]
        self.rings = []  # [lens after each ring command]
        self.kv = "f32"

    @staticmethod
    def where(key):
        return f"position {key[1]}"

    @staticmethod
    def _seq_line(slot, pos0, tokens, n_out, mode, k, discard=0):
        return f"seq {slot} {discard} {pos0} {n_out} {mode} {k} {len(tokens)} " + " ".join(map(str, tokens))

    def step(self, *seqs):
        """seqs: (slot, pos0, tokens, n_out, mode, top_k)."""
        assert sum(len(s[2]) for s in seqs) <= N_BATCH
        self.lines += ["step"] + [self._seq_line(*s) for s in seqs] + ["end"]
        rows = {}
        for i, (slot, pos0, tokens, n_out, mode, k) in enumerate(seqs):
            assert pos0 <= len(self.slots[slot]) and pos0 + len(tokens) <= CTX
            hist = tuple(self.slots[slot][:pos0] + list(tokens))
            self.slots[slot] = list(hist)
            for j in range(n_out):
                rows[(i, j)] = ((hist, len(hist) - n_out + j), mode, k)
        self.steps.append((rows, [len(s) for s in self.slots]))

    def eval(self, tokens, all_rows, mode, k=0):
        self.lines.append(f"eval {int(all_rows)} {mode} {k} {len(tokens)} " + " ".join(map(str, tokens)))
        hist = tuple(self.slots[0] + list(tokens))
        self.slots[0] = list(hist)
        n_out = len(tokens) if all_rows else int(mode != "none")
        rows = {(0, j): ((hist, len(hist) - n_out + j), mode, k) for j in range(n_out)}
        self.steps.append((rows, [len(s) for s in self.slots]))

    def reset(self):
        self.lines.append("reset")
        self.slots[0] = []

    def bad(self, *seqs):
        """A valid step that the driver spoils one field at a time; none of it runs."""
        self.lines += ["bad"] + [self._seq_line(*s) for s in seqs] + ["end"]


def build_plan(vocab, seed):
    rng = np.random.default_rng(seed)

    def t(n):
        return [int(x) for x in rng.integers(3, vocab, n)]

    p = Plan()
    p.step((0, 0, t(10), 10, "full", 0), (1, 0, t(7), 1, "argmax", 0))
    p.step((2, 0, t(12), 0, "none", 0), (0, 10, t(1), 1, "topk", 5), (1, 7, t(1), 1, "full", 0))
    # out of slot order; top-k of the whole vocabulary (more than any rank's columns)
    p.step((3, 0, t(5), 3, "full", 0), (1, 8, t(1), 1, "topk", vocab), (2, 12, t(2), 2, "full", 0),
           (0, 11, t(1), 1, "argmax", 0))
    # slot 1 restarts, slot 0 rolls back 3, slot 2 verifies 4 tokens
    p.step((1, 0, t(9), 9, "full", 0), (0, 9, t(2), 2, "full", 0), (2, 14, t(4), 4, "argmax", 0))
    base = ((0, 10, t(2), 2, "full", 0), (3, 5, t(3), 2, "topk", 3))
    p.bad(*base)
    p.step(*base, (2, 18, t(1), 1, "topk", 1))
    p.step((3, 8, t(36), 1, "full", 0), (1, 9, t(3), 3, "argmax", 0), (2, 19, t(1), 1, "argmax", 0))  # n_batch
    p.step((3, 44, t(20), 2, "full", 0), (0, 12, t(1), 1, "full", 0))  # slot 3 full: 64 positions
    p.step((3, 30, t(3), 3, "topk", 4), (1, 0, t(1), 1, "full", 0))    # deep rollback; restart
    p.reset()
    p.eval(t(50), True, "full")      # steps of 40 + 10
    p.eval(t(3), False, "argmax")
    p.eval(t(1), False, "topk", 4)
    p.step((0, 54, t(1), 1, "full", 0), (3, 0, t(2), 2, "full", 0), (2, 20, t(2), 1, "topk", 2),
           (1, 1, t(1), 1, "argmax", 0))
    p.eval(t(2), False, "none")
    p.step((0, 57, t(1), 1, "full", 0))
    return p


def build_tie_case(work):
    """A model whose output head repeats its best row (for one history) at ids 20 and 300,
    which sit in different ranks' vocabulary rows at 2 and 3 ranks, and repeats a middling row
    at 5 and 250; a step asks for that history in four slots: FULL, ARGMAX, TOPK of the whole
    vocabulary and TOPK of 1. Returns (model path, weights, plan, the tied ids at the top)."""
    cfg = LlamaConfig(dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=333,
                      context_length=64)
    w = random_model(cfg, 11)
    hist = [1] + [int(x) for x in np.random.default_rng(5).integers(3, cfg.vocab_size, 7)]
    ref = Reference(cfg, w).forward(hist)[-1]
    best, middle = int(np.argmax(ref)), int(np.argsort(ref)[cfg.vocab_size // 2])
    tied = sorted({best, 20 if best != 20 else 21, 300 if best != 300 else 301})
    w[LM_HEAD] = w[LM_HEAD].copy()
    for i in tied:
        w[LM_HEAD][i] = w[LM_HEAD][best]
    for i in (5, 250):
        if i not in tied and middle not in tied:
            w[LM_HEAD][i] = w[LM_HEAD][middle]
    path = os.path.join(work, "ties.gguf")
    seen = gguf_write.write_llama(path, cfg, w, "F32", 3)[0]
    p = Plan()
    p.step((0, 0, hist, 1, "full", 0), (1, 0, hist, 1, "argmax", 0), (2, 0, hist, 1, "topk", cfg.vocab_size),
           (3, 0, hist, 1, "topk", 1))
    return path, cfg, seen, p, tied


def check_ties(lines, tied):
    """Where the engine's FULL row has the tie exactly (kernels compute every column alike),
    ARGMAX and TOPK 1 must give its lowest id (the TOPK order check covers the whole list)."""
    rows = {tuple(map(int, f[1:4])): f[4:] for f in (line.split() for line in lines) if f[0] == "row"}
    full = np.array([float(v) for v in rows[(0, 0, 0)][1:]], dtype=np.float32)
    if len({float(full[i]) for i in tied}) != 1:
        return [], f"ids {tied} are not exactly tied in this build's FULL row: tie rules not exercised"
    problems = []
    for seq, what in ((1, "argmax"), (3, "topk 1")):
        got_id, got_value = int(rows[(0, seq, 0)][1]), np.float32(rows[(0, seq, 0)][2])
        if got_value == full[tied[0]] and got_id != tied[0]:
            problems.append(f"{what} of a tie between ids {tied} gave {got_id}, not the lowest")
    return problems, f"tie between ids {tied} resolved to {tied[0]}"


class RefCache:
    """The reference's logits for every position of a history, computed once per history."""

    def __init__(self, cfg, weights):
        self.ref = Reference(cfg, weights)
        self.memo = {}

    def logits(self, key):
        hist, pos = key
        if hist not in self.memo:
            self.ref.reset()
            self.memo[hist] = self.ref.forward(list(hist))
        return self.memo[hist][pos]


def check_row(kind, values, ref, mode, k, rel_tol=TOL):
    """Problems of one output row (empty if it is right), and the largest error of its values
    against the reference, relative to max|logit|."""
    scale = max(float(np.abs(ref).max()), 1e-30)
    tol = rel_tol * scale
    if kind != mode:
        return [f"got a {kind} row, the step asked for {mode}"], 0.0
    if kind == "full":
        got = np.array([float(v) for v in values])
        if got.shape != ref.shape:
            return [f"{got.size} logits, expected {ref.size}"], 0.0
        err = float(np.abs(got - ref).max()) / scale
        return [f"logits differ from the reference by {err:.2e} of max|logit|"] if err > rel_tol else [], err
    ids = [int(v) for v in values[0::2]]
    vals = [float(v) for v in values[1::2]]
    want_n = 1 if kind == "argmax" else k
    if len(ids) != want_n:
        return [f"{len(ids)} ids, expected {want_n}"], 0.0
    problems = []
    if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= ref.size:
        return [f"ids {ids[:8]}... are not distinct ids of the vocabulary"], 0.0
    kth = np.sort(ref)[-want_n]
    for n, (i, v) in enumerate(zip(ids, vals)):
        if abs(v - ref[i]) > tol:
            problems.append(f"id {i}: value {v:.6g}, reference {ref[i]:.6g}")
        if ref[i] < kth - 2 * tol:
            problems.append(f"id {i} (reference {ref[i]:.6g}) is not among the reference's {want_n} largest")
        if n and (v > vals[n - 1] or (v == vals[n - 1] and i < ids[n - 1])):
            problems.append(f"position {n}: ({i}, {v:.6g}) after ({ids[n - 1]}, {vals[n - 1]:.6g}) breaks the order")
    return problems[:3], max(abs(v - ref[i]) for i, v in zip(ids, vals)) / scale


def run_driver(driver, np_, model, plan_path, out_path):
    args = [driver, model, plan_path, out_path]
    if np_ == 1:
        return subprocess.run(args, capture_output=True, text=True, timeout=120)
    return mpi_util.run(np_, args, timeout=120)


def check_output(lines, plan, expected, n_bad_cases, rel_tol=TOL):
    """Problems of the driver's output against the plan; expected(key) gives the reference's
    logits of a row's key. Returns (problems, {"rows", "bad", "max_err", "kv_bytes"})."""
    problems, seen, lens_seen, rings_seen, bad_ok, max_err, kv_bytes = [], set(), 0, 0, 0, 0.0, None
    for line in lines:
        f = line.split()
        if f[0] == "describe":
            if f"kv cache {N_SLOTS} slots x {CTX} positions" not in line:
                problems.append(f"the description does not report the KV cache: {line.strip()}")
        elif f[0] == "weights":
            if int(f[1]) <= 0:
                problems.append(f"engine_weight_bytes is {f[1]}")
        elif f[0] == "kv":
            kv_bytes = int(f[1])
            if f[2] != plan.kv:
                problems.append(f"the engine reports KV type {f[2]}, the plan asked for {plan.kv}")
        elif f[0] == "bad":
            if " ok: " in line:
                bad_ok += 1
            else:
                problems.append(line.strip())
        elif f[0] in ("lens", "ring"):
            k = int(f[1])
            wants = [s[1] for s in plan.steps] if f[0] == "lens" else plan.rings
            want = wants[k] if k < len(wants) else None
            got = [int(x) for x in f[2:]]
            if f[0] == "lens":
                lens_seen += 1
            else:
                rings_seen += 1
            if got != want:
                problems.append(f"{'step' if f[0] == 'lens' else 'ring command'} {k}: slot lengths {got}, "
                                f"expected {want}")
        elif f[0] == "row":
            k, i, j = int(f[1]), int(f[2]), int(f[3])
            rows = plan.steps[k][0] if k < len(plan.steps) else {}
            if (i, j) not in rows or (k, i, j) in seen:
                problems.append(f"step {k}: unexpected row {j} of sequence {i}")
                continue
            seen.add((k, i, j))
            key, mode, top_k = rows[(i, j)]
            more, err = check_row(f[4], f[5:], expected(key), mode, top_k, rel_tol)
            max_err = max(max_err, err)
            for p in more:
                problems.append(f"step {k} sequence {i} row {j} ({plan.where(key)}, {mode}): {p}")
        else:
            problems.append(f"unknown output line: {line[:80]}")
    n_rows = sum(len(s[0]) for s in plan.steps)
    if len(seen) != n_rows:
        problems.append(f"{len(seen)} output rows, expected {n_rows}")
    if lens_seen != len(plan.steps):
        problems.append(f"{lens_seen} steps reported, expected {len(plan.steps)}")
    if rings_seen != len(plan.rings):
        problems.append(f"{rings_seen} ring commands reported, expected {len(plan.rings)}")
    if bad_ok != n_bad_cases:
        problems.append(f"{bad_ok} bad-step cases passed, expected {n_bad_cases}")
    if kv_bytes is None:
        problems.append("no kv line (engine_kv_bytes)")
    return problems, {"rows": len(seen), "bad": bad_ok, "max_err": max_err, "kv_bytes": kv_bytes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--np", default="1,2,3")
    a = ap.parse_args()
    manifest = os.path.join(a.models, "manifest.json")
    if not os.path.exists(manifest):
        print(f"FAIL: {manifest} is missing (the golden_setup fixture did not run)")
        return 1
    by_name = {c["name"]: c for c in json.load(open(manifest))["cases"]}
    os.makedirs(a.work, exist_ok=True)
    failures = 0
    cases = []
    for seed, name in enumerate(MODELS):
        path = by_name[name]["model"]
        cfg, weights = readback.hf_model(path) if os.path.isdir(path) else readback.gguf_llama_model(path)
        cases.append((name, path, cfg, weights, build_plan(cfg.vocab_size, seed), None))
    cases.append(("ties", *build_tie_case(a.work)))
    for name, path, cfg, weights, plan, tied in cases:
        refs = RefCache(cfg, weights)
        plan_path = os.path.join(a.work, name.replace("/", "_") + ".plan")
        with open(plan_path, "w") as f:
            f.write("\n".join(plan.lines) + "\n")
        for np_ in [int(x) for x in a.np.split(",")]:
            out_path = os.path.join(a.work, f"{name.replace('/', '_')}.np{np_}.out")
            if os.path.exists(out_path):
                os.remove(out_path)
            t0 = time.time()
            p = run_driver(a.driver, np_, path, plan_path, out_path)
            dt = time.time() - t0
            problems = []
            if p.returncode != 0:
                err = p.stderr.strip().splitlines()
                problems.append(f"exit {p.returncode}: {' | '.join(err[-4:]) if err else '(no stderr)'}")
            n_rows = n_bad = 0
            note = ""
            if os.path.exists(out_path):
                lines = open(out_path).read().splitlines()
                more, info = check_output(lines, plan, refs.logits, 0 if tied else N_BAD_CASES)
                n_rows, n_bad = info["rows"], info["bad"]
                problems += more
                if tied and not more:
                    more, note = check_ties(lines, tied)
                    problems += more
            else:
                problems.append("the driver wrote no output")
            if problems:
                failures += 1
                print(f"FAIL {name} np={np_} ({dt:.1f}s):\n    " + "\n    ".join(problems[:12]), flush=True)
            else:
                print(f"ok   {name} np={np_}: {len(plan.steps)} steps, {n_rows} rows match the reference"
                      f"{f', {n_bad} bad steps refused' if n_bad else ''}{'; ' + note if note else ''} ({dt:.1f}s)",
                      flush=True)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
