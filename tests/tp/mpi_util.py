"""Launching infernode under a real mpirun for the tensor-parallel tests."""
import os
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
