#!/usr/bin/python3
"""`infernode eval humaneval`: the harness on tasks.jsonl (12 small tasks in HumanEval's
format, written for this test), then generation with the shipped default model.

  test_eval_humaneval.py --infernode BIN --tasks tasks.jsonl --work DIR

Harness (--solutions, no model):
  * every canonical solution passes: pass@1 = 1;
  * in one run with --timeout 2: a wrong answer fails (AssertionError); an endless loop that
    started a child process (a marker in its argv) is "timed out" within the limit and
    afterwards no process with the marker exists; connecting to 1.1.1.1:53 and to a TCP port
    this test listens on both fail, and the listener sees no connection; a file written by the
    program lands in the sandbox's /tmp, and the evaluator's TMPDIR stays empty; a program
    killed by SIGKILL is reported as signal 9; 3 GiB of memory is refused (2 GiB address
    space); output beyond 4 KiB is cut to its last 4 KiB;
  * with --allow-network the local port is reached (the listener accepts);
  * where a user namespace without a uid mapping can be entered (unshare -U), no sandbox can
    be made inside it: the harness refuses, naming --unsafe-no-sandbox, and runs with it, with
    a warning;
  (test_eval_sandbox.py tries the escapes of issue 24)
  * pass@k for k = 1, 2, 3 with several completions per task (n = 3..6, c = 0..n) equals
    1 - C(n-c, k) / C(n, k) computed here with math.comb, per task and as the mean.
Generation: the default model, greedy, 1 sample per task on 4 tasks, --max-tokens 64: every
task has one completion that contains no stop sequence and a stop reason; the same run
again gives the same completions; 3 seeded samples at temperature 0.8 are reproducible.
"""
import argparse
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

TIMEOUT = 120
STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")

failures = []


def check(ok, what):
    print("%s %s" % ("PASS" if ok else "FAIL", what))
    if not ok:
        failures.append(what)


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def run_json(cmd, env=None):
    p = run(cmd + ["--json"], env)
    if p.returncode != 0:
        raise SystemExit("FAIL: %s exited %d\n%s" % (" ".join(cmd), p.returncode, p.stderr))
    return json.loads(p.stdout)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def alive(pid):
    """True if the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def running_with(text):
    """Pids of the processes whose command line holds text."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % name, "rb") as fh:
                if name.isdigit() and text.encode() in fh.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


def samples_by_task(result):
    return {t["task_id"]: t["samples"] for t in result["tasks"]}


def body(*lines):
    return "".join("    %s\n" % line for line in lines)


def harness(a, tasks, base):
    canon = os.path.join(a.work, "canonical.jsonl")
    write_jsonl(canon, [{"task_id": t["task_id"], "completion": t["canonical_solution"]} for t in tasks])
    got = run_json(base + ["--solutions", canon])
    check(got["pass_at_k"]["1"] == 1.0 and got["n_tasks"] == len(tasks) and
          all(t["passed"] == 1 for t in got["tasks"]),
          "canonical solutions: %d tasks, pass@1 = %g" % (got["n_tasks"], got["pass_at_k"]["1"]))

    listener = Listener()
    tmp = os.path.join(a.work, "tmpdir")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    env = dict(os.environ, TMPDIR=tmp)
    sandbox = os.path.join(a.work, "sandbox.jsonl")
    local = "socket.create_connection(('127.0.0.1', %d), timeout=2).close()" % listener.port
    marker = "300.%d" % secrets.randbelow(10 ** 12)  # a sleep of its own, found by its argv
    write_jsonl(sandbox, [
        {"task_id": "infernode/0", "completion": body(
            "import subprocess", "child = subprocess.Popen(['/bin/sleep', '%s'])" % marker,
            "print('STARTED', flush=True)", "while True:", "    pass")},
        {"task_id": "infernode/1", "completion": body(
            "import socket", "socket.create_connection(('1.1.1.1', 53), timeout=2).close()",
            "return text == text[::-1]")},
        {"task_id": "infernode/2", "completion": body(
            "import socket", local, "return sum(1 for ch in text.lower() if ch in 'aeiou')")},
        {"task_id": "infernode/3", "completion": body("return numbers")},
        {"task_id": "infernode/4", "completion": body(
            "import os", "open('written.txt', 'w').write('data')",
            "print('FILE', os.path.abspath('written.txt'), flush=True)",
            "return 'FizzBuzz' if n % 15 == 0 else 'Fizz' if n % 3 == 0 else "
            "'Buzz' if n % 5 == 0 else str(n)")},
        {"task_id": "infernode/5", "completion": body("import os, signal", "os.kill(os.getpid(), signal.SIGKILL)")},
        {"task_id": "infernode/6", "completion": body(
            "print('x' * 9999 + 'END', flush=True)", "return [x for part in lists for x in part]")},
        {"task_id": "infernode/7", "completion": body("block = bytearray(3 << 30)", "return []")},
    ])
    t0 = time.monotonic()
    got = run_json(base + ["--solutions", sandbox, "--timeout", "2"], env)
    elapsed = time.monotonic() - t0
    s = {k: v[0] for k, v in samples_by_task(got).items()}
    check(s["infernode/3"]["status"] == "failed" and "AssertionError" in s["infernode/3"]["output"],
          "a wrong answer fails with AssertionError")
    left = [pid for pid in running_with(marker) if alive(pid)]
    check(s["infernode/0"]["status"] == "timed out" and "STARTED" in s["infernode/0"]["output"],
          "an endless loop that started a child is timed out")
    check(elapsed < 2 + 20, "the run with an endless loop and --timeout 2 took %.1f s (8 programs)" % elapsed)
    check(left == [], "after the timeout no process with the child's marker runs: %s" % left)
    check(s["infernode/1"]["status"] == "failed" and "Error" in s["infernode/1"]["output"],
          "connecting to 1.1.1.1:53 fails: %s" % s["infernode/1"]["output"].strip().splitlines()[-1:])
    check(s["infernode/2"]["status"] == "failed" and listener.accepted == 0,
          "connecting to this test's port %d fails, the listener saw %d connections: %s"
          % (listener.port, listener.accepted, s["infernode/2"]["output"].strip().splitlines()[-1:]))
    dirs = {os.path.dirname(line.split(" ", 1)[1]) for line in s["infernode/4"]["output"].splitlines()
            if line.startswith("FILE ")}
    check(s["infernode/4"]["status"] == "passed" and dirs == {"/tmp"} and os.listdir(tmp) == [],
          "a written file lands in the sandbox's /tmp, the evaluator's TMPDIR stays empty "
          "(%s; TMPDIR holds %s)" % (sorted(dirs), os.listdir(tmp)))
    check(s["infernode/5"]["status"] == "failed" and s["infernode/5"]["exit_status"] == -9,
          "a program killed by SIGKILL: exit_status %d" % s["infernode/5"]["exit_status"])
    out6 = s["infernode/6"]["output"]
    check(s["infernode/6"]["status"] == "passed" and s["infernode/6"]["output_truncated"] and
          len(out6.encode()) == 4096 and out6.endswith("END\n"),
          "10 KB of output: the last 4096 bytes are kept (%d)" % len(out6.encode()))
    check(s["infernode/7"]["status"] == "failed" and "MemoryError" in s["infernode/7"]["output"],
          "3 GiB of memory is refused (MemoryError)")

    net = os.path.join(a.work, "network.jsonl")
    write_jsonl(net, [{"task_id": "infernode/2", "completion": body(
        "import socket", local, "return sum(1 for ch in text.lower() if ch in 'aeiou')")}])
    got = run_json(base + ["--solutions", net, "--allow-network"])
    check(got["tasks"][0]["passed"] == 1 and listener.accepted > 0,
          "with --allow-network the program reaches this test's port (%d accepted)" % listener.accepted)
    listener.close()

    probe = subprocess.run(["unshare", "-U", "true"], capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        print("SKIP no user namespace without a uid mapping: 'unshare -U' is not available here")
    else:
        p = run(["unshare", "-U"] + base + ["--solutions", canon])
        check(p.returncode != 0 and "--unsafe-no-sandbox" in p.stderr and "sandbox" in p.stderr,
              "where no sandbox can be made (inside unshare -U) the harness refuses: %s"
              % p.stderr.strip().splitlines()[-1:])
        p = run(["unshare", "-U"] + base + ["--solutions", canon, "--unsafe-no-sandbox"])
        check(p.returncode == 0 and "pass@1: 1.0000" in p.stdout and "UNCONFINED" in p.stderr and
              "unconfined" in p.stdout, "... and runs with --unsafe-no-sandbox, warning on stderr and in the report")

    # pass@k: several completions per task, which of them right
    plan = {"infernode/0": [1, 0, 1, 0, 1], "infernode/1": [0, 0, 0, 0], "infernode/2": [1, 1, 1],
            "infernode/5": [0, 0, 1, 0, 0, 0]}
    by_id = {t["task_id"]: t for t in tasks}
    rows = [{"task_id": tid, "completion": by_id[tid]["canonical_solution"] if right else body("return None")}
            for tid, marks in plan.items() for right in marks]
    passk = os.path.join(a.work, "passk.jsonl")
    write_jsonl(passk, rows)
    got = run_json(base + ["--solutions", passk, "-k", "1,2,3"])
    ok = True
    nc = {tid: (len(marks), sum(marks)) for tid, marks in plan.items()}
    for k in (1, 2, 3):
        want = {tid: 1 - math.comb(n - c, k) / math.comb(n, k) for tid, (n, c) in nc.items()}
        for t in got["tasks"]:
            ok &= (t["n"], t["passed"]) == nc[t["task_id"]]
            ok &= abs(t["pass_at_k"][str(k)] - want[t["task_id"]]) < 1e-12
        mean = sum(want.values()) / len(want)
        ok &= abs(got["pass_at_k"][str(k)] - mean) < 1e-12
        print("  pass@%d = %.6f (Python: %.6f)" % (k, got["pass_at_k"][str(k)], mean))
    check(ok and got["n_tasks"] == len(plan), "pass@1,2,3 with (n, c) = %s equal 1 - C(n-c,k)/C(n,k)"
          % sorted(nc.values()))
    p = run(base + ["--solutions", passk, "-k", "4"])
    check(p.returncode != 0 and "-k 4" in p.stderr and "infernode/2" in p.stderr,
          "k above a task's n is refused: %s" % p.stderr.strip())


def generation(a, tasks, base):
    few = os.path.join(a.work, "few.jsonl")
    write_jsonl(few, tasks[:4])
    cmd = base[:3] + ["--tasks", few, "--max-tokens", "64", "--timeout", "10"]
    got = run_json(cmd)
    samples = samples_by_task(got)
    ok = len(samples) == 4 and all(len(v) == 1 for v in samples.values())
    for tid, (s,) in samples.items():
        ok &= isinstance(s["completion"], str) and not any(x in s["completion"] for x in STOPS)
        ok &= s["stop"] in ("stop sequence", "end of generation", "max tokens", "context full")
        ok &= s["status"] in ("passed", "failed", "timed out")
        print("  %s (%s, %s): %r" % (tid, s["stop"], s["status"], s["completion"][:70]))
    check(ok and 0 <= got["pass_at_k"]["1"] <= 1 and got["temperature"] == 0,
          "default model, greedy, 4 tasks: one completion each, no stop sequence in them")
    again = run_json(cmd)
    check([t["samples"][0]["completion"] for t in again["tasks"]] ==
          [t["samples"][0]["completion"] for t in got["tasks"]], "greedy completions are reproducible")
    sampled = cmd + ["-n", "3", "--temp", "0.8", "--seed", "7", "-k", "1,3"]
    one, two = run_json(sampled), run_json(sampled)
    comps = [[s["completion"] for s in t["samples"]] for t in one["tasks"]]
    check(comps == [[s["completion"] for s in t["samples"]] for t in two["tasks"]] and
          all(len(c) == 3 for c in comps) and set(one["pass_at_k"]) == {"1", "3"},
          "3 samples at temperature 0.8 with --seed 7: reproducible, pass@1 and pass@3 reported")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    with open(a.tasks, encoding="utf-8") as fh:
        tasks = [json.loads(line) for line in fh if line.strip()]
    base = [a.infernode, "eval", "humaneval", "--tasks", a.tasks]
    harness(a, tasks, base)
    generation(a, tasks, base)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
