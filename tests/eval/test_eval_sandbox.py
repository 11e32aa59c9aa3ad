#!/usr/bin/python3
"""`infernode eval humaneval`'s sandbox against hostile completions (issue 24), given through
--solutions: each escape is tried from inside, and checked from outside to have failed.

  test_eval_sandbox.py --infernode BIN --tasks tasks.jsonl --work DIR

The evaluator starts through a small launcher that holds it until the completions are written,
so that they can aim at the evaluator's real pid; its environment holds a secret token. Tried
(one completion per task, each then returning the right answer if it still can):
  * files: overwrite a canary file beside the test, create files there, in the host's /tmp,
    /etc, /usr, /var/tmp, /dev/shm and / ; read the completions file -> canary unchanged,
    nothing created, not read;
  * secrets: /etc/shadow; /proc/<evaluator>/environ and /mem, the same of its parent (PID 1)
    and of every process it can see, scanned for the token; ptrace(ATTACH) of both -> the
    output holds no line of the real /etc/shadow and not the token;
  * sockets: a Unix socket file and an abstract Unix socket this test listens on, a TCP port on
    127.0.0.1, AF_NETLINK and AF_INET sockets -> no connection arrives, sockets refused;
  * survival: a daemon (fork, setsid, fork, exec with a marker in its argv) from a program
    that then loops past --timeout, and from one that returns at once -> the first is "timed
    out", the second passes, and right after the evaluator exits no process with the marker;
  * limits: 200 forks -> at most 32 tasks; 10 files of 15 MiB -> at most 64 MiB, ENOSPC;
  * the evaluator: kill(evaluator, SIGKILL), kill(ppid), kill(1), kill(-1, SIGKILL), and a
    program that kills its own group -> the evaluator finishes with exit 0 and a full report,
    and its TMPDIR stays empty (nothing of a sample on the host's disk).
Then the canonical solutions, in the same way: pass@1 = 1. And a SIGTERM to the evaluator while
a program that left a daemon runs: it exits 143 with the report of the task done before, and
no marker process remains; a SIGKILL to it: the sample's processes die with it.
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

TIMEOUT = 120
TASKS_LIMIT = 32     # SANDBOX_TASKS
DISK_MIB = 64        # SANDBOX_DISK

failures = []


def check(ok, what):
    print("%s %s" % ("PASS" if ok else "FAIL", what))
    if not ok:
        failures.append(what)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def marked_processes(marker):
    """Pids of the host's processes whose command line holds marker."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


class Listeners:
    """A Unix socket file, an abstract Unix socket and a TCP port on 127.0.0.1, counting what
    they accept."""

    def __init__(self, path, abstract):
        self.socks = []
        for family, addr in ((socket.AF_UNIX, path), (socket.AF_UNIX, "\0" + abstract),
                             (socket.AF_INET, ("127.0.0.1", 0))):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind(addr)
            s.listen(8)
            s.settimeout(0.2)
            self.socks.append(s)
        self.port = self.socks[2].getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.socks]
        for t in self.threads:
            t.start()

    def _serve(self, s):
        while not self.stop:
            try:
                conn, _ = s.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join()
        for s in self.socks:
            s.close()


# Code each hostile completion runs first (exec'd inside the function), given V: the values.
FILES = r'''
import os
for path in V["create"]:
    try:
        with open(path, "w") as fh:
            fh.write("hostile")
        print("WROTE", path, flush=True)
    except OSError as e:
        print("refused", path, type(e).__name__, flush=True)
try:
    with open(V["canary"], "w") as fh:
        fh.write("overwritten")
    print("WROTE", V["canary"], flush=True)
except OSError as e:
    print("canary refused", type(e).__name__, flush=True)
try:
    open(V["solutions"]).read()
    print("READ-SOLUTIONS", flush=True)
except OSError as e:
    print("solutions refused", type(e).__name__, flush=True)
print("ROOT", sorted(os.listdir("/")), flush=True)
'''

SECRETS = r'''
import ctypes, os, re
secret = re.compile(rb"secret-[0-9a-f]{32}")
def show(what, data):
    for m in secret.findall(data):
        print("FOUND", what, m.decode(), flush=True)
try:
    print("SHADOW", open("/etc/shadow").read(), flush=True)
except OSError as e:
    print("shadow refused", type(e).__name__, flush=True)
pids = {V["evaluator"], os.getppid(), 1} | {int(p) for p in os.listdir("/proc") if p.isdigit()}
for pid in sorted(pids - {os.getpid()}):
    try:
        show("environ %d" % pid, open("/proc/%d/environ" % pid, "rb").read())
        print("environ read", pid, flush=True)
    except OSError as e:
        print("environ", pid, type(e).__name__, flush=True)
    try:
        maps = open("/proc/%d/maps" % pid).read()
        with open("/proc/%d/mem" % pid, "rb") as mem:
            for m in re.finditer(r"^([0-9a-f]+)-([0-9a-f]+) r", maps, re.M):
                lo, hi = int(m.group(1), 16), int(m.group(2), 16)
                try:
                    mem.seek(lo)
                    show("mem %d" % pid, mem.read(min(hi - lo, 1 << 24)))
                except (OSError, ValueError, OverflowError):
                    pass
        print("mem read", pid, flush=True)
    except OSError as e:
        print("mem", pid, type(e).__name__, flush=True)
libc = ctypes.CDLL(None, use_errno=True)
for pid in (V["evaluator"], os.getppid()):
    print("ptrace", pid, libc.ptrace(16, pid, 0, 0), ctypes.get_errno(), flush=True)
'''

SOCKETS = r'''
import socket
for what, family, addr in (("unix-file", socket.AF_UNIX, V["unix"]),
                           ("unix-abstract", socket.AF_UNIX, "\0" + V["abstract"]),
                           ("tcp", socket.AF_INET, ("127.0.0.1", V["port"]))):
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(addr)
        print("CONNECTED", what, flush=True)
    except OSError as e:
        print("connect refused", what, type(e).__name__, flush=True)
for family in (socket.AF_NETLINK, socket.AF_INET6, socket.AF_PACKET):
    try:
        socket.socket(family, socket.SOCK_RAW)
        print("SOCKET-OPENED", family, flush=True)
    except OSError as e:
        print("socket refused", family, type(e).__name__, flush=True)
'''

DAEMON = r'''
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(3600)", V["marker"]])
    os._exit(0)
os.wait()
print("DAEMON started", flush=True)
'''

LOOP = r'''
while True:
    pass
'''

FORKS = r'''
import os, time
n = 0
for i in range(200):
    try:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
    except OSError as e:
        print("fork refused", type(e).__name__, flush=True)
        break
print("FORKED", n, flush=True)
'''

DISK = r'''
written = 0
try:
    for i in range(10):
        with open("big%d" % i, "wb") as fh:
            for j in range(15):
                fh.write(b"x" * (1 << 20))
                fh.flush()
                written += 1
except OSError as e:
    print("disk refused", type(e).__name__, e.strerror, flush=True)
print("WRITTEN-MIB", written, flush=True)
'''

KILLS = r'''
import os, signal
for what, pid in (("evaluator", V["evaluator"]), ("ppid", os.getppid()), ("one", 1), ("all", -1)):
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            print("kill sent", what, sig, flush=True)
        except OSError as e:
            print("kill refused", what, type(e).__name__, flush=True)
print("KILLER alive", flush=True)
'''

SUICIDE = r'''
import os, signal
os.killpg(0, signal.SIGKILL)
'''


def hostile(code, canonical, loop=False):
    """A completion that runs code (given V) once, however often the test calls the function,
    and then answers, or loops forever."""
    lines = ("    import builtins\n    if not hasattr(builtins, 'hostile_ran'):\n        builtins.hostile_ran = 1\n"
             "        exec(%r, {'V': V})\n" % code)
    return lines + ("    while True:\n        pass\n" if loop else canonical)


def launch(a, args, env):
    """The evaluator, held by a launcher until go() so that its pid is known first."""
    hold = "import os, sys; sys.stdin.readline(); os.execv(sys.argv[1], sys.argv[1:])"
    p = subprocess.Popen([sys.executable, "-c", hold, a.infernode, "eval", "humaneval", "--tasks", a.tasks] + args,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def go():
        p.stdin.write(b"go\n")
        p.stdin.close()
        p.stdin = None  # communicate() must not flush it
    return p, go


def hostile_run(a, tasks, env, tmpdir):
    work = a.work
    marker = "infernode-hostile-%s" % secrets.token_hex(8)
    canary = os.path.join(work, "canary.txt")
    with open(canary, "w") as fh:
        fh.write("canary-original")
    create = [os.path.join(work, "created-by-sample"), "/tmp/%s" % marker, "/etc/%s" % marker,
              "/usr/%s" % marker, "/var/tmp/%s" % marker, "/dev/shm/%s" % marker, "/%s" % marker]
    unix = os.path.join(work, "host.sock")
    if os.path.exists(unix):
        os.unlink(unix)
    listeners = Listeners(unix, marker)
    solutions = os.path.join(work, "hostile.jsonl")
    # 10 s: room for Python's start and the memory scan on a loaded machine; one sample waits it out
    p, go = launch(a, ["--solutions", solutions, "--timeout", "10", "--json"], env)
    V = {"create": create, "canary": canary, "solutions": solutions, "evaluator": p.pid, "unix": unix, "abstract": marker, "port": listeners.port, "marker": marker}
    plan = [FILES, SECRETS, SOCKETS, DAEMON + LOOP, DAEMON, FORKS, DISK, KILLS, SUICIDE]
    rows = []
    for t, code in zip(tasks, plan):
        rows.append({"task_id": t["task_id"],
                     "completion": "    V = %r\n" % V + hostile(code, t["canonical_solution"])})
    write_jsonl(solutions, rows)
    t0 = time.monotonic()
    go()
    out, err = p.communicate(timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    survivors = marked_processes(marker)
    listeners.close()
    check(p.returncode == 0, "the evaluator exits 0 after the hostile completions (%.1f s): %s"
          % (elapsed, err.decode(errors="replace").strip().splitlines()[-1:]))
    got = json.loads(out)
    s = {t["task_id"]: t["samples"][0] for t in got["tasks"]}
    check(len(s) == len(plan) and got["sandbox"] == "bubblewrap",
          "its report lists all %d hostile samples, sandbox %s" % (len(plan), got["sandbox"]))
    o = [s[t["task_id"]]["output"] for t in tasks[:len(plan)]]
    for i, t in enumerate(tasks[:len(plan)]):
        print("  %s %s %s: %s" % (t["task_id"], s[t["task_id"]]["status"], s[t["task_id"]]["exit_status"],
                                  " | ".join(o[i].strip().splitlines()[-4:])[:300]))
    return V, s, o, survivors, marker, create


def check_hostile(V, s, o, survivors, create, tasks, tmpdir, secret):
    ids = [t["task_id"] for t in tasks]
    with open(V["canary"]) as fh:
        canary = fh.read()
    wrote = [line for line in o[0].splitlines() if line.startswith("WROTE") and not line.startswith("WROTE /tmp/")]
    check(canary == "canary-original" and not wrote and not any(os.path.exists(c) for c in create),
          "files: the canary beside the test is unchanged, nothing was created outside the sandbox "
          "(%s %s; /tmp inside is the sample's own)" % (wrote, [c for c in create if os.path.exists(c)]))
    check("READ-SOLUTIONS" not in o[0] and "ROOT" in o[0] and
          not any(d in o[0].split("ROOT", 1)[1].split("\n", 1)[0] for d in ("'root'", "'home'", "'work'", "'run'")),
          "the evaluator's files are out of view: %s" % o[0].split("ROOT", 1)[-1].split("\n", 1)[0].strip())
    try:
        with open("/etc/shadow") as fh:
            shadow = [line for line in fh.read().splitlines() if line.strip()]
    except OSError:
        shadow = ["root:"]
    check("SHADOW" not in o[1] and not any(line in o[1] for line in shadow) and "shadow refused" in o[1],
          "/etc/shadow is not readable (%d lines of it looked for)" % len(shadow))
    check(secret not in "".join(o) and "environ %d FileNotFoundError" % V["evaluator"] in o[1],
          "the evaluator's environment and memory are not readable (not even there): its secret is in "
          "no output")
    check("ptrace %d -1" % V["evaluator"] in o[1], "ptrace(ATTACH) of the evaluator fails")
    check("CONNECTED" not in o[2] and "SOCKET-OPENED" not in o[2] and o[2].count("connect refused") == 3,
          "sockets: the host's Unix socket file, abstract socket and TCP port are unreachable, raw "
          "sockets refused")
    check(s[ids[3]]["status"] == "timed out" and "DAEMON started" in o[3] and s[ids[4]]["status"] == "passed" and
          "DAEMON started" in o[4], "a program that left a daemon is timed out, another passes")
    check(survivors == [], "no process of a sample survives the evaluator (setsid daemons included): %s" % survivors)
    forked = [int(line.split()[1]) for line in o[5].splitlines() if line.startswith("FORKED")]
    check(forked and forked[0] <= TASKS_LIMIT and s[ids[5]]["status"] == "passed",
          "200 forks: %s succeeded, at most %d tasks per sample" % (forked, TASKS_LIMIT))
    mib = [int(line.split()[1]) for line in o[6].splitlines() if line.startswith("WRITTEN-MIB")]
    check(mib and mib[0] <= DISK_MIB and "No space left" in o[6],
          "10 files of 15 MiB: %s MiB written, then ENOSPC (the tmpfs holds %d MiB)" % (mib, DISK_MIB))
    check("KILLER alive" in o[7] and "kill sent evaluator" not in o[7] and s[ids[7]]["status"] == "passed",
          "kill(evaluator), kill(ppid), kill(1), kill(-1): the evaluator and the sample live on")
    check(s[ids[8]]["status"] == "failed" and s[ids[8]]["exit_status"] == -9,
          "a program that SIGKILLs its own group is reported as signal 9")
    check(os.listdir(tmpdir) == [], "the evaluator's TMPDIR is empty: %s" % os.listdir(tmpdir))


def canonical(a, tasks, env):
    path = os.path.join(a.work, "canonical.jsonl")
    write_jsonl(path, [{"task_id": t["task_id"], "completion": t["canonical_solution"]} for t in tasks])
    p = subprocess.run([a.infernode, "eval", "humaneval", "--tasks", a.tasks, "--solutions", path, "--json"],
                       capture_output=True, text=True, timeout=TIMEOUT, env=env)
    got = json.loads(p.stdout) if p.returncode == 0 else {"pass_at_k": {"1": None}}
    check(got["pass_at_k"]["1"] == 1.0, "canonical solutions in the sandbox: pass@1 = %s" % got["pass_at_k"]["1"])


def start_daemon_run(a, tasks, env, marker, path):
    """The evaluator on a passing program, then one that leaves a daemon and loops; returns once
    the daemon runs."""
    V = {"marker": marker}
    write_jsonl(path, [{"task_id": tasks[0]["task_id"], "completion": tasks[0]["canonical_solution"]},
                       {"task_id": tasks[1]["task_id"],
                        "completion": "    V = %r\n" % V + hostile(DAEMON, "", loop=True)}])
    p = subprocess.Popen([a.infernode, "eval", "humaneval", "--tasks", a.tasks, "--solutions", path,
                          "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 30
    while not marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return p, bool(marked_processes(marker))


def sigkill(a, tasks, env):
    """SIGKILL to the evaluator: nothing can run in it, but the sandbox dies with it (bwrap's
    --die-with-parent, then PID 1), and nothing of it was on disk."""
    marker = "infernode-sigkill-%s" % secrets.token_hex(8)
    p, started = start_daemon_run(a, tasks, env, marker, os.path.join(a.work, "sigkill.jsonl"))
    p.kill()
    p.communicate(timeout=20)
    deadline = time.monotonic() + 5
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    check(started and marked_processes(marker) == [] and os.listdir(env["TMPDIR"]) == [],
          "SIGKILL to the evaluator: the sample's processes die with it, nothing is left in TMPDIR")


def sigterm(a, tasks, env):
    """SIGTERM to the evaluator while a program that left a daemon loops, after one that passed."""
    marker = "infernode-sigterm-%s" % secrets.token_hex(8)
    p, started = start_daemon_run(a, tasks, env, marker, os.path.join(a.work, "sigterm.jsonl"))
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    out = out.decode(errors="replace")
    left = marked_processes(marker)
    check(started and p.returncode == 128 + signal.SIGTERM and left == [],
          "SIGTERM to the evaluator: exit %s, right after it no process of the sample is left (%s)"
          % (p.returncode, left))
    check("%s: 1 of 1 passed" % tasks[0]["task_id"] in out and "interrupted by signal 15" in out and
          tasks[1]["task_id"] not in out, "... and it reports the task done before: %r" % out)
    check(os.listdir(env["TMPDIR"]) == [], "... and leaves nothing in its TMPDIR")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)  # what an earlier, failed run left
    os.makedirs(a.work)
    with open(a.tasks, encoding="utf-8") as fh:
        tasks = [json.loads(line) for line in fh if line.strip()]
    tmpdir = os.path.join(a.work, "tmpdir")
    os.makedirs(tmpdir)
    env = dict(os.environ, TMPDIR=tmpdir, INFERNODE_TEST_SECRET="secret-%s" % secrets.token_hex(16))
    V, s, o, survivors, _, create = hostile_run(a, tasks, env, tmpdir)
    check_hostile(V, s, o, survivors, create, tasks, tmpdir, env["INFERNODE_TEST_SECRET"])
    canonical(a, tasks, env)
    sigterm(a, tasks, env)
    sigkill(a, tasks, env)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
