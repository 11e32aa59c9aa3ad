"""Runs the shell commands of README.md that use the shipped model, as written, in README order.

Which commands. Every command of a ```sh, ```bash or ```console block (in a console block only
the lines after a `$ ` prompt); comment lines are dropped, and a line ending in a backslash or
with a quote still open goes on into the next. Other blocks (```python) are not run. A command
is run unless one of these rules leaves it out:

  1. it is one of the two commands, `bash deploy/quickstart.sh` or `bash tests/run.sh`: they
     install packages and build, and the second runs this test (CI runs it as it is);
  2. it is an infernode command that names a model of the reader's: `-m` or `--model` with a
     path outside `models/`;
  3. its program is not in Debian 12, so deploy/install-deps.sh cannot install it: `grpcurl`.

What is left uses the shipped model: `build/infernode` loads it when no `-m` is given (or
names it under `models/`), and the clients (`build/infernode client`, `curl`, `node`,
`python3`) talk to the README's own server on this machine, which serves it. The test fails
when it finds no server or no other command to run, so a README change cannot skip them all.

How. The commands run with `bash -c` in a tree that is the source tree (every top-level entry
linked) except that `build` is this test's build directory, with `node_modules` from the
`http_openai_setup` fixture (the `npm install openai` the README asks for; it installs nothing
else); `python3` is the interpreter that runs this test (Debian's), and no INFERNODE_* variable
is passed on. A command that starts `infernode serve` is a server: it runs in the background
until its log says `infernode: serving` (at most SERVER_START_S), the later commands run
against it, and at the end it gets SIGTERM and must exit 0 within SERVER_STOP_S. Any other
command must exit 0 within COMMAND_S and print no OpenAI error object. Everything runs in a
network namespace of its own (`unshare --net`, with only loopback), so the README's fixed
ports (50051, 8080, 9090) meet no other server on this machine; that needs root: without it
the test skips (77), unless CI=true, where it fails.

usage: test_readme_commands.py --source DIR --build DIR --node-modules DIR"""
import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
SERVER_START_S = 30
SERVER_STOP_S = 30
COMMAND_S = 60
INNER = "IFN_README_NETNS"
TWO_COMMANDS = {("bash", "deploy/quickstart.sh"), ("bash", "tests/run.sh")}
NOT_IN_DEBIAN = {"grpcurl"}


def shell_commands(readme):
    """The commands of the shell blocks of README text, in order."""
    commands, block, pending = [], None, None
    for line in readme.split("\n"):
        if line.startswith("```"):
            if block is not None and pending is not None:
                raise ValueError(f"README: a command runs past the end of its block: {pending}")
            block = None if block is not None else line[3:].strip()
            continue
        if block not in ("sh", "bash", "console"):
            continue
        if pending is None:
            if block == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending = line
        else:
            pending += "\n" + line
        if not pending.endswith("\\") and complete(pending):
            commands.append(pending)
            pending = None
    return commands


def complete(command):
    try:
        shlex.split(command, comments=True)
        return True
    except ValueError:  # a quote still open
        return False


def exclusion(command):
    """Why a command is not run (the docstring's rules), or None."""
    words = shlex.split(command, comments=True)
    if tuple(words[:2]) in TWO_COMMANDS:
        return "one of the two commands (installs and builds; CI runs tests/run.sh)"
    if words[0].endswith("infernode"):
        for flag, value in zip(words, words[1:]):
            if flag in ("-m", "--model") and not value.startswith("models/"):
                return f"a model of the reader's ({value})"
    if words[0] in NOT_IN_DEBIAN:
        return f"{words[0]} is not in Debian 12"
    return None


def is_server(command):
    words = shlex.split(command, comments=True)
    return len(words) > 1 and words[0].endswith("infernode") and words[1] == "serve"


def make_tree(source, build, node_modules):
    tree = tempfile.mkdtemp(prefix="ifn-readme-")
    for name in os.listdir(source):
        if name not in ("build", "node_modules"):
            os.symlink(os.path.join(source, name), os.path.join(tree, name))
    os.symlink(build, os.path.join(tree, "build"))
    os.symlink(node_modules, os.path.join(tree, "node_modules"))
    return tree


def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERNODE_") and k != INNER}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def report(failures, command, what, out=""):
    failures.append(command)
    print(f"FAIL: README command\n  {command}\n{what}\n{out}", flush=True)


def start_server(command, tree, env, log_path, failures):
    log = open(log_path, "w+")
    proc = subprocess.Popen(["bash", "-c", command], cwd=tree, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        with open(log_path) as f:
            if any(line.startswith("infernode: serving") for line in f):
                return proc, log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    with open(log_path) as f:
        out = f.read()
    what = (f"exited {proc.returncode} before serving" if proc.poll() is not None
            else f"not serving after {SERVER_START_S} s")
    report(failures, command, what, out)
    stop(proc)
    return None, log


def stop(proc):
    """SIGTERM, then the exit status; SIGKILL (and None) past SERVER_STOP_S. bash -c runs a
    simple command in its own process, so the signals reach the server itself."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def run_client(command, tree, env, failures):
    try:
        r = subprocess.run(["bash", "-c", command], cwd=tree, env=env, capture_output=True,
                           text=True, timeout=COMMAND_S)
    except subprocess.TimeoutExpired as e:
        report(failures, command, f"still running after {COMMAND_S} s", f"{e.stdout or ''}{e.stderr or ''}")
        return
    out = r.stdout + r.stderr
    if r.returncode != 0:
        report(failures, command, f"exit {r.returncode}", out)
    elif re.match(r'\s*(data: )?\{"error"', r.stdout):
        report(failures, command, "answered an error", out)
    else:
        print(f"ok: {command}\n{r.stdout.rstrip()}\n", flush=True)


def inner(a):
    # ctest's timeout or a user's SIGTERM still stops the servers (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open(os.path.join(a.source, "README.md")) as f:
        commands = shell_commands(f.read())
    runs = []
    for c in commands:
        why = exclusion(c)
        if why:
            print(f"left out ({why}): {c}")
        else:
            runs.append(c)
    servers = [c for c in runs if is_server(c)]
    if not servers or len(runs) == len(servers):
        print(f"FAIL: README.md: {len(servers)} server commands and {len(runs) - len(servers)} other "
              f"commands to run; the README's first request needs both")
        return 1
    tree = make_tree(a.source, a.build, a.node_modules)
    env = environment()
    failures, started = [], []
    t0 = time.monotonic()
    try:
        for i, c in enumerate(runs):
            if is_server(c):
                proc, log = start_server(c, tree, env, os.path.join(tree, f"server{i}.log"), failures)
                if proc is None:
                    break
                print(f"serving: {c}", flush=True)
                started.append((c, proc, log))
            else:
                run_client(c, tree, env, failures)
    finally:
        for c, proc, log in started:
            status = stop(proc)
            log.seek(0)
            if status != 0:
                report(failures, c, f"on SIGTERM: exit {status} (0 expected within {SERVER_STOP_S} s)",
                       log.read())
            log.close()
        shutil.rmtree(tree)
    print(f"{len(runs) - len(failures)} passed, {len(failures)} failed "
          f"({len(runs)} README commands run, {len(servers)} of them servers, "
          f"{len(commands) - len(runs)} left out; {time.monotonic() - t0:.1f} s)")
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True)
    p.add_argument("--build", required=True)
    p.add_argument("--node-modules", required=True)
    a = p.parse_args()
    if os.environ.get(INNER):
        return inner(a)
    why = None
    if os.geteuid() != 0:
        why = "not root: a network namespace of its own needs root"
    elif not (shutil.which("unshare") and shutil.which("ip")):
        why = "'unshare' or 'ip' is not installed (util-linux, iproute2)"
    if why:
        if os.environ.get("CI") == "true":
            print(f"FAIL: {why} (CI=true: this test may not skip)")
            return 1
        print(f"SKIP: {why}")
        return SKIP
    env = dict(os.environ, **{INNER: "1"})
    child = subprocess.Popen(["unshare", "--net", "--", sys.executable] + sys.argv, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
