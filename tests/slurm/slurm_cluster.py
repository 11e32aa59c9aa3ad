"""A private one-node Slurm cluster for a test, from Debian's packages: munged, slurmctld and
slurmd started in the foreground as child processes, everything they write in one temporary
directory, on free ports, with a munge key and socket of their own. Nothing under /etc/munge,
/etc/slurm, /run or /var is read or written, so a system munged or slurmd (if one runs) is
neither used nor disturbed. The clients (sbatch, squeue, scancel, scontrol) find the cluster
through SLURM_CONF in Cluster.env.

Every process of the cluster and of its jobs carries IFN_SLURM_TEST=<its directory> in its
environment; stop() ends the jobs through Slurm, then the daemons, then any process left with
that exact marker (a job step that outlived its slurmd), and nothing else."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DAEMONS = ["munged", "slurmctld", "slurmd"]
CLIENTS = ["munge", "sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun"]
SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"


def which(tool):
    return shutil.which(tool, path=SEARCH_PATH)


def missing_tools():
    """The programs of Debian's slurm-wlm and munge packages that are not installed."""
    return [t for t in DAEMONS + CLIENTS if not which(t)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line():
    """`slurmd -C`'s description of this machine (NodeName=<hostname -s> CPUs=... Sockets...),
    with RealMemory lowered so that the node never looks short of memory."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    fields = dict(f.split("=", 1) for f in line.split())
    fields["RealMemory"] = str(max(1, int(fields.get("RealMemory", "2000")) // 2))
    return fields


class Cluster:
    def __init__(self, kill_wait=30, keep=False):
        self.dir = tempfile.mkdtemp(prefix="ifn_slurm_")
        os.chmod(self.dir, 0o755)            # munged wants every directory above its socket searchable
        self.keep = keep
        self.procs = {}
        self.kill_wait = kill_wait
        for sub, mode in (("key", 0o700), ("run", 0o755), ("state", 0o700), ("spool", 0o755), ("log", 0o755),
                          ("tmp", 0o1777), ("jobs", 0o755)):
            os.mkdir(os.path.join(self.dir, sub), mode)
            os.chmod(os.path.join(self.dir, sub), mode)
        self.socket = os.path.join(self.dir, "run", "munge.socket")
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf, IFN_SLURM_TEST=self.dir,
                        TMPDIR=os.path.join(self.dir, "tmp"), PATH=SEARCH_PATH)
        for var in [v for v in self.env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and v != "SLURM_CONF"]:
            del self.env[var]                # an outer allocation's settings are not ours
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- start -----------------------------------------------------------------------------
    def _spawn(self, name, cmd):
        log = open(os.path.join(self.dir, "log", name + ".out"), "w")
        self.procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        log.close()

    def _wait(self, what, ok, timeout):
        end = time.time() + timeout
        while time.time() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}:\n" + self.logs())
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n" + self.logs())

    def _munge_works(self):
        if not os.path.exists(self.socket):
            return False
        enc = subprocess.run([which("munge"), "-n", "-S", self.socket], capture_output=True, env=self.env)
        return enc.returncode == 0

    def _start(self):
        key = os.path.join(self.dir, "key", "munge.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(128))        # what `mungekey --bits=1024` writes
        os.close(fd)
        self._spawn("munged", [which("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={self.socket}", f"--pid-file={self.dir}/run/munged.pid",
                               f"--seed-file={self.dir}/key/munged.seed", f"--log-file={self.dir}/log/munged.log"])
        self._wait("munged", self._munge_works, 30)

        node = node_line()
        self.node = node["NodeName"]
        self.cpus = int(node.get("CPUs", "1"))
        node["NodeAddr"] = "127.0.0.1"
        d = self.dir
        conf = f"""# written by tests/slurm/slurm_cluster.py
ClusterName=ifntest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
TmpFS={d}/tmp
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=verbose
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
ReturnToService=2
FirstJobId={100 + os.getpid() % 100000}
MinJobAge=3600
KillWait={self.kill_wait}
{" ".join(f"{k}={v}" for k, v in node.items())} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        open(os.path.join(d, "plugstack.conf"), "w").close()
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-f", self.conf])
        self._spawn("slurmd", [which("slurmd"), "-D", "-f", self.conf, "-N", self.node])
        self._wait("the node to be idle", lambda: self.run(["sinfo", "-h", "-n", self.node, "-o", "%t"],
                                                            check=False).strip() == "idle", 90)

    # -- clients ---------------------------------------------------------------------------
    def run(self, cmd, check=True, timeout=60):
        p = subprocess.run([which(cmd[0])] + cmd[1:], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def submit(self, args, env=None):
        """sbatch --parsable ARGS; the job id."""
        e = dict(self.env, **(env or {}))
        p = subprocess.run([which("sbatch"), "--parsable"] + args, capture_output=True, text=True, env=e, timeout=60,
                           cwd=os.path.join(self.dir, "jobs"))
        if p.returncode != 0:
            raise RuntimeError(f"sbatch failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout.strip().split(";")[0]

    def state(self, job):
        """squeue's state of a job still in the queue (PENDING, RUNNING, COMPLETING...), else None."""
        out = self.run(["squeue", "-h", "-j", job, "-o", "%T"], check=False).strip()
        return out or None

    def job(self, job):
        """`scontrol show job` as a dict (JobState, ExitCode, RunTime, ...)."""
        out = self.run(["scontrol", "-o", "show", "job", job], check=False)
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", out))

    def wait_gone(self, job, timeout):
        """Waits until the job has left the queue (completing included); False on timeout."""
        end = time.time() + timeout
        while time.time() < end:
            if self.state(job) is None:
                return True
            time.sleep(0.25)
        return False

    def logs(self):
        text = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"):
            path = os.path.join(self.dir, "log", name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    lines = f.readlines()[-25:]
                text.append(f"--- {name} (last {len(lines)} lines) ---\n" + "".join(lines))
        return "".join(text)

    # -- stop ------------------------------------------------------------------------------
    def _marked_pids(self):
        marker = f"IFN_SLURM_TEST={self.dir}".encode()
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:
                pass
        return pids

    def stop(self):
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", "--full", "--signal=KILL", "--user=root"], check=False, timeout=30)
                self.run(["scancel", "--user=root"], check=False, timeout=30)
                end = time.time() + 30
                while time.time() < end and self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=30).strip():
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pid in self._marked_pids():      # a slurmstepd or a rank that outlived slurmd
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
