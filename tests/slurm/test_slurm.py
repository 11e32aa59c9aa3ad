#!/usr/bin/python3
"""deploy/slurm/infernode.sbatch on a real Slurm: Debian's slurmctld + slurmd + munged, started
by this test on this machine as a private one-node cluster (tests/slurm/slurm_cluster.py), and
Debian's python3-grpcio as the client. Three jobs of 2 ranks x 1 thread, one after another:

  1. srun (the default launcher): health SERVING, a Generate answered; then a plain
     `scancel JOBID` while a GenerateStream is in flight: a health watcher sees NOT_SERVING, a
     new call gets UNAVAILABLE, the stream finishes with all its tokens (finish_reason length),
     the server logs a drain of 1 request, every rank stops, the batch script reports exit
     status 0, the job leaves the queue before KillWait could kill anything;
  2. the same through deploy/launch.sh and mpirun (INFERNODE_LAUNCH=mpirun);
  3. the time limit: --time=2 with --signal=B:TERM@60, two clients streaming back to back;
     Slurm's warning signal reaches the batch shell alone, the streams in flight finish whole,
     new ones get UNAVAILABLE (CANCELLED in the instant the gRPC server shuts down) and no
     token, and the job ends COMPLETED with ExitCode 0:0 before its limit.

Skips (exit 77) when the Slurm or munge packages are missing, or when not root, unless
CI=true, where that is a failure.

usage: test_slurm.py --infernode BIN --model GGUF --sbatch FILE --repo DIR --proto-dir DIR
                     --grpc-proto DIR [--keep]"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import slurm_cluster  # noqa: E402

DRAIN_SECONDS = 90    # the server's --drain-seconds in these jobs: far above the streams' length
KILL_WAIT = 120       # the test cluster's KillWait: above the drain, as docs/cluster-slurm.md asks
SERVING_TIMEOUT = 180
STREAM_SECONDS = 6    # how long the stream in flight should take at the measured rate

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def skip_or_fail(why):
    if os.environ.get("CI") == "true":
        print(f"FAIL (CI=true): {why}", flush=True)
        sys.exit(1)
    print(f"SKIP: {why}", flush=True)
    sys.exit(77)


class Client:
    def __init__(self, grpc, stubs, addr):
        self.grpc = grpc
        self.pb, pb_grpc, self.hpb, hpb_grpc = stubs
        self.channel = grpc.insecure_channel(addr)
        self.inf = pb_grpc.InferenceStub(self.channel)
        self.health = hpb_grpc.HealthStub(self.channel)

    def request(self, prompt, n):
        return self.pb.GenerateRequest(text=prompt, max_new_tokens=n, ignore_eos=True)

    def status(self):
        return self.health.Check(self.hpb.HealthCheckRequest(service=""), timeout=10).status

    def code_of(self, fn):
        try:
            fn()
        except self.grpc.RpcError as e:
            return e.code()
        return self.grpc.StatusCode.OK


class Job:
    """One submission of the sbatch script: infernode serve on free ports of 127.0.0.1."""

    LISTEN = re.compile(r"listening on [^ ]*:(\d+) .*metrics (?:on [^ ]*:(\d+)|off)")

    def __init__(self, cluster, a, name, launch, sbatch_args=()):
        self.cluster, self.name = cluster, name
        self.out = os.path.join(cluster.dir, "jobs", f"{name}.out")
        args = ["-o", self.out, "--job-name", f"ifn-{name}", "--nodes=1", "--ntasks-per-node=2",
                "--ntasks-per-socket=2", "--cpus-per-task=1", "--time=15"]
        if cluster.cpus < 2:
            args.append("--overcommit")
        args += list(sbatch_args) + [a.sbatch, "-m", a.model, "--host", "127.0.0.1", "--port", "0",
                                     "--metrics-port", "0", "--http-port", "0"]
        env = {"INFERNODE_DIR": a.repo, "INFERNODE_BINARY": a.infernode, "INFERNODE_LAUNCH": launch,
               "INFERNODE_DRAIN_SECONDS": str(DRAIN_SECONDS)}
        if launch == "mpirun":
            # Both ranks share this machine's one socket: mpirun's --bind-to socket leaves each
            # on every CPU, and OMP_PROC_BIND=close would then put both threads on CPU 0. (srun
            # gives each task its own CPU through task/affinity.)
            env["OMP_PROC_BIND"] = "false"
        self.t_submit = time.time()
        self.id = cluster.submit(args, env)
        print(f"[{name}] job {self.id} submitted ({launch})", flush=True)

    def log(self):
        try:
            with open(self.out, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_serving(self, grpc, stubs):
        """The job's address once health says SERVING; None (and a failure) otherwise."""
        end = time.time() + SERVING_TIMEOUT
        client = None
        while time.time() < end:
            state = self.cluster.state(self.id)
            if state is None:
                check(False, f"[{self.name}] the job ended before serving:\n{self.log()}")
                return None
            m = self.LISTEN.search(self.log())
            if m and client is None:
                client = Client(grpc, stubs, f"127.0.0.1:{m.group(1)}")
            if client is not None:
                try:
                    if client.status() == client.hpb.HealthCheckResponse.SERVING:
                        print(f"[{self.name}] SERVING {time.time() - self.t_submit:.1f} s after sbatch", flush=True)
                        return client
                except grpc.RpcError:
                    pass
            time.sleep(0.25)
        check(False, f"[{self.name}] not SERVING within {SERVING_TIMEOUT} s (state {self.cluster.state(self.id)}):\n"
              f"{self.log()}\n{self.cluster.logs()}")
        return None

    def wait_gone(self, timeout):
        t0 = time.time()
        gone = self.cluster.wait_gone(self.id, timeout)
        check(gone, f"[{self.name}] still in the queue {timeout} s later:\n{self.log()}")
        return time.time() - t0

    def check_output(self, trigger):
        """The batch script's and the server's own account of a drain ending in exit 0."""
        log = self.log()
        ok = check(f"infernode.sbatch: signal {trigger}" in log, f"[{self.name}] the batch script saw {trigger}")
        ok &= check("rank 0 of 2:" in log, f"[{self.name}] two ranks")
        m = re.search(r"infernode: signal \d+: draining (\d+) requests", log)
        ok &= check(m is not None and int(m.group(1)) >= 1, f"[{self.name}] the server drained a request in flight")
        ok &= check("drain time over" not in log, f"[{self.name}] the drain ended before --drain-seconds")
        ok &= check("infernode: stopped" in log, f"[{self.name}] rank 0 stopped every rank")
        ok &= check("infernode.sbatch: launcher exit status 0" in log, f"[{self.name}] launcher exit status 0")
        if not ok:
            print(f"--- {self.out} ---\n{log}", flush=True)


def next_status(watch, grpc):
    """The next status a health watcher is told, or the error that ended the watch."""
    try:
        return next(watch).status
    except grpc.RpcError as e:
        return e.code()
    except StopIteration:
        return "end of the watch"


def measured_tokens(c):
    """Tokens for a stream of about STREAM_SECONDS at the rate this machine gives right now."""
    t = time.time()
    r = c.inf.Generate(c.request("def add(a, b):\n    return", 64), timeout=120)
    rate = len(r.token_ids) / max(time.time() - t, 1e-3)
    return max(64, min(3000, int(rate * STREAM_SECONDS))), rate


def scancel_drain(cluster, a, grpc, stubs, launch):
    """A plain `scancel JOBID` with a stream in flight drains the server."""
    name = f"scancel-{launch}"
    job = Job(cluster, a, name, launch)
    try:
        c = job.wait_serving(grpc, stubs)
        if c is None:
            return
        r = c.inf.Generate(c.request("def fibonacci(n):\n    ", 16), timeout=120)
        check(len(r.token_ids) == 16 and r.finish_reason == c.pb.FINISH_REASON_LENGTH,
              f"[{name}] Generate answered: {len(r.token_ids)} tokens, finish_reason {r.finish_reason}")
        n, rate = measured_tokens(c)
        print(f"[{name}] {rate:.0f} tokens/s: a stream of {n} tokens", flush=True)

        hpb = c.hpb
        watch = c.health.Watch(hpb.HealthCheckRequest(service=""), timeout=KILL_WAIT + 60)
        check(next_status(watch, grpc) == hpb.HealthCheckResponse.SERVING, f"[{name}] watch starts SERVING")
        got, result, first = [], {}, threading.Event()

        def stream():
            try:
                for msg in c.inf.GenerateStream(c.request("import os\n", n), timeout=KILL_WAIT + 60):
                    got.extend(msg.token_ids)
                    result["last"] = msg
                    first.set()
            except grpc.RpcError as e:
                result["error"] = f"{e.code()} {e.details()}"
            first.set()

        t = threading.Thread(target=stream)
        t.start()
        first.wait(60)
        t_cancel = time.time()
        cluster.run(["scancel", job.id])
        in_flight = t.is_alive() and len(got) < n
        print(f"[{name}] scancel {job.id} with {len(got)} of {n} tokens streamed", flush=True)
        check(in_flight, f"[{name}] the stream was still running when scancel returned ({len(got)} of {n})")
        status = next_status(watch, grpc)
        check(status == hpb.HealthCheckResponse.NOT_SERVING, f"[{name}] watch sees NOT_SERVING after scancel: {status}")
        print(f"[{name}] NOT_SERVING {time.time() - t_cancel:.1f} s after scancel", flush=True)
        still_streaming = t.is_alive()
        code = c.code_of(lambda: c.inf.Generate(c.request("x", 4), timeout=30))
        check(code == grpc.StatusCode.UNAVAILABLE, f"[{name}] new call while draining: {code}")
        t.join(DRAIN_SECONDS + 30)
        last = result.get("last")
        check("error" not in result and len(got) == n and last is not None
              and last.finish_reason == c.pb.FINISH_REASON_LENGTH,
              f"[{name}] the stream in flight finished whole: {len(got)} of {n} tokens, {result.get('error')}")
        print(f"[{name}] stream done {time.time() - t_cancel:.1f} s after scancel "
              f"(a new call was refused {'during' if still_streaming else 'after'} it)", flush=True)
        gone = job.wait_gone(KILL_WAIT + 60)
        print(f"[{name}] job gone {time.time() - t_cancel:.1f} s after scancel (waited {gone:.1f} s more); "
              f"Slurm's record: {job.cluster.job(job.id).get('JobState')}", flush=True)
        check(time.time() - t_cancel < KILL_WAIT, f"[{name}] the job ended before KillWait ({KILL_WAIT} s)")
        job.check_output("TERM")
        c.channel.close()
    finally:
        cluster.run(["scancel", "--signal=KILL", "--full", job.id], check=False)


def time_limit_drain(cluster, a, grpc, stubs):
    """--time=2 --signal=B:TERM@60: Slurm warns the batch shell 30-60 s after the start, the
    server drains, the job COMPLETES with exit code 0 before its limit."""
    name = "time-limit"
    job = Job(cluster, a, name, "srun", ["--time=2", "--signal=B:TERM@60"])
    try:
        c = job.wait_serving(grpc, stubs)
        if c is None:
            return
        n, rate = measured_tokens(c)
        n = max(32, n // 2)
        print(f"[{name}] {rate:.0f} tokens/s: streams of {n} tokens, two at a time", flush=True)
        hpb = c.hpb
        watch = c.health.Watch(hpb.HealthCheckRequest(service=""), timeout=300)
        check(next_status(watch, grpc) == hpb.HealthCheckResponse.SERVING, f"[{name}] watch starts SERVING")
        results, stop = [], threading.Event()
        # A new call is refused with UNAVAILABLE while the server drains and once it is gone;
        # one that reaches it in the instant its gRPC server shuts down is CANCELLED.
        refusals = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

        def loop():
            while not stop.is_set():
                ids, last = [], None
                try:
                    for msg in c.inf.GenerateStream(c.request("class Stack:\n", n), timeout=300):
                        ids.extend(msg.token_ids)
                        last = msg
                    results.append(("ok", len(ids), last.finish_reason if last else None))
                except grpc.RpcError as e:
                    results.append((e.code(), len(ids), e.details()))
                    if e.code() in refusals:
                        return

        threads = [threading.Thread(target=loop) for _ in range(2)]
        for t in threads:
            t.start()
        status = next_status(watch, grpc)
        t_drain = time.time()
        check(status == hpb.HealthCheckResponse.NOT_SERVING, f"[{name}] watch sees NOT_SERVING: {status}")
        print(f"[{name}] NOT_SERVING {t_drain - job.t_submit:.1f} s after sbatch", flush=True)
        job.wait_gone(150)
        stop.set()
        for t in threads:
            t.join(60)
        info = cluster.job(job.id)
        print(f"[{name}] job gone {time.time() - t_drain:.1f} s after the drain began: JobState={info.get('JobState')} "
              f"ExitCode={info.get('ExitCode')} RunTime={info.get('RunTime')} TimeLimit={info.get('TimeLimit')}",
              flush=True)
        whole = [r for r in results if r[0] == "ok"]
        refused = [r for r in results if r[0] in refusals]
        other = [r for r in results if r[0] != "ok" and r[0] not in refusals]
        print(f"[{name}] streams: {len(whole)} whole, {len(refused)} refused "
              f"({', '.join(str(r[0]) for r in refused)})", flush=True)
        check(whole and all(r[1] == n and r[2] == c.pb.FINISH_REASON_LENGTH for r in whole),
              f"[{name}] every stream that was served finished whole: {whole}")
        check(not other, f"[{name}] no stream failed otherwise: {other}")
        check(all(r[1] == 0 for r in refused), f"[{name}] a refused stream got no tokens: {refused}")
        check(info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0",
              f"[{name}] the job COMPLETED with ExitCode 0:0: {info.get('JobState')} {info.get('ExitCode')}")
        run_time = info.get("RunTime", "")
        check(re.fullmatch(r"00:0[01]:\d\d", run_time) is not None,
              f"[{name}] the job ended before its 2-minute limit: RunTime={run_time}")
        job.check_output("TERM")
        c.channel.close()
    finally:
        cluster.run(["scancel", "--signal=KILL", "--full", job.id], check=False)


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--infernode", "--model", "--sbatch", "--repo", "--proto-dir", "--grpc-proto"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs, job outputs)")
    a = ap.parse_args()

    missing = slurm_cluster.missing_tools()
    if missing:
        skip_or_fail(f"the Slurm test needs Debian's slurm-wlm and munge packages (missing: {', '.join(missing)}); "
                     "deploy/install-deps.sh installs them")
    if os.geteuid() != 0:
        skip_or_fail("the Slurm test starts slurmd, which must run as root")

    import grpc
    from grpc_stubs import compile_stubs
    stubs_dir = tempfile.mkdtemp(prefix="ifn_stubs_")
    stubs = compile_stubs(stubs_dir, a.grpc_proto, a.proto_dir)
    shutil.rmtree(stubs_dir)                 # imported already

    t0 = time.time()
    cluster = slurm_cluster.Cluster(kill_wait=KILL_WAIT, keep=a.keep)
    try:
        print(f"cluster up in {time.time() - t0:.1f} s: node {cluster.node}, {cluster.cpus} CPUs, {cluster.dir}",
              flush=True)
        for launch in ("srun", "mpirun"):
            scancel_drain(cluster, a, grpc, stubs, launch)
            print(f"scancel ({launch}): done ({time.time() - t0:.1f} s)", flush=True)
        time_limit_drain(cluster, a, grpc, stubs)
        print(f"time limit: done ({time.time() - t0:.1f} s)", flush=True)
    except Exception:
        print(cluster.logs(), flush=True)
        raise
    finally:
        if FAILURES:
            print(cluster.logs(), flush=True)
        cluster.stop()
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)", flush=True)
        sys.exit(1)
    print(f"slurm: all passed ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
