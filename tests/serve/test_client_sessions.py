"""`infernode client` chat sessions against a real `infernode serve`: generate --new-session
prints the session's id (--json: session_id), --session ID continues it (the id printed on
stderr), stream --session too (session_id on every message), delete-session
ID ends it, and then --session ID and delete-session ID get NOT_FOUND (exit 1). The client's
default output equals `infernode generate`'s for the same prompt (one set of defaults).

usage: test_client_sessions.py --infernode BIN --model GGUF"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    return r.returncode, r.stdout, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    server = serve_util.Server(a.infernode, a.model, 1)
    client = [a.infernode, "client"]
    try:
        addr = ["--addr", server.addr]
        rc, out, err = run(*client, "generate", *addr, "-p", "def add(a, b):\\n", "-n", "8", "--new-session", "--json")
        first = json.loads(out) if rc == 0 else {}
        sid = first.get("session_id", "")
        check(rc == 0 and sid, f"--new-session --json: {rc} {out!r} {err!r}")
        rc, out, err = run(*client, "generate", *addr, "-p", "    return", "-n", "6", "--session", sid)
        m = re.search(r"^infernode: session (\S+)$", err, re.M)
        check(rc == 0 and m and m.group(1) == sid, f"--session: {rc} {err!r}")
        rc, out, err = run(*client, "stream", *addr, "-p", "\\n", "-n", "4", "--session", sid, "--json")
        lines = [json.loads(l) for l in out.splitlines()] if rc == 0 else []
        check(rc == 0 and lines and all(l.get("session_id") == sid for l in lines), f"stream --session: {rc} {out!r}")

        rc, out, err = run(*client, "delete-session", sid, *addr)
        check(rc == 0 and out == f"deleted session {sid}\n", f"delete-session: {rc} {out!r} {err!r}")
        rc, out, err = run(*client, "generate", *addr, "-p", "x", "-n", "2", "--session", sid)
        check(rc == 1 and "NOT_FOUND" in err, f"--session after delete: {rc} {err!r}")
        rc, out, err = run(*client, "delete-session", sid, *addr)
        check(rc == 1 and "NOT_FOUND" in err, f"delete-session twice: {rc} {err!r}")

        prompt = "def fibonacci(n):"
        rc, out, err = run(*client, "generate", *addr, "-p", prompt, "-n", "16", "--json")
        via_client = json.loads(out).get("token_ids") if rc == 0 else None
        rc2, out2, err2 = run(a.infernode, "generate", "-m", a.model, "-p", prompt, "-n", "16", "--ids")
        check(rc == 0 and rc2 == 0 and via_client == [int(t) for t in out2.split()],
              f"client {via_client} != generate {out2!r} ({err} {err2[-300:]})")
    finally:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.wait_exit(60)
    print(f"client sessions: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
