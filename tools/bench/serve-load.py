#!/usr/bin/python3
"""Serving load on any OpenAI-compatible HTTP server: N concurrent streams of /v1/completions.

  serve-load.py URL [--streams 1,4,16] [--prompt-tokens P | --prompt TEXT] [--gen G]
                [--rounds R] [--json FILE] [--timeout S]

URL is the server's base (http://HOST:PORT, with or without /v1). For each N of --streams, N
threads start at once; each sends R requests one after the other, every request
`"stream": true`, greedy (`temperature` 0), `max_tokens` and `n_predict` G with `ignore_eos`
(the names infernode and llama-server read), and `stream_options.include_usage`. The prompt is
P token ids (the default: ids 3..258, in every vocabulary of 259 or more; both servers take
a list of ids as is, no BOS added) or a text the server tokenizes; either way every request's
prompt starts differently, so no server can serve it from a prefix cache filled by an earlier
request. One warm-up request goes first.

A request counts as ok when its stream ends with `data: [DONE]`, carries no error, and its
usage (or, without usage, its number of text events) says exactly G tokens were generated
(and, for id prompts, P prompt tokens). Per N it prints a Markdown table row: requests ok and
failed, generated tokens, wall time (from the start of the N streams to the end of the last),
aggregate generated tokens/s over that wall time (prefill included) and its ratio to the
first N's, and p50/p99 over the ok requests (nearest rank) of TTFT (from sending the request
to its first event with text) and TPOT ((last event - first event) / (G - 1)).

Exit status: 0 when every request was ok; 1 when the server cannot be reached, does not
answer like an OpenAI completions server, or any request failed (the table is still
printed); 2 for bad arguments. Standard library only (http.client and threads).
"""
import argparse
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse

# Prompt ids lie in [PROMPT_ID_LOW, PROMPT_ID_LOW + PROMPT_ID_SPAN), inside any vocabulary of
# 259 or more (byte pieces in SentencePiece and byte-level BPE alike). The first two say the
# request's number (unique up to 65536 requests), the rest follow a fixed pattern.
PROMPT_ID_LOW = 3
PROMPT_ID_SPAN = 256


class ServerError(Exception):
    """The server is unreachable or answers unlike an OpenAI completions server."""


class Request:
    def __init__(self):
        self.ok = False
        self.error = ""
        self.t_send = self.t_first = self.t_last = 0.0
        self.n_events = 0
        self.usage = None


def positive_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of positive integers")
    return values


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer >= 1")
    return value


class Client:
    def __init__(self, url, prompt_tokens, prompt_text, gen, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"URL '{url}' is not http://HOST:PORT")
        self.url = url
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.path = u.path.rstrip("/")
        if not self.path.endswith("/v1"):
            self.path += "/v1"
        self.path += "/completions"
        self.prompt_tokens, self.prompt_text, self.gen, self.timeout = prompt_tokens, prompt_text, gen, timeout
        self.count = 0
        self.lock = threading.Lock()

    def body(self):
        """The next request's body; its prompt starts with the request's own number."""
        with self.lock:
            n = self.count
            self.count += 1
        if self.prompt_text is None:
            prompt = [PROMPT_ID_LOW + n % PROMPT_ID_SPAN, PROMPT_ID_LOW + n // PROMPT_ID_SPAN % PROMPT_ID_SPAN]
            prompt += [PROMPT_ID_LOW + 7 * i % PROMPT_ID_SPAN for i in range(2, self.prompt_tokens)]
            prompt = prompt[:self.prompt_tokens]
        else:
            prompt = f"Request {n}: {self.prompt_text}"
        return json.dumps({"prompt": prompt, "max_tokens": self.gen, "n_predict": self.gen,
                           "ignore_eos": True, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}})

    def connect(self):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def send(self, r):
        """One streamed request into r; ServerError when the answer is not an OpenAI stream."""
        conn = self.connect()
        try:
            body = self.body()
            r.t_send = time.monotonic()
            try:
                conn.request("POST", self.path, body, {"Content-Type": "application/json",
                                                       "Accept": "text/event-stream"})
                resp = conn.getresponse()
            except OSError as e:
                raise ServerError(f"{self.url}: cannot connect: {e}")
            ctype = resp.getheader("Content-Type", "")
            if resp.status != 200:
                hint = " (no OpenAI completions API there)" if resp.status in (404, 405) else ""
                raise ServerError(f"{self.url}: POST {self.path} answered HTTP {resp.status}{hint}: "
                                  f"{resp.read(300).decode('utf-8', 'replace').strip()!r}")
            if not ctype.startswith("text/event-stream"):
                raise ServerError(f"{self.url}: POST {self.path} answered '{ctype}', not an OpenAI "
                                  f"event stream: {resp.read(300).decode('utf-8', 'replace').strip()!r}")
            self.read_stream(resp, r)
        finally:
            conn.close()

    def read_stream(self, resp, r):
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.decode("utf-8", "replace").strip()
            if line.startswith("error:"):
                r.error = f"error event: {line[6:].strip()[:200]}"
                return
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                ev = json.loads(data)
            except json.JSONDecodeError:
                raise ServerError(f"{self.url}: an event that is not JSON: {data[:200]!r}")
            if not isinstance(ev, dict):
                raise ServerError(f"{self.url}: an event that is not a JSON object: {data[:200]!r}")
            if "error" in ev:
                r.error = f"error event: {json.dumps(ev['error'])[:200]}"
                return
            if ev.get("usage"):
                r.usage = ev["usage"]
            choices = ev.get("choices")
            if not isinstance(choices, list):
                raise ServerError(f"{self.url}: an event without 'choices', not an OpenAI "
                                  f"completion chunk: {data[:200]!r}")
            if choices and choices[0].get("text"):
                now = time.monotonic()
                if r.n_events == 0:
                    r.t_first = now
                r.t_last = now
                r.n_events += 1
        if not done:
            r.error = "the stream ended without data: [DONE]"
            return
        self.check_counts(r)

    def check_counts(self, r):
        if r.n_events == 0:
            r.error = "no event with text"
            return
        got = r.usage.get("completion_tokens") if r.usage else r.n_events
        if got != self.gen:
            r.error = f"{got} tokens generated ({'usage' if r.usage else 'text events'}), expected {self.gen}"
            return
        if r.usage and self.prompt_text is None and r.usage.get("prompt_tokens") != self.prompt_tokens:
            r.error = f"usage.prompt_tokens {r.usage.get('prompt_tokens')}, expected {self.prompt_tokens}"
            return
        r.ok = True


def percentile(values, q):
    """Nearest rank; None for no values."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(q * len(v)) - 1)]


def run_streams(client, n, rounds):
    """n threads at once, each `rounds` requests in turn; the statistics of the run."""
    reqs = [[Request() for _ in range(rounds)] for _ in range(n)]
    start = threading.Barrier(n + 1)

    def stream(mine):
        start.wait()
        for r in mine:
            try:
                client.send(r)
            except ServerError as e:
                r.error = str(e)
            except OSError as e:
                r.error = f"connection: {e}"

    threads = [threading.Thread(target=stream, args=(mine,)) for mine in reqs]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    flat = [r for mine in reqs for r in mine]
    ok = [r for r in flat if r.ok]
    generated = len(ok) * client.gen
    ttft = [r.t_first - r.t_send for r in ok]
    tpot = [(r.t_last - r.t_first) / (client.gen - 1) for r in ok] if client.gen > 1 else []
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "streams": n, "requests": len(flat), "ok": len(ok), "failed": len(flat) - len(ok),
        "generated_tokens": generated, "wall_s": round(wall, 4),
        "aggregate_tps": round(generated / wall, 3) if wall > 0 else 0.0,
        "ttft_p50_ms": ms(percentile(ttft, 0.5)), "ttft_p99_ms": ms(percentile(ttft, 0.99)),
        "tpot_p50_ms": ms(percentile(tpot, 0.5)), "tpot_p99_ms": ms(percentile(tpot, 0.99)),
        "errors": sorted({r.error for r in flat if not r.ok})[:5],
    }


def table(results):
    cell = lambda v: "-" if v is None else f"{v:.2f} ms"  # noqa: E731
    lines = ["| streams | requests ok | failed | generated tokens | wall s | aggregate t/s | vs first "
             "| TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = results[0]["aggregate_tps"]
    for s in results:
        ratio = f"{s['aggregate_tps'] / base:.2f}x" if base > 0 else "-"
        lines.append(f"| {s['streams']} | {s['ok']} | {s['failed']} | {s['generated_tokens']} | "
                     f"{s['wall_s']:.2f} | {s['aggregate_tps']:.2f} | {ratio} | {cell(s['ttft_p50_ms'])} | "
                     f"{cell(s['ttft_p99_ms'])} | {cell(s['tpot_p50_ms'])} | {cell(s['tpot_p99_ms'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(prog="serve-load.py", description=__doc__.splitlines()[0],
                                 epilog="exit status: 0 every request ok; 1 server unreachable, not OpenAI, "
                                        "or a request failed; 2 bad arguments")
    ap.add_argument("url", metavar="URL", help="the server's base, http://HOST:PORT")
    ap.add_argument("--streams", type=positive_list, default=[1, 4, 16],
                    help="concurrent streams, comma-separated (default 1,4,16)")
    ap.add_argument("--prompt-tokens", "-p", type=positive_int, default=32,
                    help="prompt of this many token ids (default 32)")
    ap.add_argument("--prompt", metavar="TEXT", help="a text prompt instead of token ids")
    ap.add_argument("--gen", "-n", type=positive_int, default=64,
                    help="tokens generated per request (default 64)")
    ap.add_argument("--rounds", type=positive_int, default=1,
                    help="requests each stream sends one after the other (default 1)")
    ap.add_argument("--timeout", type=positive_int, default=600,
                    help="seconds a request may go without an answer (default 600)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    a = ap.parse_args()
    if a.prompt is not None and not a.prompt:
        ap.error("--prompt: an empty text")
    try:
        client = Client(a.url, a.prompt_tokens, a.prompt, a.gen, a.timeout)
    except ValueError as e:
        ap.error(str(e))

    warm = Request()
    try:
        client.send(warm)
    except ServerError as e:
        print(f"serve-load.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"serve-load.py: error: {a.url}: {e}", file=sys.stderr)
        return 1
    if not warm.ok:
        print(f"serve-load.py: error: warm-up request: {warm.error}", file=sys.stderr)
        return 1

    results = []
    for n in a.streams:
        s = run_streams(client, n, a.rounds)
        results.append(s)
        print(f"serve-load.py: {n} streams: {s['ok']}/{s['requests']} ok, {s['aggregate_tps']:.2f} t/s",
              file=sys.stderr)
        for err in s["errors"]:
            print(f"serve-load.py:   failed: {err}", file=sys.stderr)
    prompt = (f"{a.prompt_tokens} token ids" if a.prompt is None else f"text {a.prompt!r}")
    print(f"server: {a.url}; prompt: {prompt}; generated per request: {a.gen}; rounds per stream: {a.rounds}")
    print()
    print(table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"url": a.url, "prompt_tokens": None if a.prompt is not None else a.prompt_tokens,
                       "prompt_text": a.prompt, "gen_tokens": a.gen, "rounds": a.rounds,
                       "results": results}, f, indent=1)
            f.write("\n")
    return 0 if all(s["failed"] == 0 for s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
