#!/usr/bin/python3
"""A rank that stops answering, and stop signals while starting, under `mpirun -np 2 serve`.

  1. Lost rank: two streams in flight, then rank 1 is frozen with SIGSTOP (to the other ranks a
     hung host and a dead link look the same: silence). Within 10 s: both streams end with
     UNAVAILABLE and a message naming rank 1, a Generate sent meanwhile gets UNAVAILABLE too,
     health says NOT_SERVING before the job ends, and the job exits non-zero.
  2. A rank killed (SIGKILL) with a stream in flight: UNAVAILABLE, and the job ends (the time
     from the kill to the end is printed).
  3. A stop signal while the model loads (SIGTERM to rank 0, then SIGUSR1 to mpirun, the
     launcher's way): every rank ends at once with a non-zero exit, never a server that
     serves on.
usage: test_serve_lost_rank.py --infernode BIN --slow-model GGUF --proto-dir DIR --grpc-proto DIR"""
import argparse
import os
import signal
import sys
import threading
import time

import grpc

import serve_util
from run_failures import rank_pids
from test_serve import FAILURES, Client, check, code_of


def stream_until_end(c, out):
    """Runs one long stream; out gets (first message time, status code, details, end time)."""
    try:
        for _ in c.inf.GenerateStream(c.request(ids=[1], n=100000, ignore_eos=True), timeout=120):
            out.setdefault("first", time.time())
        out["code"], out["details"] = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        out["code"], out["details"] = e.code(), e.details()
    out["end"] = time.time()


def watch_health(c, seen, stop):
    """seen: [(time, status name or error code)] every 50 ms until stop or the server is gone."""
    while not stop.is_set():
        try:
            st = c.health.Check(c.hpb.HealthCheckRequest(service=""), timeout=2).status
            seen.append((time.time(), c.hpb.HealthCheckResponse.ServingStatus.Name(st)))
        except grpc.RpcError as e:
            seen.append((time.time(), str(e.code())))
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                return
        time.sleep(0.05)


def test_lost_rank(a, stubs):
    server = serve_util.Server(a.infernode, a.slow_model, 2, ["--quant", "w4a8-g32", "--ctx-size", "4096",
                                                              "--max-seqs", "4"])
    pids = rank_pids(server.proc.pid, 2)
    try:
        c = Client(server.addr, stubs)
        streams = [{} for _ in range(2)]
        threads = [threading.Thread(target=stream_until_end, args=(c, s), daemon=True) for s in streams]
        for t in threads:
            t.start()
        end = time.time() + 60
        while time.time() < end and not all("first" in s for s in streams):
            time.sleep(0.05)
        check(all("first" in s for s in streams), "both streams started")
        seen, stop = [], threading.Event()
        watcher = threading.Thread(target=watch_health, args=(Client(server.addr, stubs), seen, stop), daemon=True)
        watcher.start()
        os.kill(pids[1], signal.SIGSTOP)
        t0 = time.time()
        for s in streams:
            while "end" not in s and time.time() < t0 + 15:
                time.sleep(0.05)
        late_code, late_details = None, ""
        if server.proc.poll() is None:
            late_code, late_details = code_of(lambda: c.generate(c.request(ids=[1], n=2), timeout=5))
        rc = server.wait_exit(30)
        t_exit = time.time() - t0
        stop.set()
        watcher.join(5)
        for i, s in enumerate(streams):
            check(s.get("code") == grpc.StatusCode.UNAVAILABLE and "rank 1" in s.get("details", ""),
                  f"stream {i}: {s.get('code')} {s.get('details')!r}, expected UNAVAILABLE naming rank 1")
            if "end" in s:
                check(s["end"] - t0 <= 10, f"stream {i} ended {s['end'] - t0:.1f} s after the rank stopped")
        if late_code is not None:
            check(late_code == grpc.StatusCode.UNAVAILABLE, f"Generate after the loss: {late_code} {late_details!r}")
        not_serving = [t for t, st in seen if st == "NOT_SERVING"]
        check(bool(not_serving), f"health said NOT_SERVING before the exit (seen: {[st for _, st in seen][-5:]})")
        check(rc != 0, f"the job exited {rc} after losing a rank")
        check(t_exit <= 10, f"the job ended {t_exit:.1f} s after rank 1 stopped (bound 10 s)")
        ends = [round(s["end"] - t0, 2) for s in streams if "end" in s]
        print(f"lost rank: streams ended after {ends} s with {streams[0].get('details')!r}; NOT_SERVING "
              f"{(not_serving[0] - t0) if not_serving else float('nan'):.2f} s; exit {rc} after {t_exit:.2f} s")
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.kill()


def test_killed_rank(a, stubs):
    """SIGKILL to rank 1 with a stream in flight: its heartbeat connection closes at once, so the
    stream ends with UNAVAILABLE, and rank 0 exits 0.2 s later. mpirun runs as deploy/launch.sh
    runs it (odls_base_sigkill_timeout 0: Open MPI's default waits 1 s between the signals it
    sends to the ranks it tears down). The bound checked is loose, as the machine may be
    loaded; the figure is printed."""
    env = dict(os.environ, OMPI_MCA_odls_base_sigkill_timeout="0")
    server = serve_util.Server(a.infernode, a.slow_model, 2, ["--quant", "w4a8-g32", "--ctx-size", "4096",
                                                              "--max-seqs", "4"], env=env)
    pids = rank_pids(server.proc.pid, 2)
    try:
        c = Client(server.addr, stubs)
        s = {}
        t = threading.Thread(target=stream_until_end, args=(c, s), daemon=True)
        t.start()
        end = time.time() + 60
        while time.time() < end and "first" not in s:
            time.sleep(0.01)
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.time()
        rc = server.wait_exit(30)
        t_exit = time.time() - t0
        t.join(10)
        check(s.get("code") == grpc.StatusCode.UNAVAILABLE and "rank 1" in s.get("details", ""),
              f"killed rank: the stream got {s.get('code')} {s.get('details')!r}")
        check(rc != 0 and t_exit <= 5, f"killed rank: the job exited {rc} after {t_exit:.2f} s")
        print(f"killed rank: stream ended {s.get('end', float('nan')) - t0:.3f} s and the job {t_exit:.3f} s after "
              f"the SIGKILL")
    finally:
        server.kill()


def test_stop_while_loading(a):
    for how in ("SIGTERM to rank 0", "SIGUSR1 to mpirun"):
        server = serve_util.Server(a.infernode, a.slow_model, 2, ["--quant", "w4a8-g32"], wait_serving=False)
        try:
            loading = not any("serving " in line for line in server.lines)
            if how == "SIGTERM to rank 0":
                os.kill(server.rank0_pid(), signal.SIGTERM)
            else:
                os.kill(server.proc.pid, signal.SIGUSR1)
            t0 = time.time()
            rc = server.wait_exit(30)
            dt = time.time() - t0
            check(loading, f"{how}: the model was still loading (too small to observe?)")
            check(rc != 0, f"{how} while loading: exit {rc}, expected non-zero")
            check(dt < 5, f"{how} while loading: the job took {dt:.1f} s to end")
            check(not any("serving " in line for line in server.lines), f"{how}: the server went on to serve")
            print(f"{how} while loading: exit {rc} after {dt:.2f} s")
        finally:
            server.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--slow-model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    test_lost_rank(a, stubs)
    test_killed_rank(a, stubs)
    test_stop_while_loading(a)
    print(f"{len(FAILURES)} failures")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
