#!/usr/bin/python3
"""Real runs of `infernode generate` (stories260K from ../shared) under a restricted CPU set
and under a cgroup CPU quota.

--check pinning: the rank pins its threads only within the CPUs it was started on, and says so
  on its "infernode: rank N: ..." line. Runs `taskset -c 1 infernode generate`, the same with 2
  OpenMP threads (more threads than allowed CPUs: they share CPU 1, never CPU 0), `taskset -c 1
  mpirun --bind-to none -np 1` and `-np 2` of it (the ranks inherit the set; Open MPI's default
  --bind-to core would instead bind rank 0 to core 0 whatever mpirun's own affinity, and the rank
  then obeys that), `mpirun --cpu-set 1 -np 1` (the launcher's own binding), and an unrestricted
  run (one thread pinned per allowed CPU). While each run is alive -- rank 0 blocks opening its
  --logits-out, a FIFO this script opens only after looking -- every thread of every rank is
  read from /proc/PID/task/*/status: Cpus_allowed_list must lie within the set given, and the
  rank's line must name the same CPUs.
--check quota: in a cgroup this script creates (v1 cpu controller: cpu.cfs_quota_us over
  cpu.cfs_period_us; else v2 cpu.max), with a quota of 1 CPU the default thread count is 1,
  with 1.5 CPUs it is 2, OMP_NUM_THREADS and -t still win; the cgroup is removed afterwards,
  also on failure. Without privileges to create one it skips (fails when CI=true). Also, with
  no privileges needed, INFERNODE_CGROUP_ROOT pointing at fake trees: 0.5 CPUs gives 1 thread,
  a malformed cpu.max a warning that names the file and the allowed CPUs' count.

Exit 77 (skip) when ../shared's model is absent, unless CI=true, where that fails; --check
pinning also skips on a process that may not use both CPUs 0 and 1.

usage: run_cpuset.py --check pinning|quota --infernode BIN --dump CPUSET_DUMP --model PATH"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
CI = os.environ.get("CI") == "true"
MPIRUN = os.environ.get("MPIRUN", "mpirun")
RANK_LINE = re.compile(r"^infernode: rank (\d+): (.*)$", re.M)
CPUS_IN_LINE = re.compile(r"(?:pinned to|on) CPUs (\S+)")


def skip(msg):
    print(("FAIL (CI=true): " if CI else "skip: ") + msg)
    return 1 if CI else SKIP


def parse_list(text):
    """Linux CPU list "0-2,5" -> {0, 1, 2, 5}."""
    cpus = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def base_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "INFERNODE_CGROUP_ROOT"))}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.update(extra)
    return env


def mpirun(np_, *extra):
    cmd = [MPIRUN, "-np", str(np_), "--oversubscribe", "--mca", "mpi_yield_when_idle", "1", "-x", "OMP_WAIT_POLICY"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd + list(extra)


def comm_of(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def infernode_pids(top):
    """top and its descendants whose command is infernode."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append((int(d), comm))
    found, todo = [top] if comm_of(top) == "infernode" else [], [top]
    while todo:
        pid = todo.pop()
        for child, comm in children.get(pid, []):
            todo.append(child)
            if comm == "infernode":
                found.append(child)
    return found


def thread_cpus(pid):
    """{tid: set of CPUs} from /proc/PID/task/*/status."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                m = re.search(r"^Cpus_allowed_list:\s*(\S+)", f.read(), re.M)
            out[int(tid)] = parse_list(m.group(1))
        except (OSError, AttributeError):
            continue
    return out


def run_live(cmd, env, n_ranks, work, timeout=120):
    """Runs cmd (an `infernode generate` with --logits-out FIFO appended) until every rank has
    printed its line and rank 0 waits on the FIFO; then reads every rank's threads' CPUs, lets
    it finish. Returns (returncode, stderr, {pid: {tid: cpus}})."""
    fifo = os.path.join(work, "logits.fifo")
    if os.path.exists(fifo):
        os.unlink(fifo)
    os.mkfifo(fifo)
    p = subprocess.Popen(cmd + ["--logits-out", fifo], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    err_lines, out_chunks = [], []
    readers = [threading.Thread(target=lambda: err_lines.extend(p.stderr), daemon=True),
               threading.Thread(target=lambda: out_chunks.append(p.stdout.read()), daemon=True)]
    for t in readers:
        t.start()
    seen = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        ranks = {m.group(1) for m in RANK_LINE.finditer("".join(err_lines))}
        if len(ranks) >= n_ranks:
            break
        time.sleep(0.02)
    if p.poll() is None:
        time.sleep(0.2)  # rank 0 goes on to evaluate the prompt and open the FIFO
        for pid in infernode_pids(p.pid):
            try:
                seen[pid] = thread_cpus(pid)
            except OSError:
                pass
    drained = threading.Thread(target=lambda: open(fifo, "rb").read(), daemon=True)
    drained.start()
    try:
        p.wait(timeout=max(5, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    drained.join(timeout=5)
    if drained.is_alive():  # the process never opened the FIFO: release our reader
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    for t in readers:
        t.join(timeout=10)
    return p.returncode, "".join(err_lines), seen


def check_pinning(a):
    work = tempfile.mkdtemp(prefix="cpuset_pin_")
    gen = [a.infernode, "generate", "-m", a.model, "--prompt-ids", "1,2,3", "-n", "8", "--ids", "--temp", "0"]
    mine = os.sched_getaffinity(0)
    everything = sorted(mine)
    cases = [
        # (name, command, env, ranks, the CPUs the rank was given, what each rank line says)
        ("taskset -c 1, default threads", ["taskset", "-c", "1"] + gen, base_env(), 1, {1},
         r"1 thread pinned to CPUs 1$"),
        ("taskset -c 1, 2 threads", ["taskset", "-c", "1"] + gen, base_env(OMP_NUM_THREADS="2"), 1, {1},
         r"2 threads unpinned on CPUs 1 "),
        ("taskset -c 1 mpirun --bind-to none -np 1", ["taskset", "-c", "1"] + mpirun(1, "--bind-to", "none") + gen,
         base_env(), 1, {1}, r"1 thread pinned to CPUs 1$"),
        ("taskset -c 1 mpirun --bind-to none -np 2", ["taskset", "-c", "1"] + mpirun(2, "--bind-to", "none") + gen,
         base_env(), 2, {1}, r"1 thread unpinned on CPUs 1 \(1 allowed CPUs shared by 2 ranks\)"),
        ("mpirun --cpu-set 1 -np 1", mpirun(1, "--cpu-set", "1") + gen, base_env(), 1, {1},
         r"1 thread pinned to CPUs 1$"),
        ("unrestricted, default threads", gen, base_env(), 1, mine,
         rf"{len(mine)} threads? pinned to CPUs \S+$"),
    ]
    failures = 0
    try:
        dump = subprocess.run(["taskset", "-c", "1", a.dump, "start"], capture_output=True, text=True, timeout=30)
        ok = dump.returncode == 0 and "start=1\n" in dump.stdout and "thread=1\n" in dump.stdout
        print(f"{'ok  ' if ok else 'FAIL'} taskset -c 1 cpuset_dump start: {dump.stdout.strip()!r}")
        failures += not ok
        for name, cmd, env, n_ranks, given, says in cases:
            rc, err, seen = run_live(cmd, env, n_ranks, work)
            problems = []
            if rc != 0:
                problems.append(f"exit {rc}: {err.strip()[-400:]}")
            lines = {int(m.group(1)): m.group(2) for m in RANK_LINE.finditer(err)}
            if sorted(lines) != list(range(n_ranks)):
                problems.append(f"rank lines for {sorted(lines)}, expected {n_ranks}")
            for rank, text in sorted(lines.items()):
                m = CPUS_IN_LINE.search(text)
                if not re.search(says, text) or not m or not parse_list(m.group(1)) <= given:
                    problems.append(f"rank {rank} says '{text}' (expected /{says}/ within {sorted(given)})")
            if len(seen) != n_ranks:
                problems.append(f"found {len(seen)} live infernode processes, expected {n_ranks}")
            for pid, threads in seen.items():
                outside = {tid: sorted(c) for tid, c in threads.items() if not c <= given}
                if outside:
                    problems.append(f"pid {pid}: threads outside {sorted(given)}: {outside}")
            if name.startswith("unrestricted") and len(mine) > 1 and seen:
                singles = set().union(*(c for t in seen.values() for c in t.values() if len(c) == 1))
                if singles != mine:
                    problems.append(f"threads pinned one per CPU cover {sorted(singles)}, expected {everything}")
            summary = "; ".join(f"pid {pid}: " + ", ".join(sorted({",".join(map(str, sorted(c)))
                                                                   for c in t.values()})) for pid, t in seen.items())
            print(f"{'FAIL' if problems else 'ok  '} {name}: {' | '.join(lines.values())} [threads' CPUs: {summary}]")
            for problem in problems:
                print(f"     {problem}")
            failures += bool(problems)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


# ---- quota ----

def mounts():
    """(fstype, super options, mount point, root) of every mountinfo line."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3:
                continue
            unesc = lambda s: re.sub(r"\\([0-3][0-7][0-7])", lambda m: chr(int(m.group(1), 8)), s)
            out.append((rest[0], rest[2].split(","), unesc(fields[4]), unesc(fields[3])))
    return out


def own_cgroup(v2):
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrl, path = line.rstrip("\n").split(":", 2)
            if (v2 and hid == "0" and ctrl == "") or (not v2 and "cpu" in ctrl.split(",")):
                return path
    return None


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class TestCgroup:
    """A cgroup of our own with a CPU quota: v1's cpu controller if mounted, else v2's."""

    def __init__(self):
        self.dir, self.kind, self.tried = None, None, []

    def create(self):
        for fstype, opts, point, root in mounts():
            if fstype == "cgroup" and "cpu" in opts:
                if self._try_v1(point, root):
                    return True
        for fstype, _, point, root in mounts():
            if fstype == "cgroup2" and self._try_v2(point, root):
                return True
        return False

    def _parents(self, point, root, v2):
        path = own_cgroup(v2) or "/"
        rel = path[len(root):] if root != "/" and path.startswith(root) else path
        return [os.path.normpath(point + "/" + rel), point] if rel.strip("/") else [point]

    def _try_v1(self, point, root):
        for parent in self._parents(point, root, False):
            d = os.path.join(parent, f"infernode-test-{os.getpid()}")
            try:
                os.mkdir(d)
            except OSError as e:
                self.tried.append(f"mkdir {d}: {e.strerror}")
                continue
            self.dir, self.kind = d, "v1"
            return True
        return False

    def _try_v2(self, point, root):
        for parent in self._parents(point, root, True):
            try:
                with open(os.path.join(parent, "cgroup.controllers")) as f:
                    if "cpu" not in f.read().split():
                        self.tried.append(f"{parent}: no cpu controller in cgroup v2")
                        continue
                with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                    if "cpu" not in f.read().split():
                        write(os.path.join(parent, "cgroup.subtree_control"), "+cpu")
                d = os.path.join(parent, f"infernode-test-{os.getpid()}")
                os.mkdir(d)
            except OSError as e:
                self.tried.append(f"{parent}: {e.strerror}")
                continue
            self.dir, self.kind = d, "v2"
            return True
        return False

    def set_quota(self, quota, period=100000):
        if self.kind == "v1":
            write(os.path.join(self.dir, "cpu.cfs_period_us"), str(period))
            write(os.path.join(self.dir, "cpu.cfs_quota_us"), str(quota))
        else:
            write(os.path.join(self.dir, "cpu.max"), f"{quota} {period}")

    def enter(self):
        """For preexec_fn: moves the child in before it runs infernode."""
        write(os.path.join(self.dir, "cgroup.procs"), str(os.getpid()))

    def remove(self):
        if not self.dir:
            return
        for _ in range(100):
            try:
                os.rmdir(self.dir)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        print(f"warning: could not remove {self.dir}")


def threads_of(err):
    m = RANK_LINE.search(err)
    t = re.search(r"(\d+) threads? ", m.group(2)) if m else None
    return int(t.group(1)) if t else None


def fake_tree(base, cpu_max):
    os.makedirs(os.path.join(base, "proc/self"))
    os.makedirs(os.path.join(base, "sys/fs/cgroup/job"))
    write(os.path.join(base, "proc/self/cgroup"), "0::/job\n")
    write(os.path.join(base, "proc/self/mountinfo"), "35 30 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    write(os.path.join(base, "sys/fs/cgroup/job/cpu.max"), cpu_max)
    return base


def check_quota(a):
    gen = [a.infernode, "generate", "-m", a.model, "--prompt-ids", "1,2,3", "-n", "4", "--ids"]
    allowed = len(os.sched_getaffinity(0))
    failures = 0

    def report(name, ok, err, why=""):
        nonlocal failures
        lines = [ln for ln in err.splitlines() if ln.startswith(("infernode: rank 0:", "infernode: warning",
                                                                   "infernode: 1 thread", "infernode: error"))
                 or re.match(r"infernode: \d+ threads by default", ln)]
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {' | '.join(lines)}{' -- ' + why if why and not ok else ''}")
        failures += not ok

    work = tempfile.mkdtemp(prefix="cpuset_quota_")
    try:
        # No privileges needed: fake trees through INFERNODE_CGROUP_ROOT.
        root = fake_tree(os.path.join(work, "half"), "50000 100000\n")
        p = subprocess.run(gen, capture_output=True, text=True, timeout=120, env=base_env(INFERNODE_CGROUP_ROOT=root))
        report("fake tree, 0.5 CPUs -> 1 thread", p.returncode == 0 and threads_of(p.stderr) == 1 and
               (allowed == 1 or "CPU quota of 0.50 CPUs" in p.stderr), p.stderr)
        root = fake_tree(os.path.join(work, "bad"), "fifty 100000\n")
        p = subprocess.run(gen, capture_output=True, text=True, timeout=120, env=base_env(INFERNODE_CGROUP_ROOT=root))
        report("fake tree, malformed cpu.max -> warning, all allowed CPUs",
               p.returncode == 0 and threads_of(p.stderr) == allowed and
               re.search(r"infernode: warning: .*sys/fs/cgroup/job/cpu.max: 'fifty 100000'", p.stderr) is not None,
               p.stderr)

        cg = TestCgroup()
        try:
            if not cg.create():
                print(f"{failures} failure(s) before the real cgroup")
                r = skip("cannot create a cgroup with a CPU quota here (" + "; ".join(cg.tried) + ")")
                return 1 if failures else r
            print(f"cgroup {cg.kind}: {cg.dir}")
            for quota, want in ((100000, 1), (150000, min(2, allowed))):
                cg.set_quota(quota)
                p = subprocess.run(gen, capture_output=True, text=True, timeout=120, env=base_env(),
                                   preexec_fn=cg.enter)
                says = f"{want} thread{'s' if want > 1 else ''} by default, for a CPU quota of {quota / 1e5:.2f} CPUs"
                report(f"quota {quota}/100000 -> {want} thread(s)",
                       p.returncode == 0 and threads_of(p.stderr) == want and (want == allowed or says in p.stderr),
                       p.stderr, f"expected '{says}'")
            cg.set_quota(100000)
            p = subprocess.run(gen, capture_output=True, text=True, timeout=120, env=base_env(OMP_NUM_THREADS="2"),
                               preexec_fn=cg.enter)
            report("quota 1 CPU, OMP_NUM_THREADS=2 -> 2 threads", p.returncode == 0 and threads_of(p.stderr) == 2,
                   p.stderr)
            p = subprocess.run(gen + ["-t", "2"], capture_output=True, text=True, timeout=120, env=base_env(),
                               preexec_fn=cg.enter)
            report("quota 1 CPU, -t 2 -> 2 threads", p.returncode == 0 and threads_of(p.stderr) == 2, p.stderr)
        finally:
            cg.remove()
        if cg.dir and os.path.exists(cg.dir):
            report(f"cgroup {cg.dir} removed", False, "")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", choices=["pinning", "quota"], required=True)
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.model):
        return skip(f"{a.model} is absent")
    if a.check == "pinning":
        if 1 not in os.sched_getaffinity(0) or len(os.sched_getaffinity(0)) < 2:
            print(f"skip: needs CPUs 0 and 1; this process may use {sorted(os.sched_getaffinity(0))}")
            return SKIP  # the machine's, not a missing ../shared: skipped also when CI=true
        if not shutil.which("taskset") or not shutil.which(MPIRUN):
            return skip("needs taskset (util-linux) and mpirun")
        return check_pinning(a)
    return check_quota(a)


if __name__ == "__main__":
    sys.exit(main())
