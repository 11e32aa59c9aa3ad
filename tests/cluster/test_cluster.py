#!/usr/bin/python3
"""infernode on several hosts: network namespaces on a private subnet stand in for machines.

A head namespace holds a bridge (10.231.0.1/24) and runs deploy/launch.sh --hostfile, hence
mpirun, and no rank; each host namespace h1, h2, h3 has a veth on the bridge (10.231.0.11,
.12, .13), loopback, its own hostname (UTS namespace), one CPU of this machine (taskset, so
that ranks of two "machines" do not both pin to CPU 0) and /etc/netns/NS/hosts naming them all.
mpirun starts its daemons through an rsh agent written here, which enters the host's namespace
(`ip netns exec`) the way ssh would log in; Open MPI talks TCP only, on the bridge's subnet
(--if 10.231.0.0/24, --mca btl tcp,self). The root namespace's network is never touched, and
the subnet exists only inside the namespaces, so runs at the same time do not collide.

Cases (one job each; --case NAME):
  serve          serve on h1+h2 answers greedy Generate with the same token ids as a 1-rank
                 serve of the same model; SIGTERM to the launcher drains and exits 0
  generate3      generate on h1+h2+h3 prints the same ids as one process
  link_down      streams in flight, then `ip link set eth0 down` on h2: the streams get
                 UNAVAILABLE naming rank 1, health turns NOT_SERVING before the job ends, and
                 the launcher exits non-zero within 10 s of the link going down
  rank_killed    SIGKILL to the rank in h2: the job exits non-zero and the streams get
                 UNAVAILABLE, within 10 s
  model_mismatch h2's rank sees another model file at the same path (the agent starts it in a
                 private mount namespace with the file bind-mounted over): the job refuses
                 at start naming rank 1, exits non-zero, and never serves

Needs root, iproute2 (`ip netns`, veth, bridge) and util-linux's unshare; without them the
test skips (exit 77), unless CI=true, where it fails. Namespaces, /etc/netns entries and every
process in the namespaces are removed afterwards, also after a failure, and leftovers of runs
that died (their pid in the name no longer alive) at start.

usage: test_cluster.py --case NAME --infernode BIN --launcher deploy/launch.sh --model GGUF
       --other-model GGUF --proto-dir DIR --grpc-proto DIR"""
import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

PREFIX = "ifnc"                     # namespaces: ifnc<pid>-head, ifnc<pid>-h1, ...
SUBNET = "10.231.0.0/24"
HEAD_IP = "10.231.0.1"
HOST_IPS = {"h1": "10.231.0.11", "h2": "10.231.0.12", "h3": "10.231.0.13"}
CASES = ("serve", "generate3", "link_down", "rank_killed", "model_mismatch")
DETECT_BOUND = 10.0                 # seconds: the acceptance bound for failures
SKIP = 77


def ci():
    return os.environ.get("CI") == "true"


def sh(*cmd, check=True, timeout=20, **kw):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=timeout, **kw)


class NoSupport(Exception):
    pass


# --- the namespaces (root namespace side) --------------------------------------------------

class Cluster:
    """A head namespace with a bridge and n host namespaces wired to it."""

    def __init__(self, prefix, hosts):
        self.prefix = prefix
        self.hosts = list(hosts)
        self.head = f"{prefix}-head"
        self.made = []

    def ns(self, host):
        return f"{self.prefix}-{host}"

    def create(self):
        try:
            self._add(self.head)
        except subprocess.CalledProcessError as e:
            raise NoSupport(f"cannot create a network namespace: {e.stderr.strip()}")
        ip = ["ip", "-n", self.head]
        sh(*ip, "link", "set", "lo", "up")
        try:
            sh(*ip, "link", "add", "br0", "type", "bridge")
        except subprocess.CalledProcessError as e:
            raise NoSupport(f"cannot create a bridge in a namespace: {e.stderr.strip()}")
        sh(*ip, "addr", "add", f"{HEAD_IP}/24", "dev", "br0")
        sh(*ip, "link", "set", "br0", "up")
        for i, h in enumerate(self.hosts, 1):
            ns = self.ns(h)
            self._add(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # Interface names live inside the namespaces, so they cannot clash with anyone's.
            try:
                sh(*ip, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            except subprocess.CalledProcessError as e:
                raise NoSupport(f"cannot create a veth pair: {e.stderr.strip()}")
            sh(*ip, "link", "set", f"v{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{HOST_IPS[h]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        hosts = "127.0.0.1 localhost\n" + f"{HEAD_IP} head\n" + "".join(f"{ip} {h}\n" for h, ip in HOST_IPS.items())
        for ns in [self.head] + [self.ns(h) for h in self.hosts]:
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(hosts)

    def _add(self, ns):
        sh("ip", "netns", "add", ns)
        self.made.append(ns)

    def destroy(self):
        for ns in reversed(self.made):
            remove_namespace(ns)
        self.made = []


def remove_namespace(ns):
    """Kills every process in namespace ns (all of them started by this test), deletes it and
    its /etc/netns entry; its veths and bridge go with it."""
    for _ in range(3):
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.2)
    sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def clean_leftovers():
    """Namespaces of earlier runs of this test whose process is gone (a run killed hard)."""
    out = sh("ip", "netns", "list", check=False).stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    if os.path.isdir("/etc/netns"):
        names |= set(os.listdir("/etc/netns"))
    for name in sorted(names):
        m = re.fullmatch(PREFIX + r"(\d+)-\w+", name)
        if m and (int(m.group(1)) == os.getpid() or not os.path.exists(f"/proc/{m.group(1)}")):
            print(f"removing {name}, left by an earlier run")
            remove_namespace(name)
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):    # work folders: ifnc<pid>-<case>-XXXX
        m = re.match(PREFIX + r"(\d+)-[a-z_0-9]+-", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


# --- the rsh agent -------------------------------------------------------------------------

AGENT = r"""#!/bin/sh
# mpirun's rsh agent for the namespace hosts (written by tests/cluster/test_cluster.py):
# "AGENT [options] HOST COMMAND..." runs COMMAND in HOST's network namespace through sh -c, as
# ssh would, with HOST as its hostname and its own CPU (hosts share this machine's CPUs).
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
case "$host" in
%(cases)s
  *) echo "rsh agent: unknown host '$host'" >&2; exit 255 ;;
esac
echo "$host: $*" >> %(log)s
exec ip netns exec "$ns" taskset -c "$cpu" unshare --uts --mount --propagation private \
  sh -c 'hostname "$1" && eval "$2" && exec sh -c "$3"' agent "$name" "$pre" "$*"
"""


def write_agent(path, cluster, log, swap=None):
    """swap: {host: (file, over)}: that host's processes see `file` at path `over`."""
    swap = swap or {}
    cases = []
    cpus = sorted(os.sched_getaffinity(0))
    for i, h in enumerate(cluster.hosts):
        pre = ":"
        if h in swap:
            pre = "mount --bind " + " ".join(shlex.quote(p) for p in swap[h])
        cases.append(f"  {h}|{HOST_IPS[h]}) ns={shlex.quote(cluster.ns(h))} name={h} cpu={cpus[i % len(cpus)]} "
                     f"pre={shlex.quote(pre)} ;;")
    with open(path, "w") as f:
        f.write(AGENT % {"cases": "\n".join(cases), "log": shlex.quote(log)})
    os.chmod(path, 0o755)


# --- outer: set up, run the case inside the head namespace, clean up -----------------------

def hosts_of(case):
    return ["h1", "h2", "h3"] if case == "generate3" else ["h1", "h2"]


def prerequisites():
    if os.geteuid() != 0:
        return "not root: network namespaces need root"
    for tool in ("ip", "unshare", "taskset", "mount"):
        if not shutil.which(tool):
            return f"'{tool}' is not installed (iproute2, util-linux, mount)"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces"
    return None


def skip_or_fail(why):
    if ci():
        print(f"FAIL: {why} (CI=true: a cluster test may not skip)")
        return 1
    print(f"SKIP: {why}")
    return SKIP


def outer(a):
    why = prerequisites()
    if why:
        return skip_or_fail(why)
    clean_leftovers()
    # A SIGTERM (ctest's timeout, a user) still runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    cluster = Cluster(f"{PREFIX}{os.getpid()}", hosts_of(a.case))
    work = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{a.case}-")
    t0 = time.time()
    try:
        try:
            cluster.create()
        except NoSupport as e:
            return skip_or_fail(str(e))
        agent = os.path.join(work, "rsh-agent")
        swap = {"h2": (a.other_model, a.model)} if a.case == "model_mismatch" else None
        write_agent(agent, cluster, os.path.join(work, "agent.log"), swap)
        inner = ["ip", "netns", "exec", cluster.head, sys.executable, os.path.abspath(__file__), "--inner",
                 "--prefix", cluster.prefix, "--agent", agent, "--work", work] + a.argv
        try:
            p = subprocess.run(inner, timeout=a.timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            print(f"FAIL {a.case}: still running after {a.timeout:.0f} s")
            rc = 1
        if rc != 0 and os.path.exists(os.path.join(work, "agent.log")):
            with open(os.path.join(work, "agent.log")) as f:
                print("rsh agent calls:\n" + f.read()[-2000:])
        return rc
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
        print(f"{a.case}: {time.time() - t0:.1f} s in all, namespaces removed")


# --- inner: runs in the head namespace -----------------------------------------------------

class Job:
    """A process whose stderr lines are collected with their times."""

    LISTEN = re.compile(r"listening on [^ ]*:(\d+) ")

    def __init__(self, cmd, env=None):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.start = time.time()
        self.lines = []          # (time, line)
        self.out = []
        self.port = None
        self.end = None
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_err(self):
        for line in self.proc.stderr:
            self.lines.append((time.time(), line))
            m = self.LISTEN.search(line)
            if m and self.port is None:
                self.port = int(m.group(1))

    def _read_out(self):
        for line in self.proc.stdout:
            self.out.append(line)

    def log(self, last=60, since=None):
        """The last lines of stderr; with since, each line with its time relative to it."""
        if since is None:
            return "".join(line for _, line in self.lines[-last:])
        return "".join(f"{t - since:+7.2f}s {line}" for t, line in self.lines[-last:])

    def stdout(self):
        for t in self._threads:
            t.join(5)
        return "".join(self.out)

    def wait_line(self, text, timeout):
        """The time the first line containing text arrived, or None (the job ended, or timeout)."""
        end = time.time() + timeout
        while time.time() < end:
            for t, line in self.lines:
                if text in line:
                    return t
            if self.proc.poll() is not None:
                time.sleep(0.2)
                for t, line in self.lines:
                    if text in line:
                        return t
                return None
            time.sleep(0.02)
        return None

    def wait(self, timeout):
        """Exit status, or None if still running after timeout; records the time it ended."""
        end = time.time() + timeout
        while time.time() < end:
            rc = self.proc.poll()
            if rc is not None:
                if self.end is None:
                    self.end = time.time()
                return rc
            time.sleep(0.02)
        return None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


class Client:
    def __init__(self, grpc, stubs, addr):
        self.grpc = grpc
        self.pb, pb_grpc, self.hpb, hpb_grpc = stubs
        # No proxy: the address exists only inside these namespaces.
        self.channel = grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])
        self.inf = pb_grpc.InferenceStub(self.channel)
        self.health = hpb_grpc.HealthStub(self.channel)

    def request(self, prompt, n):
        return self.pb.GenerateRequest(text=prompt, max_new_tokens=n, ignore_eos=True,
                                       sampling=self.pb.SamplingParams(temperature=0.0))

    def generate_ids(self, prompt, n=24):
        return list(self.inf.Generate(self.request(prompt, n), timeout=60).token_ids)

    def status(self):
        return self.health.Check(self.hpb.HealthCheckRequest(service=""), timeout=5).status

    def close(self):
        self.channel.close()


class Stream(threading.Thread):
    """A long greedy GenerateStream; records its first message, its tokens and how it ended."""

    def __init__(self, client, prompt):
        super().__init__(daemon=True)
        self.client, self.prompt = client, prompt
        self.first = threading.Event()
        self.tokens = 0
        self.code = self.details = None
        self.ended = None

    def run(self):
        try:
            for msg in self.client.inf.GenerateStream(self.client.request(self.prompt, 500000), timeout=120):
                self.tokens += len(msg.token_ids)
                self.first.set()
            self.code, self.details = "OK", ""
        except self.client.grpc.RpcError as e:
            self.code, self.details = e.code().name, e.details() or ""
        self.ended = time.time()
        self.first.set()


class HealthWatch(threading.Thread):
    """grpc.health.v1 Watch: every status the server sends, with its time, and how it ended."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.seen = []          # (time, status name)
        self.error = None

    def run(self):
        hpb = self.client.hpb
        try:
            for msg in self.client.health.Watch(hpb.HealthCheckRequest(service=""), timeout=120):
                self.seen.append((time.time(), hpb.HealthCheckResponse.ServingStatus.Name(msg.status)))
        except self.client.grpc.RpcError as e:
            self.error = (time.time(), e.code().name, e.details())

    def first(self, status, after=0.0):
        return next((t for t, s in self.seen if s == status and t >= after), None)


PROMPTS = ["def fibonacci(n):\n    ", "import os\n", "class Stack:\n    def __init__(self):\n", "for i in range(10):"]


class Inner:
    def __init__(self, a):
        self.a = a
        self.problems = []
        self.cluster = Cluster(a.prefix, hosts_of(a.case))

    def check(self, cond, what):
        if not cond:
            self.problems.append(what)
            print(f"FAIL {self.a.case}: {what}", flush=True)
        return cond

    def stubs(self):
        import grpc
        from grpc_stubs import compile_stubs
        d = os.path.join(self.a.work, "stubs")
        os.makedirs(d, exist_ok=True)
        return grpc, compile_stubs(d, self.a.grpc_proto, self.a.proto_dir)

    def launch(self, args, hosts=None):
        """deploy/launch.sh over the namespace hosts, one rank (one slot) each."""
        hosts = hosts or self.cluster.hosts
        hostfile = os.path.join(self.a.work, "hosts.txt")
        with open(hostfile, "w") as f:
            f.write("# the namespace hosts of tests/cluster/test_cluster.py\n")
            f.writelines(f"{h} slots=1\n" for h in hosts)
        cmd = [self.a.launcher, "--hostfile", hostfile, "--if", SUBNET, "--rsh-agent", self.a.agent,
               "--mca", "btl", "tcp,self", "--mca", "mpi_yield_when_idle", "1", "--threads", "1",
               "--binary", self.a.infernode, "--"] + args
        # Ranks on "different machines" share this machine's 2 cores: no busy waiting.
        job = Job(cmd, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        return job

    def serve_args(self):
        return ["serve", "-m", self.a.model, "--host", "0.0.0.0", "--port", "0", "--metrics-port", "-1", "--max-seqs", "4"]

    def start_serving(self, grpc, stubs):
        """A 2-host serve job, serving; (job, client) or (job, None) after reporting why not."""
        job = self.launch(self.serve_args())
        t = job.wait_line("serving ", 120)
        if not self.check(t is not None and job.port, f"the 2-host server did not start serving:\n{job.log()}"):
            return job, None
        print(f"2 hosts serving {t - job.start:.1f} s after launch.sh started")
        return job, Client(grpc, stubs, f"{HOST_IPS['h1']}:{job.port}")

    def stop(self, job, timeout=30):
        """SIGTERM to the launcher (a graceful drain); its exit status, or None."""
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
        rc = job.wait(timeout)
        if rc is None:
            job.kill()
        return rc

    # --- cases ---

    def case_serve(self):
        grpc, stubs = self.stubs()
        ref = Job([self.a.infernode, "serve", "-m", self.a.model, "--host", "127.0.0.1", "--port", "0",
                   "--metrics-port", "-1", "--threads", "1"])
        try:
            if not self.check(ref.wait_line("serving ", 60) and ref.port, f"1-rank serve did not start:\n{ref.log()}"):
                return
            c = Client(grpc, stubs, f"127.0.0.1:{ref.port}")
            want = {p: c.generate_ids(p) for p in PROMPTS}
            c.close()
        finally:
            self.stop(ref)
        job, c = self.start_serving(grpc, stubs)
        try:
            if not c:
                return
            t0 = time.time()
            got = {p: c.generate_ids(p) for p in PROMPTS}
            dt = time.time() - t0
            for p in PROMPTS:
                self.check(got[p] == want[p], f"2 hosts gave {got[p]} for {p!r}, 1 rank {want[p]}")
            if got == want:
                print(f"ok   2 hosts = 1 rank: {len(PROMPTS)} greedy requests of 24 tokens ({dt:.2f} s), "
                      f"e.g. {got[PROMPTS[0]][:8]}...")
            c.close()
            t0 = time.time()
            rc = self.stop(job)
            self.check(rc == 0, f"SIGTERM to the launcher: exit {rc}, not 0 after a drain:\n{job.log()}")
            self.check(any("stopped" in line for _, line in job.lines), "rank 0 did not say 'stopped'")
            if rc == 0:
                print(f"ok   SIGTERM to launch.sh: drained, exit 0 in {time.time() - t0:.2f} s")
        finally:
            job.kill()

    def case_generate3(self):
        gen = ["generate", "-m", self.a.model, "-p", "def fibonacci(n):", "-n", "24", "--temp", "0", "--ids"]
        one = subprocess.run([self.a.infernode] + gen + ["-t", "1"], capture_output=True, text=True, timeout=60)
        if not self.check(one.returncode == 0, f"1 process: exit {one.returncode}: {one.stderr[-500:]}"):
            return
        job = self.launch(gen)
        rc = job.wait(120)
        if rc is None:
            job.kill()
        out = job.stdout()
        self.check(rc == 0 and out == one.stdout, f"3 hosts: exit {rc}, ids {out.strip()!r}, one process "
                   f"{one.stdout.strip()!r}:\n{job.log()}")
        if rc == 0 and out == one.stdout:
            print(f"ok   3 hosts = 1 process in {job.end - job.start:.1f} s: {out.strip()[:60]}...")

    def in_flight(self, client, n=3):
        watch = HealthWatch(client)
        watch.start()
        streams = [Stream(client, p) for p in PROMPTS[:n]]
        for s in streams:
            s.start()
        for s in streams:
            s.first.wait(30)
        ok = all(s.tokens > 0 and s.code is None for s in streams)
        self.check(ok, "streams did not start: " + ", ".join(f"{s.tokens} tokens {s.code} {s.details}" for s in streams))
        return watch, streams, ok

    def after_failure(self, job, t0, streams, watch, what, stream_message=None):
        """The job must end non-zero and the streams with UNAVAILABLE, within DETECT_BOUND of t0."""
        rc = job.wait(DETECT_BOUND + 20)
        t_exit = job.end
        for s in streams:
            s.join(max(0.1, t0 + DETECT_BOUND + 25 - time.time()))
        if rc is None:
            self.check(False, f"{what}: the job still runs {time.time() - t0:.0f} s later")
        else:
            self.check(rc != 0, f"{what}: the job exited 0")
            self.check(t_exit - t0 <= DETECT_BOUND, f"{what}: the job took {t_exit - t0:.1f} s to exit "
                       f"(bound {DETECT_BOUND:.0f} s)")
        for i, s in enumerate(streams):
            if s.ended is None:
                self.check(False, f"{what}: stream {i} still open {time.time() - t0:.0f} s later ({s.tokens} tokens)")
                continue
            self.check(s.code == "UNAVAILABLE", f"{what}: stream {i} ended {s.code}: {s.details!r}")
            self.check(s.ended - t0 <= DETECT_BOUND, f"{what}: stream {i} ended {s.ended - t0:.1f} s later")
            if stream_message:
                self.check(stream_message in s.details, f"{what}: stream {i}'s message does not name "
                           f"{stream_message!r}: {s.details!r}")
        ended = [s.ended - t0 for s in streams if s.ended]
        print(f"{what}: job exit {rc} at {'%.2f s' % (t_exit - t0) if t_exit else 'never'}; streams ended at "
              f"{', '.join('%.2f s' % e for e in ended) or 'never'}: "
              f"{sorted(set((s.code, s.details) for s in streams if s.ended))}")
        print(f"job log, times from the {what}:\n" + job.log(25, since=t0))
        return rc, t_exit

    @contextlib.contextmanager
    def streaming(self):
        """A 2-host serve with streams in flight and a health watch: (job, watch, streams), or
        None when it did not get that far (already reported). The job is killed on exit."""
        grpc, stubs = self.stubs()
        job, c = self.start_serving(grpc, stubs)
        try:
            watch, streams, ok = self.in_flight(c) if c else (None, None, False)
            yield (job, watch, streams) if ok else None
        finally:
            job.kill()

    def case_link_down(self):
        with self.streaming() as serving:
            if not serving:
                return
            job, watch, streams = serving
            self.check(watch.first("SERVING") is not None, f"health Watch did not say SERVING: {watch.seen}")
            t0 = time.time()
            sh("ip", "-n", self.cluster.ns("h2"), "link", "set", "eth0", "down")
            print(f"link of h2 (rank 1) down with {[s.tokens for s in streams]} tokens streamed")
            rc, t_exit = self.after_failure(job, t0, streams, watch, "link down", stream_message="rank 1")
            t_ns = watch.first("NOT_SERVING", after=t0)
            watch.join(2)
            print(f"link down: health {watch.seen[-3:] and [(s, round(t - t0, 2)) for t, s in watch.seen]}, "
                  f"watch ended {watch.error and (watch.error[1], round(watch.error[0] - t0, 2))}")
            self.check(t_ns is not None, "link down: health never said NOT_SERVING")
            if t_ns is not None and t_exit is not None:
                self.check(t_ns <= t_exit, f"link down: NOT_SERVING at {t_ns - t0:.2f} s, after the job ended "
                           f"({t_exit - t0:.2f} s)")

    def case_rank_killed(self):
        with self.streaming() as serving:
            if not serving:
                return
            job, watch, streams = serving
            pid = rank_pid(self.cluster.ns("h2"), self.a.infernode)
            if not self.check(pid, "no infernode process in h2's namespace"):
                return
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            print(f"rank 1 (pid {pid} in h2) killed with {[s.tokens for s in streams]} tokens streamed")
            self.after_failure(job, t0, streams, watch, "rank killed")

    def case_model_mismatch(self):
        grpc, stubs = self.stubs()
        job = self.launch(self.serve_args())
        served = None
        try:
            c = None
            end = time.time() + 90
            while time.time() < end and job.proc.poll() is None:
                if job.port and c is None:
                    c = Client(grpc, stubs, f"{HOST_IPS['h1']}:{job.port}")
                if c is not None:
                    try:
                        if c.status() == c.hpb.HealthCheckResponse.SERVING:
                            served = "health said SERVING"
                    except grpc.RpcError:
                        pass
                if served is None and any("serving " in line for _, line in job.lines):
                    served = "rank 0 logged 'serving'"
                if served:
                    break
                time.sleep(0.1)
            if served:
                self.check(False, f"rank 1 has a different model, yet the job served ({served})")
                rc = self.stop(job)
            else:
                rc = job.wait(max(1, end - time.time()))
            self.check(rc is not None, "the job still runs 90 s after start")
            self.check(rc != 0, f"the job exited {rc}")
            lines = [line.strip() for _, line in job.lines]
            named = [line for line in lines if "rank 1" in line and re.search(r"model|differ|size", line)]
            self.check(named, "no message names rank 1 and what differs:\n" + "\n".join(lines[-30:]))
            if rc is not None and job.end:
                print(f"model mismatch: exit {rc} {job.end - job.start:.1f} s after launch.sh started; "
                      f"{'message: ' + named[0] if named else 'no message naming rank 1'}")
            if c is not None:
                c.close()
        finally:
            job.kill()


def rank_pid(ns, binary):
    """The infernode process in namespace ns."""
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode()
        except OSError:
            continue
        if os.path.basename(argv0) == os.path.basename(binary):
            return int(pid)
    return None


def inner(a):
    t = Inner(a)
    t0 = time.time()
    getattr(t, "case_" + a.case)()
    print(f"{a.case}: {'FAIL' if t.problems else 'ok'} ({len(t.problems)} problems) in {time.time() - t0:.1f} s")
    return 1 if t.problems else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=CASES)
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--launcher", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--other-model", required=True, help="a different model (for model_mismatch)")
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    ap.add_argument("--timeout", type=float, default=150, help="seconds for the case in all")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    ap.add_argument("--agent", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    a = ap.parse_args(argv)
    a.argv = argv
    for p in ("infernode", "launcher", "model", "other_model"):
        setattr(a, p, os.path.abspath(getattr(a, p)))
    sys.stdout.reconfigure(line_buffering=True)
    return inner(a) if a.inner else outer(a)


if __name__ == "__main__":
    sys.exit(main())
