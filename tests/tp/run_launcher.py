#!/usr/bin/python3
"""deploy/launch.sh: the mpirun line it prints for this machine, and a real 2-rank run through
it giving the same greedy tokens as one process.

usage: run_launcher.py --launcher deploy/launch.sh --infernode BIN --model GGUF"""
import argparse
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--launcher", required=True)
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    gen = ["generate", "-m", a.model, "--prompt-ids", "1,7,9", "-n", "24", "--temp", "0", "--ids"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    failures = 0

    dry = subprocess.run([a.launcher, "--dry-run", "--binary", a.infernode, "--"] + gen, capture_output=True, text=True,
                         env=env)
    line = dry.stderr.strip().splitlines()[-1] if dry.stderr.strip() else ""
    want = ["mpirun", "-np", "OMP_NUM_THREADS=", "OMP_PROC_BIND=close", a.infernode]
    if os.geteuid() == 0:
        want.append("--allow-run-as-root")
    missing = [w for w in want if w not in line]
    if dry.returncode != 0 or missing:
        print(f"FAIL dry run: exit {dry.returncode}, missing {missing} in: {line}")
        failures += 1
    else:
        print(f"ok   dry run: {line}")

    one = subprocess.run([a.infernode] + gen, capture_output=True, text=True, env=dict(env, OMP_NUM_THREADS="1"))
    two = subprocess.run([a.launcher, "--np", "2", "--threads", "1", "--binary", a.infernode, "--"] + gen,
                         capture_output=True, text=True, env=env, timeout=120)
    if one.returncode != 0 or two.returncode != 0 or one.stdout != two.stdout:
        print(f"FAIL 2 ranks through the launcher: exit {two.returncode}, ids {two.stdout.strip()!r}, one process "
              f"{one.stdout.strip()!r}; stderr {two.stderr.strip()[-300:]}")
        failures += 1
    else:
        print(f"ok   2 ranks through the launcher = one process: {two.stdout.strip()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
