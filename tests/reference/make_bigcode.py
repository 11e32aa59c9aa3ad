#!/usr/bin/python3
"""Fixture of the GPT-BigCode golden tests: writes every model of bigcode_cases.py into
OUT_DIR with the reference's expected logits and greedy ids (OUT_DIR/manifest.json).

usage: make_bigcode.py OUT_DIR"""
import os
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bigcode_cases  # noqa: E402


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    out_dir = sys.argv[1]
    t0 = time.time()
    m = bigcode_cases.build(out_dir)
    bad = 0
    for c in m["cases"]:
        problems = bigcode_cases.problems(c)
        bad += bool(problems)
        print(f"{' '.join(problems) or 'ok':8s} {c['name']:40s} min top-2 gap "
              f"{c['min_gap']:.2e}  ids {' '.join(map(str, c['ids'][:8]))} ...")
    print(f"{len(m['cases'])} cases written to {out_dir} in {time.time() - t0:.1f}s")
    if bad:
        print(f"FAIL: {bad} case(s) have a greedy step within {bigcode_cases.MIN_GAP} "
              f"(relative) of a tie or generate one of the special ids "
              f"{bigcode_cases.SPECIAL_IDS}; change their seed in bigcode_cases.CONFIGS")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
