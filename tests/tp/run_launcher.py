#!/usr/bin/python3
"""deploy/launch.sh: the mpirun lines it prints (--dry-run) for this machine, for hostfiles and
for Slurm allocations; real runs through it giving the same greedy tokens as one process; and
SIGTERM to it at any moment ending the job (a drain and exit 0 once serving).

  - ranks: this machine's sockets; the sum of a hostfile's slots= (a line without counts 1,
    comments and blank lines skipped); Slurm's SLURM_NTASKS, else SLURM_NNODES x
    SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE; --np overrides;
  - more ranks than slots only with --oversubscribe (which adds --bind-to none and
    mpi_yield_when_idle); otherwise --map-by socket --bind-to socket;
  - OMP_NUM_THREADS: --threads, else the environment's, else cores over ranks here and unset
    for other machines;
  - INFERNODE_*, OMP_*, GOMP_* forwarded by name (values never printed), --env for others;
  - --if / --btl-if / --oob-if, --rsh-agent, --mca pass through.

usage: run_launcher.py --launcher deploy/launch.sh --infernode BIN --model GGUF"""
import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

FAILURES = []


def check(cond, what):
    print(f"{'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        FAILURES.append(what)
    return cond


def clean_env(**extra):
    """This environment without anything the launcher would forward or read, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INFERNODE_", "OMP_", "GOMP_", "SLURM_", "OMPI_MCA_"))}
    env.update(extra)
    return env


class Dry:
    """launch.sh --dry-run ARGS -- serve: its exit status, message and mpirun argv."""

    def __init__(self, launcher, infernode, args, env):
        p = subprocess.run([launcher, "--dry-run", "--binary", infernode] + args + ["--", "serve"],
                           capture_output=True, text=True, env=env, timeout=60)
        self.rc, self.err = p.returncode, p.stderr.strip()
        lines = [line for line in self.err.splitlines() if line.startswith("mpirun ")]
        self.line = lines[-1] if lines else ""
        self.argv = shlex.split(self.line)

    def opt(self, name):
        """Values following each occurrence of name."""
        return [self.argv[i + 1] for i, a in enumerate(self.argv[:-1]) if a == name]

    def mca(self, name):
        return [self.argv[i + 2] for i, a in enumerate(self.argv[:-2]) if a == "--mca" and self.argv[i + 1] == name]

    def np(self):
        v = self.opt("-np")
        return int(v[0]) if v else None

    def forwarded(self):
        return self.opt("-x")


def machine():
    def count(col):
        out = subprocess.run(["lscpu", f"-p={col}"], capture_output=True, text=True).stdout
        return len({line for line in out.splitlines() if not line.startswith("#")})
    return max(1, count("SOCKET")), max(1, count("CORE"))


def dry_runs(a):
    sockets, cores = machine()
    root = os.geteuid() == 0
    hostfile = os.path.join(a.work, "hosts.txt")
    with open(hostfile, "w") as f:
        f.write("# two dual-socket servers and a big one\n\nnodeA slots=2\n  nodeB   # no slots: 1\n"
                "nodeC slots=3 max_slots=4\n")

    def dry(args, env=None):
        return Dry(a.launcher, a.infernode, args, env if env is not None else clean_env())

    d = dry([])
    check(d.rc == 0 and d.np() == sockets and "--map-by" in d.argv and d.opt("--map-by") == ["socket"]
          and d.opt("--bind-to") == ["socket"] and "--oversubscribe" not in d.argv
          and d.argv[-2:] == [a.infernode, "serve"] and ("--allow-run-as-root" in d.argv) == root
          and f"OMP_NUM_THREADS={max(1, cores // sockets)}" in d.forwarded() and "OMP_PROC_BIND=close" in d.forwarded(),
          f"this machine: {sockets} rank(s), one per socket, {max(1, cores // sockets)} threads each: {d.line}")

    d = dry(["--hostfile", hostfile])
    check(d.rc == 0 and d.np() == 6 and d.opt("--hostfile") == [hostfile] and "--oversubscribe" not in d.argv
          and d.opt("--map-by") == ["socket"] and not any(x.startswith("OMP_NUM_THREADS") for x in d.forwarded()),
          f"hostfile slots 2 + 1 + 3 = 6 ranks, OMP_NUM_THREADS left to the ranks: {d.line}")

    d = dry(["--hostfile", hostfile, "--np", "4"])
    check(d.rc == 0 and d.np() == 4 and "--oversubscribe" not in d.argv, f"--np 4 of 6 slots: {d.line}")

    d = dry(["--hostfile", hostfile, "--np", "7"])
    check(d.rc != 0 and not d.line and "--oversubscribe" in d.err,
          f"--np 7 on 6 slots refused without --oversubscribe: exit {d.rc}: {d.err.splitlines()[-1:]}")

    d = dry(["--hostfile", hostfile, "--np", "7", "--oversubscribe"])
    check(d.rc == 0 and d.np() == 7 and "--oversubscribe" in d.argv and d.opt("--bind-to") == ["none"]
          and d.mca("mpi_yield_when_idle") == ["1"], f"--np 7 --oversubscribe: {d.line}")

    d = dry(["--np", str(cores)])
    check(d.rc == 0 and d.np() == cores and "--oversubscribe" not in d.argv,
          f"--np {cores} (the cores here) without oversubscription: {d.line}")
    d = dry(["--np", str(cores + 1)])
    check(d.rc != 0 and "--oversubscribe" in d.err, f"--np {cores + 1} here refused without --oversubscribe")

    for env, want in (({"SLURM_NTASKS": "5", "SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "2"}, 5),
                      ({"SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "2"}, 6),
                      ({"SLURM_TASKS_PER_NODE": "2(x3),1"}, 7)):
        d = dry([], clean_env(SLURM_JOB_ID="42", **env))
        check(d.rc == 0 and d.np() == want and not d.opt("--hostfile")
              and not any(x.startswith("OMP_NUM_THREADS") for x in d.forwarded()),
              f"Slurm {env}: {want} ranks: {d.line}")
    d = dry([], clean_env(SLURM_JOB_ID="42"))
    check(d.rc != 0 and "--np" in d.err, "Slurm without a task count: refused, asking for --np")
    d = dry(["--hostfile", hostfile], clean_env(SLURM_JOB_ID="42", SLURM_NTASKS="5"))
    check(d.rc == 0 and d.np() == 6, "a hostfile inside Slurm: the hostfile's slots")

    env = clean_env(INFERNODE_MODEL="/models/m.gguf", INFERNODE_ISA="avx2", INFERNODE_TOKEN="s3cret",
                    OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="0", OMP_NUM_THREADS="3", OMP_PROC_BIND="spread",
                    UNRELATED="1", EXTRA="x")
    d = dry(["--hostfile", hostfile, "--env", "EXTRA", "--env", "TMPDIR=/scratch"], env)
    fw = d.forwarded()
    want = ["INFERNODE_MODEL", "INFERNODE_ISA", "INFERNODE_TOKEN", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
            "OMP_NUM_THREADS", "OMP_PROC_BIND", "EXTRA", "TMPDIR=/scratch"]
    check(d.rc == 0 and all(w in fw for w in want) and "UNRELATED" not in fw and "s3cret" not in d.line
          and "OMP_PROC_BIND=close" not in fw and "OMP_PLACES=cores" in fw,
          f"environment forwarded by name ({', '.join(want)}), values not printed: {fw}")
    d = dry(["--hostfile", hostfile, "--threads", "2"], env)
    check([x for x in d.forwarded() if x.startswith("OMP_NUM_THREADS")] == ["OMP_NUM_THREADS=2"],
          f"--threads 2 over OMP_NUM_THREADS=3: {d.forwarded()}")

    d = dry(["--hostfile", hostfile, "--if", "10.1.0.0/16", "--rsh-agent", "/opt/agent", "--mca", "btl", "tcp,self"])
    check(d.mca("btl_tcp_if_include") == ["10.1.0.0/16"] and d.mca("oob_tcp_if_include") == ["10.1.0.0/16"]
          and d.mca("plm_rsh_agent") == ["/opt/agent"] and d.mca("btl") == ["tcp,self"],
          f"--if, --rsh-agent, --mca: {d.line}")
    d = dry(["--btl-if", "eth1", "--oob-if", "eth0"])
    check(d.mca("btl_tcp_if_include") == ["eth1"] and d.mca("oob_tcp_if_include") == ["eth0"],
          "--btl-if eth1 --oob-if eth0")
    check(dry([]).mca("odls_base_sigkill_timeout") == ["0"]
          and dry(["--mca", "odls_base_sigkill_timeout", "1"]).mca("odls_base_sigkill_timeout") == ["1"],
          "aborted ranks killed at once (odls_base_sigkill_timeout 0), unless --mca says otherwise")

    h = subprocess.run([a.launcher, "--help"], capture_output=True, text=True, timeout=30)
    opts = ["--hostfile", "--np", "--threads", "--oversubscribe", "--if", "--btl-if", "--oob-if", "--rsh-agent",
            "--mca", "--env", "--binary", "--teardown-grace", "--dry-run", "--help", "SLURM_NTASKS", "SIGTERM"]
    check(h.returncode == 0 and all(o in h.stdout for o in opts),
          f"--help describes every option: missing {[o for o in opts if o not in h.stdout]}")
    for bad in (["--np", "0"], ["--threads", "x"], ["--bogus"], ["--env", "1BAD"], ["--hostfile", "/nonexistent"]):
        p = subprocess.run([a.launcher, "--dry-run"] + bad + ["--", "serve"], capture_output=True, text=True,
                           env=clean_env(), timeout=30)
        check(p.returncode == 2 and "launch.sh:" in p.stderr, f"refused: {' '.join(bad)}: {p.stderr.strip()[:90]}")


def real_runs(a):
    gen = ["generate", "-m", a.model, "--prompt-ids", "1,7,9", "-n", "24", "--temp", "0", "--ids"]
    env = clean_env(OMP_WAIT_POLICY="PASSIVE")
    one = subprocess.run([a.infernode] + gen, capture_output=True, text=True, env=dict(env, OMP_NUM_THREADS="1"),
                         timeout=120)
    two = subprocess.run([a.launcher, "--np", "2", "--threads", "1", "--oversubscribe", "--binary", a.infernode,
                          "--"] + gen, capture_output=True, text=True, env=env, timeout=120)
    check(one.returncode == 0 and two.returncode == 0 and one.stdout == two.stdout,
          f"2 ranks (--np 2 --oversubscribe) = one process: {two.stdout.strip()[:60]} (exit {two.returncode}; "
          f"{two.stderr.strip()[-300:] if two.returncode else ''})")

    hostfile = os.path.join(a.work, "localhost.txt")
    with open(hostfile, "w") as f:
        f.write("localhost slots=2\n")
    hf = subprocess.run([a.launcher, "--hostfile", hostfile, "--threads", "1", "--mca", "mpi_yield_when_idle", "1",
                         "--binary", a.infernode, "--"] + gen, capture_output=True, text=True, env=env, timeout=120)
    check(one.returncode == 0 and hf.returncode == 0 and one.stdout == hf.stdout,
          f"hostfile 'localhost slots=2': 2 ranks, mapped by socket, = one process (exit {hf.returncode}; "
          f"{hf.stderr.strip()[-300:] if hf.returncode else ''})")


def stop_runs(a):
    """SIGTERM to the launcher of a 2-rank serve at several moments of its start, and once serving."""
    serve = ["serve", "-m", a.model, "--port", "0", "--metrics-port", "-1", "--http-port", "-1", "--drain-seconds", "5"]
    cmd = [a.launcher, "--np", "2", "--threads", "1", "--oversubscribe", "--binary", a.infernode, "--"] + serve
    env = clean_env(OMP_WAIT_POLICY="PASSIVE")
    for delay in (0.05, 0.3, 1.0, 2.0, None):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
        lines = []
        if delay is None:  # once serving
            end = time.time() + 120
            for line in p.stderr:
                lines.append(line)
                if "serving " in line or time.time() > end:
                    break
        else:
            time.sleep(delay)
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        try:
            rest = p.communicate(timeout=30)[1]
            rc = p.returncode
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rest = p.communicate()[1]
            rc = None
        log = "".join(lines) + rest
        dt = time.time() - t0
        when = "once serving" if delay is None else f"{delay:.2f} s after start"
        if delay is None:
            check(rc == 0 and "stopped" in log, f"SIGTERM {when}: drained, exit {rc} in {dt:.2f} s")
        else:
            stage = ("before mpirun" if "before mpirun started" in log else
                     "after a drain" if "infernode: stopped" in log else "while starting")
            check(rc is not None and dt < 20, f"SIGTERM {when}: the job ended ({stage}), exit {rc} in {dt:.2f} s")
            if rc is None:
                print(log[-1500:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--launcher", required=True)
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    a.infernode = os.path.abspath(a.infernode)
    with tempfile.TemporaryDirectory(prefix="ifn_launcher_") as a.work:
        dry_runs(a)
        real_runs(a)
        stop_runs(a)
    print(f"{len(FAILURES)} failures")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
