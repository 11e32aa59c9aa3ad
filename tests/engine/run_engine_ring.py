#!/usr/bin/python3
"""StreamingLLM rings of the engine's KV slots against an independent NumPy reference.

A plan over 4 slots (context 64, n_batch 40) gives the slots different rings (window 24 with
4 sinks, 20 with none, 16 with 1, and the plain 64) and runs them through engine_batch_dump
with discards: a discard together with a multi-token chunk that wraps across the physical end
of the ring, decode steps on a rotated ring that is not full (masked attention over rotated
rows), the whole non-sink part discarded (with sinks and with n_keep 0), rollbacks after a
discard (in the same step, and in a later one), repeated discards until the rotation has gone
round its window - n_keep rows several times, steps where every slot has another ring,
engine_slot_ring re-configuring slots that hold entries (they come back empty, one of them a
ring of one non-sink row), discards on a slot left at the plain ring (window = context, no
sinks), a discard together with a rollback into the sinks, and a battery of bad steps and bad
rings (discard beyond the non-sinks, pos0 beyond the length after the discard, tokens past the
window, window 0 or past the context, n_keep >= window ...: each must fail with a message
naming the field and change nothing, which the steps after it confirm). build_plan checks that every one of these
situations really occurs in the plan (by the engine's row arithmetic of model.h), so a later
edit cannot quietly drop one.

What a row must be (ring_reference.py): the slot keeps each token's key before RoPE and its
value as computed when the token was evaluated; a discard removes positions
n_keep..n_keep+d-1 and renumbers the later ones down by d; the reference applies RoPE to every
kept key at its new position (the cache rebuilt from scratch with renumbered positions) and
evaluates new tokens at the positions that follow. The engine instead re-rotates its cached
keys by -d (shift-RoPE); the two must agree. Every output row (FULL, ARGMAX, TOPK, checked as
run_engine_batch.py does) is compared with the reference, and engine_slot_len after every step
and ring command. Models: run_engine_batch.py's three (interleaved RoPE from GGUF, RoPE over
halves from a Hugging Face directory, head_dim 32 with 2 KV heads), --quant f32, at 1 rank and
under mpirun at 2 and 3 ranks, with the KV cache in f32, f16 and bf16.

Tolerances (the row's max |engine - reference| over max|logit|):
  f32   1e-4, as every golden test: fp32 arithmetic throughout (a kept key is rounded to fp32
        again at each discard it lives through, ~6e-8 each; the engine is off by < 1e-6).
  f16   10 u = 4.9e-3 and bf16 10 u = 3.9e-2, u the unit roundoff (2^-11, 2^-8). The cache
        rounds K and V to nearest even (relative error <= u per element) and rounds each kept
        key again at every discard it lives through (ops.h ifn_rope_kv; up to 5 times in this
        plan). Through attention and 2-3 layers of these random models, that moves the logits
        by 1.7-2.7 u of max|logit|: the emulated cache of ring_reference.py (the same
        roundings, float64 otherwise) is off by f16 0.9e-3..1.3e-3 and bf16 6.5e-3..9.2e-3
        (printed per model; the engine measures the same). 10 u leaves over 3 times that
        (checked at every run: a plan whose rounding alone came within a third of the
        tolerance fails as a plan) and stays far below what a wrong rotation does: keys left at
        their old angles (`norotate`) are off by 1.2-1.5 of max|logit| (checked to exceed 4
        times the loosest tolerance), keys turned back by one position too many by 0.7-1.1.

usage: run_engine_ring.py --driver BIN --models GOLDEN_DIR --work DIR [--np 1,2,3] [--kv f32,f16,bf16]"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))

import numpy as np  # noqa: E402

import readback  # noqa: E402
from reference import Reference  # noqa: E402
from ring_reference import RingReference  # noqa: E402
from run_engine_batch import CTX, MODELS, N_BAD_CASES, N_BATCH, N_SLOTS, check_output, run_driver  # noqa: E402

# Also a model with RoPE scaling (Llama 3's per-pair frequencies, original context 64): the
# shift re-rotates kept keys with the scaled frequencies, as the reference renumbers them.
RING_MODELS = ["hf-f32/rope-llama3-f4"]

KV_TOL = {"f32": 1e-4, "f16": 10 * 2.0 ** -11, "bf16": 10 * 2.0 ** -8}
EMULATED = ("f16", "bf16", "norotate")  # the reference's emulated caches (ring_reference.STORES)
# What build_plan must contain (see the docstring); the plan fails to build without each.
COVERAGE = {
    "wrap": "a discard and a multi-token chunk in one step, the chunk wrapping across the ring's physical end",
    "laps": "a slot whose rotation went round its window - n_keep rows at least twice",
    "decode": "single-token steps on a rotated ring that is not full",
    "rollback_same": "a rollback in the step of a discard (pos0 < length - discard)",
    "rollback_later": "a rollback on a rotated ring without a discard",
    "whole": "the whole non-sink part discarded, with sinks",
    "whole_n_keep0": "the whole ring discarded, n_keep 0",
    "n_keep0": "discards on a ring without sinks",
    "mixed": "a step over slots of 3 or more different rings with discards",
    "reconfigure": "engine_slot_ring on a slot that holds entries",
    "one_row": "discards on a ring of one non-sink row",
    "plain": "discards on a slot whose ring was never set (window = the context, no sinks)",
    "into_sinks": "a discard and a rollback into the sinks in one step (pos0 < n_keep)",
}


class RingPlan:
    """The plan file's lines, and what each step must give, from the reference run alongside:
    per output row its logits, per step and ring command the slots' lengths afterwards."""

    def __init__(self, ref):
        self.ref = ref
        self.lines = []
        self.kv = "f32"
        self.stores = {s: [ref.new_slot(CTX, 0, s) for _ in range(N_SLOTS)] for s in ("exact",) + EMULATED}
        self.rings = []     # [lens after each ring command]
        self.steps = []     # [(rows {(seq, j): ((store-independent key), mode, top_k)}, lens)]
        self.logits = {}    # store -> {(step, seq, j): logits}
        self.shift = [0] * N_SLOTS      # the engine's rotation of each slot (model.h)
        self.discarded = [0] * N_SLOTS  # discards since the slot's ring was set
        self.covered = set()
        self.step_slots = []  # [the slot of each sequence of each step]

    def text(self, kv):
        return "\n".join([f"engine {N_SLOTS} {CTX} {N_BATCH} f32 {kv}"] + self.lines) + "\n"

    def where(self, key):
        return f"slot {self.step_slots[key[0]][key[1]]}"

    def expected(self, store="exact"):
        return self.logits[store].__getitem__

    def length(self, slot):
        return len(self.stores["exact"][slot])

    def ring(self, slot, window, n_keep):
        if self.length(slot):
            self.covered.add("reconfigure")
        self.lines.append(f"ring {slot} {window} {n_keep}")
        for slots in self.stores.values():
            slots[slot] = self.ref.new_slot(window, n_keep, slots[slot].store)
        self.shift[slot] = self.discarded[slot] = 0
        self.rings.append([self.length(s) for s in range(N_SLOTS)])

    def _row(self, slot, pos):
        r = self.stores["exact"][slot]
        if pos < r.n_keep:
            return pos
        return r.n_keep + (pos - r.n_keep + self.shift[slot]) % (r.window - r.n_keep)

    def _note(self, slot, discard, pos0, n):
        """What the engine does with this sequence (before it runs), for COVERAGE."""
        r = self.stores["exact"][slot]
        held, span = self.length(slot), r.window - r.n_keep
        if discard:
            self.shift[slot] = (self.shift[slot] + discard) % span
            self.discarded[slot] += discard
            self.covered.add("n_keep0" if r.n_keep == 0 else "with sinks")
            if span == 1:
                self.covered.add("one_row")
            if discard == held - r.n_keep:
                self.covered.add("whole_n_keep0" if r.n_keep == 0 else "whole")
            if pos0 < held - discard:
                self.covered.add("rollback_same")
            if pos0 < r.n_keep:
                self.covered.add("into_sinks")
            if (r.window, r.n_keep) == (CTX, 0):
                self.covered.add("plain")
            rows = [self._row(slot, p) for p in range(pos0, pos0 + n)]
            if any(b < a for a, b in zip(rows, rows[1:])):
                self.covered.add("wrap")
        elif pos0 < held and self.shift[slot]:
            self.covered.add("rollback_later")
        if n == 1 and self.shift[slot] and pos0 + 1 < r.window:
            self.covered.add("decode")
        if self.discarded[slot] >= 2 * span and span > 1:
            self.covered.add("laps")

    def step(self, *seqs):
        """seqs: (slot, discard, pos0, tokens, n_out, mode, top_k)."""
        assert sum(len(s[3]) for s in seqs) <= N_BATCH
        k = len(self.steps)
        self.lines += ["step"] + [self._seq_line(*s) for s in seqs] + ["end"]
        rings = {(self.stores["exact"][s[0]].window, self.stores["exact"][s[0]].n_keep) for s in seqs}
        if len(rings) >= 3 and any(s[1] for s in seqs):
            self.covered.add("mixed")
        rows = {}
        for i, (slot, discard, pos0, tokens, n_out, mode, top_k) in enumerate(seqs):
            self._note(slot, discard, pos0, len(tokens))
            for store, slots in self.stores.items():
                out = self.ref.step(slots[slot], discard, pos0, tokens)
                for j in range(n_out):
                    self.logits.setdefault(store, {})[(k, i, j)] = out[len(tokens) - n_out + j]
            for j in range(n_out):
                rows[(i, j)] = ((k, i, j), mode, top_k)
        self.step_slots.append([s[0] for s in seqs])
        self.steps.append((rows, [self.length(s) for s in range(N_SLOTS)]))

    def bad(self, *seqs):
        """A valid step that the driver spoils one field at a time; none of it runs."""
        self.lines += ["bad"] + [self._seq_line(*s) for s in seqs] + ["end"]

    @staticmethod
    def _seq_line(slot, discard, pos0, tokens, n_out, mode, k):
        return f"seq {slot} {discard} {pos0} {n_out} {mode} {k} {len(tokens)} " + " ".join(map(str, tokens))


def build_plan(ref, seed):
    vocab = ref.cfg.vocab_size
    rng = np.random.default_rng(100 + seed)

    def t(n):
        return [int(x) for x in rng.integers(3, vocab, n)]

    p = RingPlan(ref)
    L = p.length
    p.ring(0, 24, 4)
    p.ring(1, 20, 0)
    p.ring(3, 16, 1)
    p.step((0, 0, 0, t(18), 2, "full", 0), (1, 0, 0, t(10), 1, "full", 0), (2, 0, 0, t(4), 1, "argmax", 0),
           (3, 0, 0, t(8), 1, "full", 0))
    # slot 0: 5 go, 9 new tokens wrap from row 23 to row 4; slots 1 and 3 fill their rings
    p.step((0, 5, 13, t(9), 9, "full", 0), (1, 0, 10, t(10), 2, "full", 0), (3, 0, 8, t(8), 1, "topk", 5),
           (2, 0, 4, t(2), 1, "full", 0))
    p.step((0, 0, 22, t(1), 1, "full", 0), (1, 6, 14, t(1), 1, "full", 0), (3, 3, 13, t(2), 2, "full", 0),
           (2, 0, 6, t(1), 1, "full", 0))
    p.step((0, 0, 23, t(1), 1, "full", 0), (1, 0, 15, t(1), 1, "argmax", 0), (3, 0, 15, t(1), 1, "full", 0))
    # everything but the sinks goes (slot 1: everything), then decodes on a ring far from full
    p.step((0, 20, 4, t(3), 3, "full", 0), (1, 16, 0, t(4), 2, "full", 0))
    p.step((0, 0, 7, t(1), 1, "full", 0), (1, 0, 4, t(1), 1, "full", 0))
    p.step((0, 0, 8, t(1), 1, "topk", 4), (3, 10, 6, t(5), 5, "full", 0))
    p.step((0, 0, 9, t(15), 2, "full", 0), (1, 0, 5, t(15), 1, "full", 0), (3, 0, 11, t(5), 1, "full", 0))
    # rollbacks of 3 in the step of a discard; then a rollback of 4 on the rotated ring
    p.step((0, 7, 14, t(2), 2, "full", 0), (1, 4, 13, t(3), 3, "full", 0), (3, 1, 15, t(1), 1, "full", 0))
    p.step((0, 0, 12, t(4), 4, "full", 0), (2, 0, 3, t(2), 2, "full", 0))
    base = ((0, 3, 13, t(3), 2, "full", 0), (2, 0, 5, t(1), 1, "topk", 3))
    p.bad(*base)
    p.step(*base, (1, 0, 16, t(1), 1, "full", 0))
    # round and round: every slot discards and refills, chunks of several sizes
    for r, (d0, d1, d3) in enumerate(((3, 2, 4), (7, 5, 1), (5, 9, 6), (6, 1, 2), (4, 6, 7), (9, 3, 3))):
        p.step((0, d0, L(0) - d0, t(d0 + r % 2), 1 + r % 2, "full", 0),
               (1, d1, L(1) - d1, t(min(d1 + 1, 20 - L(1) + d1)), 1, "full" if r % 3 else "argmax", 0),
               (3, d3, L(3) - d3, t(d3), 1, "full", 0), (2, 2 * (r % 2), L(2) - 2 * (r % 2), t(1), 1, "full", 0))
    # re-configured slots start empty: slot 2 becomes a ring of one non-sink row, slot 1 again (20, 0)
    p.ring(2, 12, 11)
    p.ring(1, 20, 0)
    p.step((2, 0, 0, t(12), 2, "full", 0), (1, 0, 0, t(6), 1, "full", 0), (0, 2, L(0) - 2, t(2), 2, "full", 0))
    for r in range(3):
        p.step((2, 1, 11, t(1), 1, "full", 0), (1, 0, L(1), t(1), 1, "full", 0),
               (3, 2, L(3) - 2, t(2), 1, "topk", 3), (0, 1, L(0) - 1, t(1), 1, "full", 0))
    p.step((3, 2, 0, t(3), 3, "full", 0), (0, 0, L(0), t(1), 1, "full", 0))  # back into the sinks
    missing = sorted(set(COVERAGE) - p.covered)
    if missing:
        raise AssertionError("the ring plan lacks: " + "; ".join(COVERAGE[m] for m in missing))
    return p


def self_check(cfg, weights):
    """Without discards the ring reference is reference.Reference, rollbacks included."""
    ring = RingReference(cfg, weights)
    slot = ring.new_slot(40, 3)
    rng = np.random.default_rng(1)
    toks = [int(x) for x in rng.integers(3, cfg.vocab_size, 30)]
    got = np.concatenate([ring.step(slot, 0, 0, toks[:20]), ring.step(slot, 0, 17, toks[17:30])[3:]])
    plain = Reference(cfg, weights).forward(toks)
    err = float(np.abs(got - plain).max() / np.abs(plain).max())
    return [] if err < 1e-12 else [f"the ring reference without discards differs from reference.py by {err:.2e}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--np", default="1,2,3")
    ap.add_argument("--kv", default="f32,f16,bf16")
    a = ap.parse_args()
    manifest = os.path.join(a.models, "manifest.json")
    if not os.path.exists(manifest):
        print(f"FAIL: {manifest} is missing (the golden_setup fixture did not run)")
        return 1
    by_name = {c["name"]: c for c in json.load(open(manifest))["cases"]}
    os.makedirs(a.work, exist_ok=True)
    kvs = a.kv.split(",")
    failures = 0
    for seed, name in enumerate(MODELS + RING_MODELS):
        path = by_name[name]["model"]
        cfg, weights = readback.hf_model(path) if os.path.isdir(path) else readback.gguf_llama_model(path)
        t0 = time.time()
        problems = self_check(cfg, weights)
        plan = build_plan(RingReference(cfg, weights), seed)
        # how far rounding alone (emulated) and a missing re-rotation move the rows
        exact = plan.logits["exact"]

        def dev(store):
            return max(float(np.abs(plan.logits[store][key] - ref).max() / np.abs(ref).max())
                       for key, ref in exact.items())

        emulated = {s: dev(s) for s in EMULATED}
        for kv in ("f16", "bf16"):
            if 3 * emulated[kv] > KV_TOL[kv]:
                problems.append(f"rounding to {kv} alone moves the reference by {emulated[kv]:.2e}: tolerance "
                                f"{KV_TOL[kv]:.2e} leaves too little room")
        if emulated["norotate"] < 4 * max(KV_TOL.values()):
            problems.append(f"keys left unrotated move the rows only {emulated['norotate']:.2e}: the plan does not "
                            "test shift-RoPE")
        print(f"     {name}: reference {time.time() - t0:.1f}s; emulated caches off by f16 {emulated['f16']:.1e}, "
              f"bf16 {emulated['bf16']:.1e}, unrotated keys {emulated['norotate']:.2f} of max|logit|", flush=True)
        if problems:
            failures += 1
            print(f"FAIL {name} reference:\n    " + "\n    ".join(problems), flush=True)
            continue
        kv_bytes = {}
        for kv in kvs:
            plan.kv = kv
            stem = os.path.join(a.work, f"ring_{name.replace('/', '_')}_{kv}")
            with open(stem + ".plan", "w") as f:
                f.write(plan.text(kv))
            for np_ in [int(x) for x in a.np.split(",")]:
                out_path = f"{stem}.np{np_}.out"
                if os.path.exists(out_path):
                    os.remove(out_path)
                t0 = time.time()
                p = run_driver(a.driver, np_, path, stem + ".plan", out_path)
                dt = time.time() - t0
                problems = []
                if p.returncode != 0:
                    err = p.stderr.strip().splitlines()
                    problems.append(f"exit {p.returncode}: {' | '.join(err[-4:]) if err else '(no stderr)'}")
                info = {"rows": 0, "bad": 0, "max_err": 0.0}
                if os.path.exists(out_path):
                    lines = open(out_path).read().splitlines()
                    more, info = check_output(lines, plan, plan.expected(), N_BAD_CASES, KV_TOL[kv])
                    problems += more
                    kv_bytes[(kv, np_)] = info["kv_bytes"]
                    f32_bytes = kv_bytes.get(("f32", np_))
                    if kv != "f32" and f32_bytes and info["kv_bytes"] and 2 * info["kv_bytes"] != f32_bytes:
                        problems.append(f"engine_kv_bytes {info['kv_bytes']} in {kv}, {f32_bytes} in f32: not half")
                else:
                    problems.append("the driver wrote no output")
                if problems:
                    failures += 1
                    print(f"FAIL {name} kv {kv} np={np_} ({dt:.1f}s):\n    " + "\n    ".join(problems[:12]), flush=True)
                else:
                    print(f"ok   {name} kv {kv} np={np_}: {len(plan.steps)} steps, {info['rows']} rows within "
                          f"{KV_TOL[kv]:.1e} (max {info['max_err']:.1e}), {info['bad']} bad steps refused ({dt:.1f}s)",
                          flush=True)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
