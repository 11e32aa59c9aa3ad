"""Launching infernode under a real mpirun for the tensor-parallel tests."""
import os
import re
import subprocess

MPIRUN = os.environ.get("MPIRUN", "mpirun")


def mpirun_cmd(np_, args, extra=()):
    """mpirun line for np_ ranks on this machine: oversubscribed, one OpenMP thread per rank,
    ranks yielding while idle (busy-polling ranks on shared cores slow each other ~20x)."""
    cmd = [MPIRUN, "-np", str(np_), "--oversubscribe", "--mca", "mpi_yield_when_idle", "1",
           "-x", "OMP_NUM_THREADS=1", "-x", "OMP_WAIT_POLICY=PASSIVE"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd + list(extra) + list(args)


def run(np_, args, timeout=300, extra=()):
    return subprocess.run(mpirun_cmd(np_, args, extra), capture_output=True, text=True, timeout=timeout)


def resident_after_load(infernode, np_, model):
    """Each rank's resident MiB after loading model, as `infernode generate` reports it."""
    p = run(np_, [infernode, "generate", "-m", model, "--prompt-ids", "1", "-n", "1", "--ids"])
    m = re.search(r"resident after load \(MiB\):([ \d.]+)", p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"np={np_}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return [float(x) for x in m.group(1).split()]


def check_shard_memory(infernode, model, what, slack_mib):
    """Shard-only loading: at 2 and 4 ranks each rank's resident memory after load is at most
    RSS(1 rank)/N + slack_mib. Prints a line per run; returns the number of failing runs."""
    one = resident_after_load(infernode, 1, model)[0]
    failures = 0
    print(f"{what}; 1 rank: {one:.1f} MiB resident")
    for np_ in (2, 4):
        ranks = resident_after_load(infernode, np_, model)
        limit = one / np_ + slack_mib
        bad = [r for r in ranks if r > limit]
        print(f"{'FAIL' if bad else 'ok  '} {np_} ranks: {', '.join(f'{r:.1f}' for r in ranks)} MiB (limit {limit:.1f})")
        failures += bool(bad)
    return failures
