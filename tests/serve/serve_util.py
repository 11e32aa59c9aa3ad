"""Running `infernode serve` under a real mpirun and talking to it with Debian's grpcio.

The client stubs are compiled at run time from the project's proto/infernode.proto and the
standard grpc/health/v1/health.proto with grpc_tools, so the test client shares no code with
the server."""
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))
sys.path.insert(0, os.path.join(HERE, ".."))
import mpi_util  # noqa: E402
from grpc_stubs import compile_stubs  # noqa: E402
from run_failures import rank_pids  # noqa: E402

def load_stubs(proto_dir, grpc_proto_dir):
    """(pb2, pb2_grpc, health_pb2, health_pb2_grpc) for the tests."""
    return compile_stubs(tempfile.mkdtemp(prefix="ifn_stubs_"), grpc_proto_dir, proto_dir)


class Server:
    """mpirun -np N infernode serve ... on free ports; stderr collected in the background."""

    LISTEN = re.compile(r"listening on [^ ]*:(\d+) .*metrics (?:on [^ ]*:(\d+)|off)")
    HTTP = re.compile(r", http on [^ ]*:(\d+),")

    def __init__(self, infernode, model, np_=2, args=(), wait_serving=True, env=None):
        cmd = mpi_util.mpirun_cmd(np_, [infernode, "serve", "-m", model, "--port", "0", "--metrics-port", "0",
                                        "--http-port", "0"] + list(args))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=env, start_new_session=True)
        self.np = np_
        self.lines = []
        self.port = self.metrics_port = self.http_port = None
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(60):
            self.kill()
            raise RuntimeError("the server did not start listening:\n" + self.log())
        self.addr = f"127.0.0.1:{self.port}"
        if wait_serving:
            self.wait_line("serving ", 120)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = self.LISTEN.search(line)
            if m and not self._listening.is_set():
                self.port = int(m.group(1))
                self.metrics_port = int(m.group(2)) if m.group(2) else None
                h = self.HTTP.search(line)
                self.http_port = int(h.group(1)) if h else None
                self._listening.set()
        self._listening.set()

    def log(self):
        return "".join(self.lines)

    def wait_line(self, text, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"no '{text}' from the server:\n" + self.log())

    def rank0_pid(self):
        return rank_pids(self.proc.pid, self.np)[0]

    def metrics(self):
        """{name{labels}: value} from /metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def rss_kib(pid):
    """A process's resident set (VmRSS) in KiB, 0 if unknown."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
