#!/usr/bin/python3
"""Failures under tensor parallelism end the whole job, quickly and loudly:
  1. one rank killed mid-generation: the job exits non-zero within 10 s;
  2. one rank given a bad model file (MPMD launch, the other ranks a good one): every rank
     stops, the failing rank's message naming the file is on stderr once, exit non-zero;
  3. every rank given a truncated file: one message, not one per rank;
  4. one rank stopped mid-generation (SIGSTOP: a hung host, as a dead link looks from the other
     side): the heartbeat notices the silence, the job exits non-zero within 10 s, and stderr
     names the silent rank;
  5. one rank given a different but valid model file (one byte of its weights changed), or
     another --ctx-size: refused at start, rank 0 naming the rank and the field, no output.

usage: run_failures.py --infernode BIN --model GOOD_GGUF --work DIR"""
import argparse
import os
import signal
import subprocess
import sys
import time

import mpi_util


def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def rank_pids(launcher_pid, np_, timeout=20):
    """pids of the infernode ranks started by this mpirun (its children), by
    OMPI_COMM_WORLD_RANK; other jobs running at the same time are not ours."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                if not cmd or not cmd[0].endswith(b"infernode") or parent(pid) != launcher_pid:
                    continue
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            for kv in env:
                if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                    found[int(kv.split(b"=")[1])] = int(pid)
        if len(found) == np_:
            return found
        time.sleep(0.1)
    return {}


def long_generation(a):
    """mpirun -np 2 generating for minutes, 1.5 s into it: (process, {rank: pid}), or a problem."""
    args = [a.infernode, "generate", "-m", a.model, "--prompt-ids", "1", "-n", "100000", "--temp", "0", "--ids",
            "--ignore-eos", "--ctx-size", "4096"]
    p = subprocess.Popen(mpi_util.mpirun_cmd(2, args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids = rank_pids(p.pid, 2)
    if 1 not in pids:
        p.kill()
        return None, "could not find rank 1's process"
    time.sleep(1.5)  # well into generation
    if p.poll() is not None:
        return None, f"the job ended before the test could act (exit {p.returncode}); generation too short"
    return p, pids


def signal_mid_generation(a, sig, what, stderr_names=()):
    """Sends sig to rank 1 mid-generation: the job must end non-zero within 10 s, its stderr
    naming each of stderr_names. Rank 1 is killed afterwards whatever happened."""
    p, pids = long_generation(a)
    if p is None:
        return [pids]
    os.kill(pids[1], sig)
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return [f"the job still runs 30 s after rank 1 {what}"]
    finally:
        try:
            os.kill(pids[1], signal.SIGKILL)
        except ProcessLookupError:
            pass
    dt = time.time() - t0
    problems = []
    if dt > 10:
        problems.append(f"the job took {dt:.1f} s to end after rank 1 {what}")
    if p.returncode == 0:
        problems.append(f"the job exited 0 after rank 1 {what}")
    if not all(n in err for n in stderr_names):
        problems.append(f"stderr does not name {' and '.join(stderr_names)}: {err.strip()[-300:]}")
    print(f"rank 1 {what}: job ended {dt:.2f} s later, exit {p.returncode}")
    return problems


def kill_mid_generation(a):
    return signal_mid_generation(a, signal.SIGKILL, "was killed")


def bad_file_on_one_rank(a):
    bad = os.path.join(a.work, "bad.gguf")
    with open(a.model, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    common = ["generate", "--prompt-ids", "1,2,3", "-n", "4", "--temp", "0", "--ids"]
    cmd = mpi_util.mpirun_cmd(1, [a.infernode] + common + ["-m", a.model])
    cmd += [":", "-np", "1", a.infernode] + common + ["-m", bad]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    dt = time.time() - t0
    problems = []
    if p.returncode == 0:
        problems.append("exit 0 with a bad file on rank 1")
    if bad not in p.stderr:
        problems.append(f"stderr does not name {bad}: {p.stderr.strip()[:300]}")
    if p.stdout.strip():
        problems.append(f"rank 0 generated anyway: {p.stdout.strip()[:80]}")
    print(f"bad file on rank 1: exit {p.returncode} in {dt:.2f} s; stderr: {p.stderr.strip().splitlines()[:2]}")
    return problems


def bad_file_everywhere(a):
    bad = os.path.join(a.work, "truncated.gguf")
    with open(a.model, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[:100])
    p = mpi_util.run(3, [a.infernode, "generate", "-m", bad, "--prompt-ids", "1", "-n", "2", "--ids"], timeout=60)
    problems = []
    n_msgs = p.stderr.count(bad)
    if p.returncode == 0:
        problems.append("exit 0 with a truncated file")
    if n_msgs != 1:
        problems.append(f"the file is named {n_msgs} times on stderr (expected once): {p.stderr.strip()[:300]}")
    print(f"truncated file on 3 ranks: exit {p.returncode}, message printed {n_msgs} time(s)")
    return problems


def stop_mid_generation(a):
    return signal_mid_generation(a, signal.SIGSTOP, "stopped answering", ("rank 1", "silent"))


def different_model_on_one_rank(a):
    other = os.path.join(a.work, "other.gguf")
    with open(a.model, "rb") as f:
        data = bytearray(f.read())
    data[min(len(data), 4 << 20) - 1] ^= 1  # a weight's last byte: the file stays valid
    with open(other, "wb") as f:
        f.write(data)
    common = ["generate", "--prompt-ids", "1,2,3", "-n", "4", "--temp", "0", "--ids"]
    problems = []
    for what, rank1, field in (("another file", ["-m", other], "file header"),
                               ("another --ctx-size", ["-m", a.model, "--ctx-size", "64"], "context size")):
        cmd = mpi_util.mpirun_cmd(1, [a.infernode] + common + ["-m", a.model])
        cmd += [":", "-np", "1", a.infernode] + common + rank1
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode == 0:
            problems.append(f"{what}: exit 0")
        if "rank 1" not in p.stderr or field not in p.stderr:
            problems.append(f"{what}: stderr does not name rank 1 and the {field}: {p.stderr.strip()[:300]}")
        if p.stdout.strip():
            problems.append(f"{what}: generated anyway: {p.stdout.strip()[:80]}")
        msg = [line for line in p.stderr.splitlines() if "rank 1" in line]
        print(f"{what} on rank 1: exit {p.returncode}; {msg[:1]}")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    failures = 0
    for test in (kill_mid_generation, bad_file_on_one_rank, bad_file_everywhere, stop_mid_generation,
                 different_model_on_one_rank):
        problems = test(a)
        for pr in problems:
            print(f"FAIL {test.__name__}: {pr}")
        failures += bool(problems)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
