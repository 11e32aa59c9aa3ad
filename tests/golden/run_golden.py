#!/usr/bin/python3
"""Golden tests: `infernode generate` against the NumPy reference.

  run_golden.py --infernode BIN --models DIR --group GROUP
      every case of GROUP in DIR/manifest.json (written by tests/reference/make_golden.py)
  run_golden.py --infernode BIN --stories PATH/stories260K.bin [-n 200]
      the real stories260K model: greedy from BOS, ids computed here by the reference

Per case: exit 0, stdout exactly one line of ids, the prompt logits (float32 [n_prompt][vocab]
from --logits-out) within 1e-4 x max|logit| of the reference, and the greedy ids identical.
Cases run with --quant f32 unless the manifest gives their own quant (null: as stored),
tolerance and whether ids must match (golden_cases.STORED_TOL says why).
Prints one line per case saying what failed and by how much; exits 1 if any case failed,
77 (skip) if the stories model is absent and CI is not "true"."""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402

REL_TOL = 1e-4
TIMEOUT = 300


def run_case(infernode, name, model, prompt, n, ref_logits, ref_ids, gaps, work, quant="f32",
             rel_tol=REL_TOL, compare_ids=True, launcher=()):
    """Returns a list of problems (empty when the case passes) and a summary string.
    launcher: words put before the infernode command (an mpirun line)."""
    out = os.path.join(work, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".logits.f32")
    if os.path.exists(out):
        os.remove(out)
    cmd = list(launcher) + [infernode, "generate", "-m", model, "--prompt-ids",
                            ",".join(map(str, prompt)), "-n", str(n), "--temp", "0", "--ids",
                            "--kv-type", "f32", "--logits-out", out] + (["--quant", quant] if quant else [])
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return [f"timed out after {TIMEOUT}s"], ""
    dt = time.time() - t0
    if p.returncode != 0:
        err = p.stderr.strip().splitlines()
        err = [l for l in err if "error:" in l] or err     # the engine's, not mpirun's, message
        return [f"exit {p.returncode}: {err[-1] if err else '(no stderr)'}"], " ".join(cmd)
    problems = []
    lines = p.stdout.splitlines()
    ids = None
    if len(lines) != 1 or not re.fullmatch(r"\d+( \d+)*", lines[0].strip()):
        problems.append(f"stdout is not one line of ids: {p.stdout[:200]!r}")
    else:
        ids = [int(t) for t in lines[0].split()]

    vocab = ref_logits.shape[1]
    err_txt = ""
    if not os.path.exists(out):
        problems.append(f"--logits-out wrote no file {out}")
    else:
        raw = np.fromfile(out, dtype="<f4")
        if raw.size != ref_logits.size:
            problems.append(f"logits file has {raw.size} floats, expected "
                            f"{ref_logits.shape[0]}x{vocab} = {ref_logits.size}")
        else:
            got = raw.reshape(ref_logits.shape).astype(np.float64)
            scale = np.abs(ref_logits).max()
            diff = np.abs(got - ref_logits)
            if not np.all(np.isfinite(got)):
                problems.append("logits contain NaN/Inf")
            else:
                worst = np.unravel_index(np.argmax(diff), diff.shape)
                rel = diff.max() / scale
                err_txt = f"logits rel err {rel:.1e}"
                if rel > rel_tol:
                    problems.append(
                        f"logits max abs err {diff.max():.3e} = {rel:.2e} x max|logit| "
                        f"(tol {rel_tol:.0e}); worst at position {worst[0]} token {worst[1]}: "
                        f"got {got[worst]:.6g}, reference {ref_logits[worst]:.6g}")

    if ids is not None and not compare_ids:
        err_txt += ", ids not compared" + (" (identical)" if ids == ref_ids else "")
    elif ids is not None:
        if ids != ref_ids:
            k = next((i for i in range(min(len(ids), len(ref_ids))) if ids[i] != ref_ids[i]),
                     min(len(ids), len(ref_ids)))
            msg = f"greedy ids differ at step {k}"
            if k < len(ids) and k < len(ref_ids):
                msg += f": got {ids[k]}, reference {ref_ids[k]}"
            else:
                msg += f": got {len(ids)} ids, reference {len(ref_ids)}"
            if k < len(gaps):
                msg += f" (reference top-2 gap there {gaps[k]:.2e} of max|logit|)"
            msg += f"\n        got       {' '.join(map(str, ids))}" \
                   f"\n        reference {' '.join(map(str, ref_ids))}"
            problems.append(msg)
    summary = f"{err_txt}, {len(ref_ids)} ids, {dt:.2f}s"
    return problems, summary


def report(name, problems, summary):
    if problems:
        print(f"FAIL {name}: " + "; ".join(problems), flush=True)
    else:
        print(f"PASS {name}: {summary}", flush=True)
    return not problems


def run_group(a):
    manifest = os.path.join(a.models, "manifest.json")
    if not os.path.exists(manifest):
        print(f"FAIL: {manifest} is missing (the golden_setup fixture did not run)")
        return 1
    cases = [c for c in json.load(open(manifest))["cases"] if c["group"] == a.group]
    if not cases:
        print(f"FAIL: no cases of group {a.group} in {manifest}")
        return 1
    work = os.path.join(a.models, "out")
    os.makedirs(work, exist_ok=True)
    ok = 0
    for c in cases:
        problems, summary = run_case(a.infernode, c["name"], c["model"], c["prompt"], c["n"],
                                     np.load(c["logits"]), c["ids"], c["gaps"], work,
                                     c.get("quant", "f32"), c.get("rel_tol", REL_TOL),
                                     c.get("compare_ids", True))
        ok += report(c["name"], problems, summary)
    print(f"{ok}/{len(cases)} cases of group {a.group} passed")
    return 0 if ok == len(cases) else 1


def run_stories(a):
    import llama2c_io
    from reference import Reference, top2_gap
    if not os.path.exists(a.stories):
        if os.environ.get("CI") == "true":
            print(f"FAIL: {a.stories} is missing (CI=true)")
            return 1
        print(f"SKIP: {a.stories} is missing (the shared/ folder is not beside the project)")
        return 77
    cfg, w = llama2c_io.read(a.stories)
    prompt = [1]
    logits, ids, steps = Reference(cfg, w).generate(prompt, a.n)
    work = tempfile.mkdtemp(prefix="golden_stories_")
    problems, summary = run_case(a.infernode, "stories260K", a.stories, prompt, a.n, logits,
                                 ids, list(top2_gap(steps)), work)
    return 0 if report(f"stories260K ({a.n} greedy ids from BOS)", problems, summary) else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--models")
    ap.add_argument("--group")
    ap.add_argument("--stories")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    if not os.access(a.infernode, os.X_OK):
        print(f"FAIL: {a.infernode} is not an executable")
        return 1
    return run_stories(a) if a.stories else run_group(a)


if __name__ == "__main__":
    sys.exit(main())
