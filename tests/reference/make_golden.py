#!/usr/bin/python3
"""Fixture of the golden tests: writes every model of golden_cases.py into OUT_DIR with the
reference's expected logits and greedy ids (OUT_DIR/manifest.json).

usage: make_golden.py OUT_DIR [--group G ...] [--config C ...]"""
import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import golden_cases  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--group", action="append")
    ap.add_argument("--config", action="append")
    a = ap.parse_args()
    t0 = time.time()
    m = golden_cases.build(a.out_dir, a.group, a.config)
    bad = 0
    for c in m["cases"]:
        tie = c["min_gap"] < golden_cases.MIN_GAP
        special = sorted(set(c["ids"]) & set(golden_cases.SPECIAL_IDS))
        bad += tie or bool(special)
        flag = "NEAR-TIE" if tie else f"SPECIAL {special}" if special else "ok"
        print(f"{flag:8s} {c['name']:42s} min top-2 gap "
              f"{c['min_gap']:.2e}  ids {' '.join(map(str, c['ids'][:8]))} ...")
    print(f"{len(m['cases'])} cases written to {a.out_dir} in {time.time() - t0:.1f}s")
    if bad:
        print(f"FAIL: {bad} case(s) have a greedy step within {golden_cases.MIN_GAP} (relative) "
              f"of a tie or generate one of the special ids {golden_cases.SPECIAL_IDS}; change "
              "their seed in golden_cases.CONFIGS")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
