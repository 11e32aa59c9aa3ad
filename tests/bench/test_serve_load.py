#!/usr/bin/python3
"""tools/bench/serve-load.py (N streams against an OpenAI-compatible server) and
tools/bench/vs-llama-server.sh: the counts and the table, never the speed.

  test_serve_load.py --infernode BIN --model GGUF --work DIR --group {client,script}

client  serve-load.py against a real `infernode serve` on the shipped model: every request ok,
        generated tokens = streams x rounds x G in its JSON, and the server's /metrics counted
        exactly the warm-up's and those tokens (generated and prompt); a dead URL and a server
        that is no OpenAI API (the /metrics port) exit 1 naming the URL; bad options exit 2.
script  vs-llama-server.sh: misused arguments exit 2; with a stand-in llama-server (Python's
        standard library serving /health and streamed /v1/completions) the A-B-A run prints one
        row per stream count with ratios of the engines' figures, gives the stand-in -np and -c
        from the largest stream count and the same threads as infernode, and leaves no server
        running; a llama-server that dies at start exits 1.
"""
import argparse
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LOAD = os.path.join(ROOT, "tools", "bench", "serve-load.py")
SCRIPT = os.path.join(ROOT, "tools", "bench", "vs-llama-server.sh")
PYTHON = "/usr/bin/python3"
TIMEOUT = 120


class Failure(Exception):
    pass


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(cmd)}: still running after {TIMEOUT} s")


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    if not m:
        raise Failure(f"/metrics has no {name}")
    return int(m.group(1))


def start_server(infernode, model, log_path):
    """infernode serve on free ports; (process, http port, metrics port) once /health says ok."""
    log = open(log_path, "w")
    p = subprocess.Popen([infernode, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0",
                          "--http-port", "0", "--metrics-port", "0", "--max-seqs", "4", "-t", "1"],
                         stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise Failure(f"infernode serve exited with {p.returncode}: {open(log_path).read()[-400:]!r}")
        m = re.search(r"http on [^ ,;]*:(\d+), metrics on [^ ,;]*:(\d+)", open(log_path).read())
        if m:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/health", timeout=5):
                    return p, int(m.group(1)), int(m.group(2))
            except OSError:
                pass
        time.sleep(0.1)
    p.kill()
    raise Failure("infernode serve was not ready within 60 s")


def stop_server(p):
    p.terminate()
    try:
        p.wait(timeout=40)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise Failure("infernode serve did not stop within 40 s of SIGTERM")


def expect_exit(cmd, status, needles, what):
    p = run(cmd)
    if p.returncode != status or not all(n in p.stderr for n in needles):
        raise Failure(f"{what}: exit {p.returncode} (expected {status}), stderr without {needles}: "
                      f"{p.stderr.strip()[-400:]!r}")
    print(f"PASS {what}: exit {status}")


def group_client(a):
    streams, rounds, prompt, gen = [1, 3], 2, 8, 5
    server, port, mport = start_server(a.infernode, a.model, os.path.join(a.work, "serve.log"))
    try:
        gen0, prompt0 = metric(mport, "infernode_generated_tokens_total"), metric(mport, "infernode_prompt_tokens_total")
        out = os.path.join(a.work, "load.json")
        p = run([PYTHON, LOAD, f"http://127.0.0.1:{port}", "--streams", ",".join(map(str, streams)),
                 "--rounds", str(rounds), "-p", str(prompt), "-n", str(gen), "--json", out])
        if p.returncode != 0:
            raise Failure(f"serve-load.py: exit {p.returncode}: {p.stderr.strip()[-400:]!r}")
        res = json.load(open(out))["results"]
        if [r["streams"] for r in res] != streams:
            raise Failure(f"serve-load.py: results for streams {[r['streams'] for r in res]}")
        for r in res:
            n = r["streams"] * rounds
            if (r["requests"], r["ok"], r["failed"], r["generated_tokens"]) != (n, n, 0, n * gen):
                raise Failure(f"serve-load.py: {r['streams']} streams: {r}, expected {n} requests ok and "
                              f"{n * gen} tokens")
            if not (r["aggregate_tps"] > 0 and 0 < r["ttft_p50_ms"] <= r["ttft_p99_ms"]
                    and 0 <= r["tpot_p50_ms"] <= r["tpot_p99_ms"]):
                raise Failure(f"serve-load.py: {r['streams']} streams: figures out of order: {r}")
        rows = [ln for ln in p.stdout.splitlines() if re.match(r"\| \d", ln)]
        if [ln.split("|")[1:5] for ln in rows] != [[" 1 ", " 2 ", " 0 ", " 10 "], [" 3 ", " 6 ", " 0 ", " 30 "]]:
            raise Failure(f"serve-load.py: table rows {rows!r}")
        # the server's own counts: the warm-up request and every measured one, nothing more
        requests = 1 + sum(s * rounds for s in streams)
        got_gen = metric(mport, "infernode_generated_tokens_total") - gen0
        got_prompt = metric(mport, "infernode_prompt_tokens_total") - prompt0
        if (got_gen, got_prompt) != (requests * gen, requests * prompt):
            raise Failure(f"/metrics: {got_gen} generated and {got_prompt} prompt tokens, expected "
                          f"{requests * gen} and {requests * prompt}")
        print(f"PASS serve-load.py: {requests} requests, the server counted {got_gen} = {requests} x {gen} tokens")
        expect_exit([PYTHON, LOAD, f"http://127.0.0.1:{mport}", "-n", "2"], 1,
                    [f"http://127.0.0.1:{mport}", "HTTP 405"], "serve-load.py against /metrics")
    finally:
        stop_server(server)
    expect_exit([PYTHON, LOAD, f"http://127.0.0.1:{port}", "-n", "2"], 1,
                [f"http://127.0.0.1:{port}", "cannot connect"], "serve-load.py against a stopped server")
    expect_exit([PYTHON, LOAD, f"http://127.0.0.1:{port}", "--streams", "1,x"], 2, ["--streams"],
                "serve-load.py --streams 1,x")
    expect_exit([PYTHON, LOAD, "localhost:8080"], 2, ["is not http://HOST:PORT"], "serve-load.py without a scheme")


STAND_IN = r'''#!/usr/bin/python3
# A stand-in for llama-server: /health (503 for its first 0.3 s) and streamed /v1/completions
# in llama-server's shape, one chunk per token and a last chunk with usage. Writes its
# arguments and pid beside itself.
import http.server
import json
import os
import sys
import time

args = sys.argv[1:]
with open(__file__ + ".args", "w") as f:
    json.dump({"args": args, "pid": os.getpid()}, f)
if os.environ.get("STAND_IN_FAIL"):
    sys.exit("stand-in: failing at start as asked")
port = int(args[args.index("--port") + 1])
start = time.monotonic()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        ready = time.monotonic() - start > 0.3
        body = json.dumps({"status": "ok"} if ready else {"error": "loading"}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n, prompt = req["n_predict"], req["prompt"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = lambda text, finish, extra: self.wfile.write(("data: " + json.dumps(dict(
            {"choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
             "object": "text_completion"}, **extra)) + "\n\n").encode())
        for _ in range(n):
            time.sleep(0.002)
            chunk("ab", None, {})
        chunk("", "length", {"usage": {"completion_tokens": n, "prompt_tokens": len(prompt),
                                       "total_tokens": n + len(prompt)}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def group_script(a):
    stand_in = os.path.join(a.work, "llama-server")
    with open(stand_in, "w") as f:
        f.write(STAND_IN)
    os.chmod(stand_in, os.stat(stand_in).st_mode | stat.S_IXUSR)
    base = [SCRIPT, a.model, stand_in, "--infernode", a.infernode]
    expect_exit([SCRIPT], 2, ["give MODEL and LLAMA_SERVER"], "vs-llama-server.sh without operands")
    expect_exit([SCRIPT, a.model, os.path.join(a.work, "no-llama-server"), "--infernode", a.infernode], 2,
                ["LLAMA_SERVER"], "vs-llama-server.sh with no llama-server")
    expect_exit([SCRIPT, os.path.join(a.work, "no-model.gguf"), stand_in], 2, ["MODEL"],
                "vs-llama-server.sh with no model")
    expect_exit(base + ["--streams", "1,,4"], 2, ["--streams: '1,,4'"], "vs-llama-server.sh --streams 1,,4")
    expect_exit(base + ["-n", "1"], 2, ["--n-gen: '1'"], "vs-llama-server.sh -n 1")
    expect_exit(base + ["-t", "0"], 2, ["--threads: '0'"], "vs-llama-server.sh -t 0")
    expect_exit(base + ["--bogus"], 2, ["unknown option --bogus"], "vs-llama-server.sh --bogus")
    expect_exit(base + ["-p"], 2, ["-p needs a value"], "vs-llama-server.sh -p without a value")

    p = run(base + ["--streams", "1,3", "-p", "8", "-n", "6", "-t", "1"])
    if p.returncode != 0:
        raise Failure(f"vs-llama-server.sh: exit {p.returncode}: {p.stderr.strip()[-600:]!r}")
    seen = json.load(open(stand_in + ".args"))
    args = seen["args"]
    opt = lambda name: args[args.index(name) + 1] if name in args else None  # noqa: E731
    if (opt("-m"), opt("-np"), opt("-c"), opt("-t"), opt("-tb")) != (a.model, "3", str(3 * (8 + 6 + 16)), "1", "1"):
        raise Failure(f"vs-llama-server.sh: the stand-in got {args}")
    if os.path.exists(f"/proc/{seen['pid']}"):
        raise Failure("vs-llama-server.sh: the stand-in llama-server still runs after the script")
    if "a1: " not in p.stderr or "--max-seqs 3 --ctx-size 30 -t 1" not in p.stderr:
        raise Failure(f"vs-llama-server.sh: infernode's options not as expected: {p.stderr!r}")
    if "load average" not in p.stdout:
        raise Failure(f"vs-llama-server.sh: no load average in {p.stdout!r}")
    rows = [ln for ln in p.stdout.splitlines() if re.match(r"\| \d", ln)]
    if [ln.split("|")[1].strip() for ln in rows] != ["1", "3"]:
        raise Failure(f"vs-llama-server.sh: rows {rows!r}")
    for row in rows:
        c = [x.strip() for x in row.strip("|").split("|")]
        m = re.fullmatch(r"([\d.]+) \(([\d.]+), ([\d.]+)\)", c[1])
        if not m:
            raise Failure(f"vs-llama-server.sh: infernode's cell {c[1]!r} in {row!r}")
        ts, a1, a2 = map(float, m.groups())
        b = float(c[2])
        ms = lambda cell: float(cell.removesuffix(" ms"))  # noqa: E731
        # the printed figures have 2 decimals: allow their rounding; times under 0.5 ms (the
        # shipped model's TPOT can be ~0 when a step's events leave together) only as numbers
        checks = [(c[3], ts, b), (c[4], a2, a1), (c[7], ms(c[6]), ms(c[5])), (c[10], ms(c[9]), ms(c[8]))]
        if abs(ts - (a1 + a2) / 2) > 0.011 or b <= 0 or \
                any(not re.fullmatch(r"\d+\.\d\d|-", got) for got, _, _ in checks) or \
                any(abs(float(got) - x / y) > 0.02 + 0.05 * x / y for got, x, y in checks if y >= 0.5):
            raise Failure(f"vs-llama-server.sh: the ratios do not follow the figures in {row!r}")
    if not re.search(r"aggregate at 3 streams / at 1: infernode [\d.]+x \(A1 [\d.]+x, A2 [\d.]+x\), "
                     r"llama\.cpp [\d.]+x", p.stdout):
        raise Failure(f"vs-llama-server.sh: no scaling line in {p.stdout!r}")
    print(f"PASS vs-llama-server.sh: A-B-A with a stand-in llama-server, rows {[r.split('|')[1].strip() for r in rows]}")

    env = dict(os.environ, STAND_IN_FAIL="1")
    p = subprocess.run(base + ["--streams", "1", "-p", "4", "-n", "2", "-t", "1"], capture_output=True, text=True,
                       env=env, timeout=TIMEOUT)
    if p.returncode != 1 or "b: the server exited before it was ready" not in p.stderr or \
            "failing at start" not in p.stderr:
        raise Failure(f"vs-llama-server.sh with a dying llama-server: exit {p.returncode}: {p.stderr[-600:]!r}")
    print("PASS vs-llama-server.sh with a llama-server that dies at start: exit 1, its last messages shown")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--group", required=True, choices=["client", "script"])
    a = ap.parse_args()
    a.work = os.path.join(a.work, a.group)
    os.makedirs(a.work, exist_ok=True)
    try:
        {"client": group_client, "script": group_script}[a.group](a)
        return 0
    except Failure as e:
        print(f"FAIL {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
