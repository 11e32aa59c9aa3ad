#!/usr/bin/python3
"""The StreamingLLM KV ring and chat sessions through the whole service: `mpirun -np N
infernode serve` and Debian's grpcio client.

1. Equivalence with an independent reference. On the f32 golden models (--quant f32 --kv-type
   f32), in both RoPE layouts (GGUF, interleaved: gqa4-untied; Hugging Face directory, over
   halves: mha-tied) and both --kv-eviction modes, greedy requests that generate ~3 times their
   kv.ctx_size in ONE request must give the ids of tests/engine/ring_reference.py fed the same
   schedule. `Schedule` replays the scheduler's rule (coordinator/scheduler.c plan_chunk, for
   one sequence alone, so a step takes min(waiting, prefill chunk, window - n_keep) tokens):
   when len + chunk > window, drop d = the overflow rounded up to a multiple of n_discard (at
   most len - n_keep) oldest tokens after the n_keep sinks; shift-rope: the reference renumbers
   the kept entries (it rebuilds every key at its new position, independently of the engine's
   re-rotation); recompute: the kept tokens after the sinks are evaluated again at fresh
   positions. Rings: (32, n_keep 4, n_discard 8) from an 8-token prompt, 96 new; (24, n_keep 0,
   n_discard -1 = 12) from a 20-token prompt, 72 new; and a session of three turns whose
   context outgrows a ring of 32 (drops inside a turn's prompt chunk). kv_ring_discards (per
   request) and kv_window_recomputed must be the simulation's too.
   Near-ties: the engine's f32 logits are within 1e-4 of max|logit| of the float64 reference
   (the golden tests' tolerance), so a greedy choice may legitimately differ only where the
   reference's top-2 gap (reference.top2_gap) is that small. Prompts come from seeded
   generators and the test takes the first seed whose whole greedy path (every generated id, in
   every turn) keeps a gap of at least MIN_GAP = 1e-3 (10x the tolerance), so any mismatch in
   the ids is a bug, never rounding. A ring case must also be told apart from a wrong eviction
   (the other mode, and for shift-rope keys left at their old angles): it is chosen so that
   those give other ids.
2. Sessions. A three-turn session (new_session, then session_id) gives, greedy and without
   drops, exactly the ids of ONE request whose prompt is P1+O1+P2+O2+P3, and both equal the
   reference; usage.prompt_tokens of a follow-up is its own prompt only; every streamed
   message carries the session id. At np 2 (gguf) and np 1 (hf), and 8 sessions at once in
   threads. A turn ended by end-of-generation (id 2, the golden GGUF's EOS, a prompt found with
   the reference) leaves EOS out of the context: the next turn equals one request of
   P1+O1+P2. Back to back: clients that send each turn the moment they hold the previous
   response (1 session x 1000 turns at np 1, 8 sessions x 125 turns at np 2) are never refused
   as busy. (Elsewhere a turn refused that way is sent again and counted, so that the other
   checks still run; any such count fails the test too.)
3. Session errors and lifetime, on a model slow enough (tp slow.gguf, a few ms a token) that a
   request is still running while it is probed: a second request on a busy session and
   DeleteSession of a busy one -> FAILED_PRECONDITION naming the session id; a cancelled turn
   (its ring too large to drop anything) is rolled back: the next turn gives the ids of a
   second session that never had the cancelled turn; a turn cancelled after its ring (16)
   dropped entries ends the session (NOT_FOUND, reason "aborted"); DeleteSession, then a
   request and a second DeleteSession -> NOT_FOUND; --session-ttl 1: ~1.5 s idle ends a session
   ("expired") while one used every 0.4 s lives on; --kv-slots 2 --max-seqs 1: a third session
   ends the least recently used ("evicted"), the other two continue exactly (reference), and a
   request without a session takes the slot of the least recently used (by last use, not
   creation). On every server infernode_sessions and infernode_sessions_ended_total{reason}
   must match the sessions the test started and ended. Bad session and kv fields get
   INVALID_ARGUMENT (NOT_FOUND for an unknown id) naming the field.
4. Long generation: one streamed request of 10x its kv.ctx_size (64 -> 640 tokens, slow.gguf,
   np 2, bf16 KV) ends with FINISH_REASON_LENGTH after the simulated number of drops (also in
   infernode_kv_ring_discards_total); rank 0's VmRSS from token 80 (the ring has filled and
   dropped) to the end grows by at most 1 MiB.
5. StarCoder (GPT-BigCode: learned positions, no RoPE), np 2, started without --kv-eviction: the
   server's default is recompute (ModelInfo says so, and the architecture); the ring cases of 1
   equal an independent reference (tests/reference/bigcode_reference.py, KV entries kept per
   slot by BigCodeRing below) fed the recompute schedule, and are told apart from keeping the
   cached entries of the kept tokens (what shift-rope would do without RoPE to turn). A server
   asked for --kv-eviction shift-rope on it refuses to start, naming the option.
6. ModelInfo reports kv_eviction, kv_cache_type, kv_slots, default_n_keep, default_n_discard
   and session_ttl_seconds as each server was started.

Five servers, ~11 s on 2 cores. Everything used is built or generated by the build (the
golden_models and tp_slow_model fixtures), nothing from ../shared, so nothing is skipped.
usage: test_sessions.py --infernode BIN --models GOLDEN_DIR --bigcode-models DIR --slow-model GGUF
--proto-dir DIR --grpc-proto DIR"""
import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "engine"))

# The reference's matrices are tiny: one BLAS thread, so that idle BLAS threads spinning after a
# product do not take the cores from the server and slow this client down.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import grpc  # noqa: E402
import numpy as np  # noqa: E402

import readback  # noqa: E402
import serve_util  # noqa: E402
from bigcode_cases import CONFIGS as BIGCODE_CONFIGS  # noqa: E402
from bigcode_model import random_model as bigcode_random_model  # noqa: E402
from bigcode_reference import BigCodeReference  # noqa: E402
from reference import top2_gap  # noqa: E402
from ring_reference import RingReference  # noqa: E402
from test_serve import Client, code_of  # noqa: E402

MIN_GAP = 1e-3
PREFILL_CHUNK = 128  # serve's --prefill-chunk default (< --step-tokens 256): one sequence's chunk
EOS = 2              # the golden GGUF's tokenizer.ggml.eos_token_id
RSS_SLACK_KIB = 1024
GGUF, HF = "gguf-v3-f32/gqa4-untied", "hf-f32/mha-tied"
F32 = ["--quant", "f32", "--kv-type", "f32"]
FAILURES = []
EARLY_BUSY = [0]  # turns refused as busy right after the previous response (SessionClient.turn)
LOCK = threading.Lock()


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def resolve_discard(window, n_keep, n_discard):
    """The service's n_discard for a request (coordinator/service.c parse_kv): -1 is half the
    positions after the sinks (at least 1)."""
    return max((window - n_keep) // 2, 1) if n_discard == -1 else n_discard


class Schedule:
    """One sequence's KV as the scheduler keeps it, alone in its steps: hist is the token at
    each position (the last generated one waits to be evaluated in the next step), length how
    many are in the cache. Drives RingReference (model) or only counts drops (model None)."""

    def __init__(self, model, window, n_keep, n_discard, recompute, store="exact"):
        self.model, self.window, self.n_keep, self.recompute = model, window, n_keep, recompute
        self.n_discard = resolve_discard(window, n_keep, n_discard)
        assert self.n_discard > 0
        self.slot = model.new_slot(window, n_keep, store) if model else None
        self.hist, self.length = [], 0

    def turn(self, prompt, n_new, eos=None):
        """A request: its prompt, then up to n_new greedy ids (ending early at eos, which does
        not enter the context). Returns (ids, top-2 gap of every choice, drops)."""
        room = self.window - self.n_keep
        rest, ids, gaps, drops = list(prompt), [], [], 0
        while True:
            c = min(len(self.hist) - self.length + len(rest), PREFILL_CHUNK, room)
            discard = 0
            if self.length + c > self.window:
                over = self.length + c - self.window
                d = min(-(-over // self.n_discard) * self.n_discard, self.length - self.n_keep)
                del self.hist[self.n_keep:self.n_keep + d]
                drops += 1
                if self.recompute:
                    self.length = self.n_keep
                    c = min(len(self.hist) - self.length + len(rest), PREFILL_CHUNK, room)
                else:
                    self.length -= d
                    discard = d
            take = c - (len(self.hist) - self.length)
            if take > 0:
                self.hist += rest[:take]
                rest = rest[take:]
            tokens = self.hist[self.length:self.length + c]
            logits = self.model.step(self.slot, discard, self.length, tokens)[-1] if self.model else None
            self.length += c
            if self.length < len(self.hist) or rest:
                continue
            t = int(np.argmax(logits)) if self.model else 3
            if self.model:
                gaps.append(float(top2_gap(logits)))
            if eos is not None and t == eos:
                return ids, gaps, drops
            ids.append(t)
            self.hist.append(t)
            if len(ids) == n_new:
                return ids, gaps, drops


def rand_ids(rng, vocab, n, bos=False):
    return ([1] if bos else []) + [int(x) for x in rng.integers(3, vocab, n - int(bos))]


def find_seed(make, what, tries=60, start=0):
    """The first seed from `start` whose plan (make(seed) -> (plan, gaps)) keeps every greedy
    choice MIN_GAP from a tie."""
    for seed in range(start, start + tries):
        plan, gaps = make(seed)
        if plan is not None and min(gaps) >= MIN_GAP:
            return seed, plan
    raise RuntimeError(f"no seed in {start}..{start + tries - 1} gives {what} a top-2 gap >= {MIN_GAP}")


class Ledger:
    """The sessions the test started and ended on one server, against its metrics."""

    def __init__(self, server, name):
        self.server, self.name = server, name
        self.alive = 0
        self.ended = {}

    def started(self, n=1):
        self.alive += n

    def end(self, reason, n=1):
        self.alive -= n
        self.ended[reason] = self.ended.get(reason, 0) + n

    def verify(self, when):
        m = self.server.metrics()
        got = m.get("infernode_sessions", -1)
        check(got == self.alive, f"{self.name} {when}: infernode_sessions {got}, expected {self.alive}")
        for reason in ("deleted", "expired", "evicted", "aborted"):
            key = f'infernode_sessions_ended_total{{reason="{reason}"}}'
            got = m.get(key, 0)
            check(got == self.ended.get(reason, 0),
                  f"{self.name} {when}: {key} {got}, expected {self.ended.get(reason, 0)}")


class SessionClient(Client):
    def kv(self, window, n_keep, n_discard):
        return self.pb.KvOptions(ctx_size=window, n_keep=n_keep, n_discard=n_discard)

    def turn(self, ids, n, session=None, new=False, kv=None, eos=False, stream=False, timeout=60):
        """One greedy request; returns the last response (token_ids: all of them). A turn on a
        session refused as busy although the client holds the previous turn's response is
        counted in EARLY_BUSY and sent again (test_back_to_back judges that race; the other
        checks go on)."""
        for attempt in range(100):
            try:
                return self._turn(ids, n, session, new, kv, eos, stream, timeout)
            except grpc.RpcError as e:
                if not session or e.code() != grpc.StatusCode.FAILED_PRECONDITION or attempt == 99:
                    raise
                with LOCK:
                    EARLY_BUSY[0] += 1
                time.sleep(0.005)

    def _turn(self, ids, n, session, new, kv, eos, stream, timeout):
        req = self.request(ids=ids, n=n, ignore_eos=not eos)
        if session:
            req.session_id = session
        if new:
            req.new_session = True
        if kv is not None:
            req.kv.CopyFrom(kv)
        if not stream:
            return self.generate(req, timeout)
        out, sids = [], set()
        for msg in self.inf.GenerateStream(req, timeout=timeout):
            out += list(msg.token_ids)
            sids.add(msg.session_id)
            last = msg
        r = self.pb.GenerateResponse()
        r.CopyFrom(last)
        del r.token_ids[:]
        r.token_ids.extend(out)
        r.session_id = sids.pop() if len(sids) == 1 else f"<{len(sids)} different ids on the messages>"
        return r

    def delete(self, session, retry=True):
        """(code, details) of DeleteSession; refused as busy right after the session's last
        response, it is counted in EARLY_BUSY and sent again (as in turn)."""
        for attempt in range(100):
            code, details = code_of(
                lambda: self.inf.DeleteSession(self.pb.DeleteSessionRequest(session_id=session), timeout=10))
            if not retry or code != grpc.StatusCode.FAILED_PRECONDITION:
                break
            with LOCK:
                EARLY_BUSY[0] += 1
            time.sleep(0.005)
        return code, details

    def info(self):
        return self.inf.ModelInfo(self.pb.ModelInfoRequest(), timeout=10)


def check_info(c, name, **want):
    info = c.info()
    for k, v in want.items():
        got = getattr(info, k)
        check(got == v, f"{name}: ModelInfo.{k} {got!r}, expected {v!r}")


def wait_idle(server, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        m = server.metrics()
        if m.get("infernode_requests_running", 1) == 0 and m.get("infernode_requests_waiting", 1) == 0:
            return m
        time.sleep(0.02)
    return server.metrics()


# ---- 1. one request far beyond its ring, and a session across rings, against the reference ----

RING_CASES = (  # (window, n_keep, n_discard as sent, prompt length, new tokens)
    (32, 4, 8, 8, 96),
    (24, 0, -1, 20, 72),
)
SESSION_RING = (32, 4, 8, ((6, 20), (5, 20), (5, 20)))  # a session whose context outgrows its ring


def ring_plans(ref, recompute):
    """Per ring case (prompt, ids, drops, seed), from the first seed that keeps a safe margin
    and tells the rule apart from wrong ones; and the session's (prompts, per turn (ids, drops),
    seed)."""
    vocab = ref.cfg.vocab_size
    plans = []
    for i, (window, keep, disc, p_len, n) in enumerate(RING_CASES):
        def make(seed):
            prompt = rand_ids(np.random.default_rng(500 + 37 * i + seed), vocab, p_len, bos=True)
            ids, gaps, drops = Schedule(ref, window, keep, disc, recompute).turn(prompt, n)
            if min(gaps) < MIN_GAP:
                return None, gaps
            # the case must tell the rule apart from the other eviction mode and, for shift-RoPE,
            # from keys left at their old angles (the emulated cache of ring_reference.py)
            wrong = [Schedule(ref, window, keep, disc, not recompute).turn(prompt, n)[0]]
            if not recompute:
                wrong.append(Schedule(ref, window, keep, disc, False, "norotate").turn(prompt, n)[0])
            return ((prompt, ids, drops), gaps) if ids not in wrong else (None, gaps)
        seed, plan = find_seed(make, f"ring case {i} (safe margins, told apart from wrong evictions)")
        plans.append(plan + (seed,))
    window, keep, disc, turns = SESSION_RING

    def make_session(seed):
        rng = np.random.default_rng(900 + seed)
        sched = Schedule(ref, window, keep, disc, recompute)
        prompts, outs, gaps = [], [], []
        for j, (p_len, n) in enumerate(turns):
            prompts.append(rand_ids(rng, vocab, p_len, bos=j == 0))
            ids, g, drops = sched.turn(prompts[-1], n)
            outs.append((ids, drops))
            gaps += g
        return (prompts, outs), gaps
    seed, plan = find_seed(make_session, "the ring session")
    return plans, plan + (seed,)


def test_ring_equivalence(c, name, ref, recompute, ledger):
    t0 = time.time()
    plans, (s_prompts, s_outs, s_seed) = ring_plans(ref, recompute)
    t_ref = time.time() - t0
    for (window, keep, disc, _, n), (prompt, ids, drops, _) in zip(RING_CASES, plans):
        what = f"{name}: ring ({window}, n_keep {keep}, n_discard {disc}), {len(prompt)}-token prompt, {n} new"
        r = c.turn(prompt, n, kv=c.kv(window, keep, disc))
        got = list(r.token_ids)
        first = next((i for i, (a, b) in enumerate(zip(got, ids)) if a != b), None)
        check(got == ids, f"{what}: ids differ from the ring reference from token {first} "
              f"({got[first:first + 4] if first is not None else got[len(ids):][:4]} vs "
              f"{ids[first:first + 4] if first is not None else ids[len(got):][:4]})")
        check(r.finish_reason == c.pb.FINISH_REASON_LENGTH, f"{what}: finish_reason {r.finish_reason}")
        check(r.kv_ring_discards == drops and drops >= 3, f"{what}: kv_ring_discards {r.kv_ring_discards}, "
              f"the schedule drops {drops} times")
        check(r.kv_window_recomputed == recompute, f"{what}: kv_window_recomputed {r.kv_window_recomputed}")
    # a session of three turns whose context outgrows its ring (drops inside a turn's prompt chunk)
    window, keep, disc, turns = SESSION_RING
    sid = None
    for j, ((prompt, (ids, drops)), (_, n)) in enumerate(zip(zip(s_prompts, s_outs), turns)):
        what = f"{name}: session on ring ({window}, {keep}, {disc}), turn {j + 1}"
        r = c.turn(prompt, n, session=sid, new=j == 0, kv=c.kv(window, keep, disc) if j == 0 else None, stream=j == 1)
        if j == 0:
            sid = r.session_id
            ledger.started()
        check(list(r.token_ids) == ids, f"{what}: ids {list(r.token_ids)} != the ring reference's {ids}")
        check(r.kv_ring_discards == drops, f"{what}: kv_ring_discards {r.kv_ring_discards}, the schedule's {drops}")
        check(r.kv_window_recomputed == (recompute and drops > 0),
              f"{what}: kv_window_recomputed {r.kv_window_recomputed}")
        check(r.usage.prompt_tokens == len(prompt), f"{what}: usage.prompt_tokens {r.usage.prompt_tokens}")
    check(sum(d for _, d in s_outs) >= 3, f"{name}: the ring session drops only {sum(d for _, d in s_outs)} times")
    code, _ = c.delete(sid)
    check(code == grpc.StatusCode.OK, f"{name}: DeleteSession of an idle session: {code}")
    ledger.end("deleted")
    print(f"  {name}: {len(RING_CASES)} requests and a 3-turn session through the ring equal the reference "
          f"(drops {[p[2] for p in plans]}, session {[d for _, d in s_outs]}; seeds "
          f"{[p[3] for p in plans] + [s_seed]}, reference {t_ref:.1f} s)", flush=True)


# ---- 2. sessions = one request over the whole conversation ----

CHAT = ((6, 8), (5, 8), (5, 8))  # (prompt length, new tokens) per turn: 40 positions, no drops


def chat_plan(ref, seed, window):
    """(prompts, outputs per turn, the single request's output) for the seed; gaps of both."""
    rng = np.random.default_rng(2000 + seed)
    vocab = ref.cfg.vocab_size
    sched = Schedule(ref, window, 4, 8, False)
    prompts, outs, gaps = [], [], []
    for j, (p_len, n) in enumerate(CHAT):
        prompts.append(rand_ids(rng, vocab, p_len, bos=j == 0))
        ids, g, drops = sched.turn(prompts[-1], n)
        assert drops == 0
        outs.append(ids)
        gaps += g
    whole = prompts[0] + outs[0] + prompts[1] + outs[1] + prompts[2]
    single, g, _ = Schedule(ref, window, 4, 8, False).turn(whole, CHAT[2][1])
    return (prompts, outs, whole, single), gaps + g


def run_chat(c, plan, name):
    """The three turns, then the single request; returns the failures (a list of strings)."""
    prompts, outs, whole, single = plan
    bad, sid = [], None
    for j, (prompt, (_, n)) in enumerate(zip(prompts, CHAT)):
        r = c.turn(prompt, n, session=sid, new=j == 0, stream=j == 1)
        if j == 0:
            sid = r.session_id
            if len(sid) != 32:
                bad.append(f"{name}: new_session gave session_id {sid!r}")
        elif r.session_id != sid:
            bad.append(f"{name} turn {j + 1}: session_id {r.session_id!r}, sent {sid!r}")
        if list(r.token_ids) != outs[j]:
            bad.append(f"{name} turn {j + 1}: ids {list(r.token_ids)} != reference {outs[j]}")
        if r.usage.prompt_tokens != len(prompt) or r.usage.completion_tokens != n:
            bad.append(f"{name} turn {j + 1}: usage {r.usage.prompt_tokens}+{r.usage.completion_tokens}, "
                       f"expected {len(prompt)}+{n}")
        if r.kv_ring_discards:
            bad.append(f"{name} turn {j + 1}: kv_ring_discards {r.kv_ring_discards} in a ring that never filled")
    r = c.turn(whole, CHAT[2][1])
    if list(r.token_ids) != single or single != outs[2]:
        bad.append(f"{name}: one request of P1+O1+P2+O2+P3 gives {list(r.token_ids)}, the third turn "
                   f"{outs[2]}, reference {single}")
    if r.usage.prompt_tokens != len(whole) or r.session_id:
        bad.append(f"{name}: the single request's usage.prompt_tokens {r.usage.prompt_tokens} (expected "
                   f"{len(whole)}), session_id {r.session_id!r}")
    return bad, sid


def test_chat(c, name, ref, window, ledger, threads=0):
    seeds, plans, start = [], [], 0
    for _ in range(max(threads, 1)):
        seed, plan = find_seed(lambda s: chat_plan(ref, s, window), "a chat", start=start)
        seeds.append(seed)
        plans.append(plan)
        start = seed + 1
    if threads:
        with cf.ThreadPoolExecutor(threads) as ex:
            results = list(ex.map(lambda p: run_chat(c, p[1], f"{name} chat {p[0]} of {threads} at once"),
                                  enumerate(plans)))
    else:
        results = [run_chat(c, plans[0], f"{name} chat")]
    for bad, _ in results:
        for b in bad:
            check(False, b)
    ids = {sid for _, sid in results}
    check(len(ids) == len(results), f"{name}: {len(results)} sessions got {len(ids)} distinct ids")
    ledger.started(len(results))
    print(f"  {name}: {len(results)} three-turn session(s){' at once' if threads else ''} equal one request over "
          f"the conversation and the reference (seeds {seeds})", flush=True)
    return [sid for _, sid in results]


def test_eos_turn(c, name, ref, window, ledger):
    """A turn ended by EOS leaves it out of the context."""
    vocab = ref.cfg.vocab_size

    def make(seed):
        rng = np.random.default_rng(3000 + seed)
        p1 = rand_ids(rng, vocab, 5, bos=True)
        sched = Schedule(ref, window, 4, 8, False)
        o1, g1, _ = sched.turn(p1, 16, eos=EOS)
        if not 2 <= len(o1) < 16:  # EOS after at least two ids
            return None, [0.0]
        p2 = rand_ids(rng, vocab, 4)
        o2, g2, _ = sched.turn(p2, 8)
        return (p1, o1, p2, o2), g1 + g2
    seed, (p1, o1, p2, o2) = find_seed(make, "a turn ending with EOS", tries=400)
    r1 = c.turn(p1, 16, new=True, eos=True)
    sid = r1.session_id
    ledger.started()
    check(r1.finish_reason == c.pb.FINISH_REASON_EOS and list(r1.token_ids) == o1,
          f"{name}: EOS turn gives {list(r1.token_ids)} ({r1.finish_reason}), reference {o1} then EOS")
    r2 = c.turn(p2, 8, session=sid)
    single = c.turn(p1 + o1 + p2, 8)
    check(list(r2.token_ids) == o2 and list(single.token_ids) == o2,
          f"{name}: after an EOS turn, the next gives {list(r2.token_ids)}, one request of P1+O1+P2 "
          f"{list(single.token_ids)}, reference {o2}")
    print(f"  {name}: a turn ended by EOS (after {len(o1)} ids, seed {seed}) keeps EOS out of the context", flush=True)
    return sid


def test_bad_session_requests(c, name, sid):
    INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    both = c.request(ids=[1, 5], n=2)
    both.session_id, both.new_session = sid, True
    with_kv = c.request(ids=[5], n=2)
    with_kv.session_id = sid
    with_kv.kv.n_keep = 1
    empty = c.request(ids=[5], n=2)
    empty.session_id = ""
    unknown = c.request(ids=[5], n=2)
    unknown.session_id = "0123456789abcdef0123456789abcdef"
    n0 = c.request(ids=[1, 5, 6], n=40)
    n0.kv.CopyFrom(c.pb.KvOptions(ctx_size=16, n_keep=2, n_discard=0))
    cases = [
        ("new_session with session_id", both, INVALID, "new_session"),
        ("kv on a continued session", with_kv, INVALID, "kv"),
        ("empty session_id", empty, INVALID, "session_id"),
        ("unknown session_id", unknown, NOT_FOUND, "0123456789abcdef0123456789abcdef"),
        ("kv.n_discard 0 and too many tokens", n0, INVALID, "max_new_tokens"),
    ]
    for kv, field in (((16, 16, 1), "kv.n_keep"), ((16, 2, 15), "kv.n_discard"), ((16, 2, -2), "kv.n_discard"),
                      ((1 << 20, 2, 1), "kv.ctx_size")):
        r = c.request(ids=[1, 5], n=2)
        r.kv.CopyFrom(c.kv(*kv))
        cases.append((f"kv {kv}", r, INVALID, field))
    for what, req, want, field in cases:
        code, details = code_of(lambda: c.generate(req))
        check(code == want and field in details, f"{name}: {what}: {code} {details!r}, expected {want} naming {field}")
    code, details = code_of(lambda: c.inf.DeleteSession(c.pb.DeleteSessionRequest(), timeout=10))
    check(code == INVALID and "session_id" in details, f"{name}: DeleteSession without an id: {code} {details!r}")
    code, details = c.delete("0123456789abcdef0123456789abcdef")
    check(code == NOT_FOUND and "0123456789abcdef" in details, f"{name}: DeleteSession of an unknown id: {code}")


def test_back_to_back(c, name, ledger, vocab, sessions, turns, n):
    """Clients that send each turn as soon as they hold the previous response (`sessions`
    threads, `turns` turns of one prompt token and n new ones each): no turn may be refused as
    busy, which needs the session to be idle before its response goes out."""
    rng = np.random.default_rng(17)
    sids = [c._turn(rand_ids(rng, vocab, 3, True), 1, None, True, None, False, False, 60).session_id
            for _ in range(sessions)]
    ledger.started(sessions)

    def run(sid):
        reqs = [c.request(ids=[int(rng.integers(3, vocab))], n=n, ignore_eos=True, session_id=sid)
                for _ in range(turns)]
        refused, first = 0, ""
        for req in reqs:  # built beforehand: the next goes out as soon as the previous answer is in
            code, details = code_of(lambda: c.inf.Generate(req, timeout=60))
            if code != grpc.StatusCode.OK:
                refused += 1
                first = first or f"{code} {details}"
        return refused, first

    with cf.ThreadPoolExecutor(sessions) as ex:
        results = list(ex.map(run, sids))
    refused = sum(r for r, _ in results)
    check(refused == 0, f"{name}: {refused} of {sessions * turns} turns sent right after the previous turn's "
          f"response were refused ({next(f for _, f in results if f) if refused else ''})")
    for sid in sids:
        check(c.delete(sid)[0] == grpc.StatusCode.OK, f"{name}: DeleteSession after back-to-back turns")
        ledger.end("deleted")
    print(f"  {name}: {sessions} session(s) x {turns} back-to-back turns of {n} token(s): {refused} refused as busy",
          flush=True)


# ---- 3. busy, cancel (rollback and abort), delete, TTL, LRU ----

def test_busy_cancel_delete(c, server, ledger, vocab):
    rng = np.random.default_rng(7)
    p1, p2, p3 = rand_ids(rng, vocab, 6, True), rand_ids(rng, vocab, 5), rand_ids(rng, vocab, 5)
    a = c.turn(p1, 6, new=True)
    sid = a.session_id
    ledger.started()
    o1 = list(a.token_ids)
    before = wait_idle(server)
    call = c.inf.GenerateStream(c.request(ids=p2, n=1000, ignore_eos=True, session_id=sid), timeout=60)
    got = []
    for msg in call:
        got += list(msg.token_ids)
        if got:
            break
    code, details = code_of(lambda: c.generate(c.request(ids=p3, n=2, session_id=sid)))
    check(code == grpc.StatusCode.FAILED_PRECONDITION and sid in details,
          f"a second request on a busy session: {code} {details!r}")
    code, details = c.delete(sid, retry=False)
    check(code == grpc.StatusCode.FAILED_PRECONDITION and sid in details,
          f"DeleteSession of a busy session: {code} {details!r}")
    for msg in call:
        got += list(msg.token_ids)
        if len(got) >= 5:
            break
    call.cancel()
    after = wait_idle(server)
    key = 'infernode_requests_finished_total{reason="cancelled"}'
    check(after.get(key, 0) == before.get(key, 0) + 1, "the session's turn ended as cancelled")
    check(after.get("infernode_kv_ring_discards_total", 0) == before.get("infernode_kv_ring_discards_total", 0),
          "the cancelled turn ended before its ring dropped anything")
    ledger.verify("after a cancelled turn")
    # the session is as it was: its next turn equals a session that never had the cancelled one
    r3 = c.turn(p3, 12, session=sid)
    b1 = c.turn(p1, 6, new=True)
    ledger.started()
    b3 = c.turn(p3, 12, session=b1.session_id)
    check(list(b1.token_ids) == o1, f"the same first turn in a second session: {list(b1.token_ids)} != {o1}")
    check(list(r3.token_ids) == list(b3.token_ids),
          f"after a cancelled turn ({len(got)}+ ids) the session gives {list(r3.token_ids)}, a session that never "
          f"had it {list(b3.token_ids)}")
    check(r3.usage.prompt_tokens == len(p3), f"the turn after the cancel: prompt_tokens {r3.usage.prompt_tokens}")
    # deleted: NOT_FOUND afterwards, naming the session
    for s in (sid, b1.session_id):
        code, details = c.delete(s)
        check(code == grpc.StatusCode.OK, f"DeleteSession of an idle session: {code} {details!r}")
        ledger.end("deleted")
    code, details = code_of(lambda: c.generate(c.request(ids=p3, n=2, session_id=sid)))
    check(code == grpc.StatusCode.NOT_FOUND and sid in details, f"a request on a deleted session: {code} {details!r}")
    code, details = c.delete(sid)
    check(code == grpc.StatusCode.NOT_FOUND and sid in details, f"DeleteSession twice: {code} {details!r}")
    ledger.verify("after DeleteSession")
    # a turn cancelled after its ring dropped entries cannot be rolled back: the session ends (n so
    # large that the turn cannot end by itself before a slow client cancels it)
    before = wait_idle(server)
    call = c.inf.GenerateStream(c.request(ids=p1, n=100000, ignore_eos=True, new_session=True,
                                          kv=c.kv(16, 2, 4)), timeout=60)
    got, csid = [], None
    for msg in call:
        got += list(msg.token_ids)
        csid = msg.session_id
        if len(got) >= 30:
            break
    call.cancel()
    ledger.started()
    after = wait_idle(server)
    dropped = after.get("infernode_kv_ring_discards_total", 0) - before.get("infernode_kv_ring_discards_total", 0)
    check(dropped >= 3, f"the ring of 16 dropped {dropped} times before the cancel after {len(got)} ids")
    ledger.end("aborted")
    code, details = code_of(lambda: c.generate(c.request(ids=p2, n=2, session_id=csid)))
    check(code == grpc.StatusCode.NOT_FOUND and csid in details,
          f"a session whose turn was cancelled after drops: {code} {details!r}")
    ledger.verify("after a cancel past drops")
    print("  busy session refused, cancelled turn rolled back, cancel after drops ends the session, "
          "DeleteSession then NOT_FOUND", flush=True)


def test_long_generation(c, server, ledger):
    """640 tokens through a ring of 64 in one streamed request; rank 0's memory stays flat."""
    window, n = 64, 640
    info = c.info()
    keep, disc = info.default_n_keep, info.default_n_discard
    prompt = rand_ids(np.random.default_rng(11), info.vocab_size, 8, True)
    _, _, drops = Schedule(None, window, keep, disc, False).turn(prompt, n)
    pid = server.rank0_pid()
    samples = []
    before = server.metrics().get("infernode_kv_ring_discards_total", 0)
    ids, last = [], None
    for msg in c.inf.GenerateStream(c.request(ids=prompt, n=n, ignore_eos=True, kv=c.pb.KvOptions(ctx_size=window)),
                                    timeout=120):
        ids += list(msg.token_ids)
        last = msg
        if len(ids) >= 80 * (len(samples) + 1):  # from token 80: the ring has filled and dropped
            samples.append((len(ids), serve_util.rss_kib(pid)))
    end = serve_util.rss_kib(pid)
    after = server.metrics().get("infernode_kv_ring_discards_total", 0)
    check(last.finish_reason == c.pb.FINISH_REASON_LENGTH and len(ids) == n and last.usage.completion_tokens == n,
          f"long generation: {len(ids)} ids, finish_reason {last.finish_reason}")
    check(last.kv_ring_discards == drops and drops > 0 and after - before == drops,
          f"long generation: kv_ring_discards {last.kv_ring_discards}, metric +{after - before}, schedule {drops}")
    at, first = samples[0] if samples else ("?", end)
    grew = end - first
    check(samples and grew <= RSS_SLACK_KIB, f"rank 0 grew by {grew} KiB from token {at} (ring full) to the end of "
          f"{n}: {samples}")
    print(f"  {n} tokens through a ring of {window} (n_keep {keep}, n_discard {disc}): {drops} drops; rank 0 "
          f"VmRSS {first} KiB at token {at}, {end} KiB at the end ({grew:+d} KiB)", flush=True)


def test_ttl(c, server, ledger, vocab):
    rng = np.random.default_rng(13)
    idle = c.turn(rand_ids(rng, vocab, 4, True), 2, new=True).session_id
    used = c.turn(rand_ids(rng, vocab, 4, True), 2, new=True).session_id
    ledger.started(2)
    for _ in range(4):  # 1.6 s in all, never idle for 1 s
        time.sleep(0.4)
        r = c.turn(rand_ids(rng, vocab, 2), 1, session=used)
        check(r.session_id == used, "a session used every 0.4 s outlives a TTL of 1 s")
    ledger.end("expired")  # the idle one: gone without any request (expiry runs while the server idles)
    time.sleep(0.3)
    ledger.verify("after 1.9 s idle with --session-ttl 1")
    code, details = code_of(lambda: c.generate(c.request(ids=[5], n=1, session_id=idle)))
    check(code == grpc.StatusCode.NOT_FOUND and idle in details, f"an expired session: {code} {details!r}")
    time.sleep(1.5)
    ledger.end("expired")
    code, _ = code_of(lambda: c.generate(c.request(ids=[5], n=1, session_id=used)))
    check(code == grpc.StatusCode.NOT_FOUND, f"the other session after 1.5 s idle: {code}")
    ledger.verify("after both expired")
    print("  --session-ttl 1: idle sessions expire, a session in use lives on", flush=True)


def test_lru(c, server, ledger, ref):
    """--kv-slots 2 --max-seqs 1: three sessions, the least recently used one ends."""
    plans = []
    start = 0
    for _ in range(3):
        seed, plan = find_seed(lambda s: chat_plan(ref, s, 64), "an LRU chat", start=start)
        plans.append(plan)
        start = seed + 1
    sids = []
    for k, (prompts, outs, _, _) in enumerate(plans):
        r = c.turn(prompts[0], CHAT[0][1], new=True)
        check(list(r.token_ids) == outs[0], f"LRU session {k} turn 1: {list(r.token_ids)} != {outs[0]}")
        sids.append(r.session_id)
        ledger.started()
        time.sleep(0.01)  # distinct last-use times
    ledger.end("evicted")
    ledger.verify("after a third session in 2 KV slots")
    code, details = code_of(lambda: c.generate(c.request(ids=plans[0][0][1], n=2, session_id=sids[0])))
    check(code == grpc.StatusCode.NOT_FOUND and sids[0] in details,
          f"the least recently used of 3 sessions in 2 slots: {code} {details!r}")
    for k in (2, 1):  # session 2 is used first: by last use (not by creation) it is now the older one
        prompts, outs, _, _ = plans[k]
        r = c.turn(prompts[1], CHAT[1][1], session=sids[k])
        check(list(r.token_ids) == outs[1], f"LRU session {k} turn 2: {list(r.token_ids)} != reference {outs[1]}")
        time.sleep(0.01)
    # a request without a session needs a slot too: session 2 (least recently used) ends
    c.turn([1, 5, 6], 2)
    ledger.end("evicted")
    code, _ = code_of(lambda: c.generate(c.request(ids=[5], n=1, session_id=sids[2])))
    check(code == grpc.StatusCode.NOT_FOUND, f"the least recently used session after a request without one: {code}")
    prompts, outs, _, _ = plans[1]
    r = c.turn(prompts[2], CHAT[2][1], session=sids[1])
    check(list(r.token_ids) == outs[2], f"LRU session 1 turn 3: {list(r.token_ids)} != reference {outs[2]}")
    ledger.verify("after a request without a session took the LRU slot")
    print("  --kv-slots 2 --max-seqs 1: the least recently used session ends, the others continue exactly",
          flush=True)


# ---- the servers ----

def load_reference(models, name):
    """The golden model's path (manifest.json) and a ring reference of the weights in it."""
    path = {c["name"]: c for c in json.load(open(os.path.join(models, "manifest.json")))["cases"]}[name]["model"]
    cfg, weights = readback.hf_model(path) if os.path.isdir(path) else readback.gguf_llama_model(path)
    return path, RingReference(cfg, weights)


class BigCodeRing:
    """RingReference's interface (new_slot, step) over the GPT-BigCode reference: a slot keeps
    each entry's K and V as computed when its token was evaluated. A discard drops entries
    n_keep..n_keep+d-1 and moves the later ones down, keeping their values (their positions
    are in them, through the learned position embedding: nothing can renumber them, which is
    why such models evict by recompute, where the scheduler re-evaluates the kept tokens
    instead and never discards)."""

    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.ref = BigCodeReference(cfg, weights)

    def new_slot(self, window, n_keep, store="exact"):
        assert store == "exact"
        self.ref.reset()
        return {"k": self.ref.k_cache.copy(), "v": self.ref.v_cache.copy(), "len": 0, "n_keep": n_keep}

    def step(self, slot, discard, pos0, tokens):
        k0, n = slot["n_keep"], slot["len"]
        for c in (slot["k"], slot["v"]):
            c[:, k0:n - discard] = c[:, k0 + discard:n].copy()
        self.ref.k_cache, self.ref.v_cache, self.ref.pos = slot["k"], slot["v"], pos0
        logits = self.ref.forward(tokens)
        slot["len"] = pos0 + len(tokens)
        return logits


def load_bigcode(models, name):
    """A StarCoder fixture model (f32, so the weights are the generator's exactly) and its ring."""
    case = {c["name"]: c for c in json.load(open(os.path.join(models, "manifest.json")))["cases"]}[name]
    cfg = BIGCODE_CONFIGS[case["config"]][0]
    return case["model"], BigCodeRing(cfg, bigcode_random_model(cfg, case["seed"]))


def test_no_rope_refuses_shift(a, path):
    """--kv-eviction shift-rope on a model without RoPE: the server refuses to start."""
    p = subprocess.run([a.infernode, "serve", "-m", path, "--port", "0", "--metrics-port", "-1", "--http-port", "-1",
                        "--kv-eviction",
                        "shift-rope"], capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "--kv-eviction shift-rope" in p.stderr and "learned positions" in p.stderr,
          f"starcoder with --kv-eviction shift-rope: exit {p.returncode}, stderr {p.stderr.strip()[-300:]!r}")


def serve(a, stubs, model, np_, args, name, body):
    """Runs body(client, server, ledger) against a server; an RPC that fails unexpectedly (the
    server died, say) fails this server's checks with the end of its log, and the next go on."""
    t0 = time.time()
    server = serve_util.Server(a.infernode, model, np_, args)
    try:
        c = SessionClient(server.addr, stubs)
        ledger = Ledger(server, name)
        body(c, server, ledger)
        ledger.verify("at the end")
        r = c.turn([1, 5, 6], 2)
        check(len(r.token_ids) == 2, f"{name}: the server still answers")
    except grpc.RpcError as e:
        time.sleep(0.3)
        tail = "".join(server.lines[-6:])
        check(False, f"{name}: an RPC failed: {e.code()} {e.details()}; the server's log ends:\n{tail}")
    finally:
        server.kill()
    print(f"{name}: done ({time.time() - t0:.1f} s)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--bigcode-models", required=True)
    ap.add_argument("--slow-model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    for p in (os.path.join(a.models, "manifest.json"), os.path.join(a.bigcode_models, "manifest.json"), a.slow_model):
        if not os.path.exists(p):
            print(f"FAIL: {p} is missing (the golden_models / bigcode_models / tp_slow_model fixtures did not run)")
            return 1
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    t0 = time.time()
    gguf_path, gguf = load_reference(a.models, GGUF)
    hf_path, hf = load_reference(a.models, HF)
    sc_path, sc = load_bigcode(a.bigcode_models, "gguf-f32/mqa-untied")

    def gguf_shift(c, server, ledger):
        check_info(c, "gguf np 2", kv_eviction="shift-rope", kv_cache_type="f32", kv_slots=16, default_n_keep=4,
                   default_n_discard=8, session_ttl_seconds=600.0, ranks=2)
        test_ring_equivalence(c, "gguf shift-rope np 2", gguf, False, ledger)
        sids = test_chat(c, "gguf np 2", gguf, 64, ledger)
        sids += test_chat(c, "gguf np 2", gguf, 64, ledger, threads=8)
        sids.append(test_eos_turn(c, "gguf np 2", gguf, 64, ledger))
        test_bad_session_requests(c, "gguf np 2", sids[-1])
        ledger.verify("after the chats")
        for s in sids:  # 10 of the 16 KV slots: free them for the next 8 sessions
            check(c.delete(s)[0] == grpc.StatusCode.OK, "gguf np 2: DeleteSession after a chat")
            ledger.end("deleted")
        test_back_to_back(c, "gguf np 2", ledger, gguf.cfg.vocab_size, 8, 125, 4)
        ledger.verify("after the back-to-back turns")

    def gguf_recompute(c, server, ledger):
        check_info(c, "gguf recompute", kv_eviction="recompute", kv_cache_type="f32", kv_slots=2, default_n_keep=4,
                   default_n_discard=-1, session_ttl_seconds=600.0)
        test_back_to_back(c, "gguf np 1", ledger, gguf.cfg.vocab_size, 1, 1000, 1)
        test_ring_equivalence(c, "gguf recompute np 1", gguf, True, ledger)
        test_lru(c, server, ledger, gguf)

    def hf_shift(c, server, ledger):
        check_info(c, "hf np 1", kv_eviction="shift-rope", kv_cache_type="f32", kv_slots=4, default_n_keep=3,
                   default_n_discard=5, session_ttl_seconds=1.0)
        test_ring_equivalence(c, "hf shift-rope np 1", hf, False, ledger)
        for s in test_chat(c, "hf np 1", hf, 64, ledger):
            check(c.delete(s)[0] == grpc.StatusCode.OK, "hf np 1: DeleteSession after the chat")
            ledger.end("deleted")
        test_ttl(c, server, ledger, hf.cfg.vocab_size)

    def hf_recompute(c, server, ledger):
        check_info(c, "hf recompute", kv_eviction="recompute", kv_cache_type="f32", kv_slots=16, ranks=2)
        test_ring_equivalence(c, "hf recompute np 2", hf, True, ledger)

    def starcoder(c, server, ledger):
        check_info(c, "starcoder np 2", architecture="starcoder", kv_eviction="recompute", ranks=2)
        test_ring_equivalence(c, "starcoder recompute np 2", sc, True, ledger)

    def slow(c, server, ledger):
        check_info(c, "slow np 2", kv_eviction="shift-rope", kv_cache_type="bf16", kv_slots=6, default_n_keep=2,
                   default_n_discard=16, session_ttl_seconds=120.0, ranks=2)
        test_long_generation(c, server, ledger)
        test_busy_cancel_delete(c, server, ledger, c.info().vocab_size)

    serve(a, stubs, gguf_path, 2, F32 + ["--ctx-size", "64", "--n-keep", "4", "--n-discard", "8"], "gguf np 2",
          gguf_shift)
    serve(a, stubs, gguf_path, 1, F32 + ["--ctx-size", "64", "--kv-eviction", "recompute", "--kv-slots", "2",
                                         "--max-seqs", "1"], "gguf recompute np 1", gguf_recompute)
    serve(a, stubs, hf_path, 1, F32 + ["--ctx-size", "64", "--max-seqs", "4", "--n-keep", "3", "--n-discard", "5",
                                       "--session-ttl", "1"], "hf np 1", hf_shift)
    serve(a, stubs, hf_path, 2, F32 + ["--ctx-size", "64", "--kv-eviction", "recompute"], "hf recompute np 2",
          hf_recompute)
    serve(a, stubs, sc_path, 2, F32 + ["--ctx-size", "64"], "starcoder np 2", starcoder)
    test_no_rope_refuses_shift(a, sc_path)
    serve(a, stubs, a.slow_model, 2, ["--kv-type", "bf16", "--ctx-size", "1024", "--max-seqs", "3", "--kv-slots", "6",
                                      "--n-keep", "2", "--n-discard", "16", "--session-ttl", "120"], "slow np 2", slow)
    check(EARLY_BUSY[0] == 0, f"{EARLY_BUSY[0]} turns were refused as busy although the client held the response "
          "to their session's previous turn, or DeleteSession right after it (sent again; see the back-to-back "
          "checks)")
    print(f"{time.time() - t0:.1f} s", flush=True)
    if FAILURES:
        print(f"{len(FAILURES)} failures", flush=True)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
