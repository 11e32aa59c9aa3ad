#!/usr/bin/python3
"""The Kubernetes deployment, checked without a cluster or a container engine.

  test_k8s_manifest.py --shared-dir DIR [--binary BUILD/infernode] [--manifest FILE]
                       [--containerfile FILE] [--repo DIR]

1. The MPIJob against the MPI Operator's own CRD (DIR/k8s/kubeflow.org_mpijobs.yaml, its
   v2beta1 openAPIV3Schema) with python3-jsonschema, made as strict as `kubectl apply
   --validate=strict`: unknown fields are errors (additionalProperties: false wherever the
   schema lists properties and does not say x-kubernetes-preserve-unknown-fields), int32/int64
   ranges are checked, x-kubernetes-list-type map/set lists must not repeat their keys;
   int-or-string fields are the schema's own anyOf. Then the operator's own validation
   (pkg/apis/kubeflow/validation: cleanPodPolicy, restart policies, replica counts, names)
   after its defaulting, which the CRD alone does not express.
2. The Service against a small strict schema of the fields it uses.
3. What matters for infernode, from a simulation of what mpi-operator v0.8 makes of the MPIJob
   (pod labels, hostfile order, which pod holds rank 0): the Service selects exactly the rank-0
   pod and targets --port / --metrics-port; rank 0 alone has the gRPC readiness probe on
   grpc.health.v1 (port = --port, service one that `infernode serve` registers) and it cannot
   hold up its own DNS name; the launcher runs deploy/launch.sh with --hostfile /etc/mpi/hostfile
   and `serve`, and `launch.sh --dry-run` on the hostfile the operator would write gives one rank
   per slot with OMP_NUM_THREADS = the pod's CPUs; Guaranteed resources with whole CPUs and
   enough memory for the model's shard plus KV; the model volume read-only; non-root; the grace
   period covers --drain-seconds; the workers' sshd matches the image's ssh setup.
4. The Containerfile: bookworm stages, a Release build, a non-root USER in the final stage, only
   runtime packages there and every library the binary needs (readelf -d on --binary, mapped to
   Debian packages with dpkg -S), and every path the manifest names installed by it.
5. Broken variants of both files (wrong types, unknown enum values and fields, a Service that
   reaches every pod, a probe on the workers, ...) must each be rejected, for the right reason.

Prints one line per check and per broken variant, then "N passed, N failed". Exits 0 when all
pass, 1 otherwise, 77 (skip) when the CRD is absent and CI is not "true"."""
import argparse
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml
from jsonschema import Draft7Validator, FormatChecker, ValidationError

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_DEFAULT = os.path.normpath(os.path.join(HERE, "..", ".."))

# ---- what mpi-operator v0.8 does with an MPIJob (pkg/controller/mpi_job_controller.go) -------
LABEL_OPERATOR = "training.kubeflow.org/operator-name"
LABEL_JOB_NAME = "training.kubeflow.org/job-name"
LABEL_JOB_ROLE = "training.kubeflow.org/job-role"
LABEL_REPLICA_INDEX = "training.kubeflow.org/replica-index"
OPERATOR_NAME = "mpi-operator"
HOSTFILE = "/etc/mpi/hostfile"  # the launcher's ConfigMap mount (configMountPath/hostfileName)
# Volumes the operator adds to the pods (configVolumeName: the hostfile, launcher only;
# sshAuthVolume: the job's ssh keys, every pod): a template may mount them by these names.
OPERATOR_VOLUMES = {"Launcher": {"mpi-job-config", "ssh-auth"}, "Worker": {"ssh-auth"}}
LAUNCH_PATH = "/opt/infernode/launch.sh"  # where the Containerfile installs deploy/launch.sh

# ---- infernode ---------------------------------------------------------------------------------
SERVE_DEFAULTS = {"--port": "50051", "--metrics-port": "9090", "--drain-seconds": "30",
                  "--max-seqs": "16", "--kv-type": "f16", "--host": "0.0.0.0"}
SERVE_CTX_CAP = 4096  # --ctx-size default: the model's, at most 4096
# Model shapes the memory check knows, by the start of the file name (lower case).
MODEL_SHAPES = {
    "codellama-34b": dict(layers=48, dim=8192, ffn=22016, heads=64, kv_heads=8, head_dim=128,
                          vocab=32000, ctx=16384),
}
# Bits per weight of a GGUF type named in the file name (Q4_0: 4-bit values + f16 scale per 32).
QUANT_BITS = {"q4_0": 4.5, "q4_1": 5.0, "q8_0": 8.5, "f16": 16.0, "bf16": 16.0, "f32": 32.0}
KV_BYTES = {"f16": 2, "bf16": 2, "f32": 4}
RUNTIME_OVERHEAD = 1 << 30  # step scratch, gRPC, MPI buffers, OpenMP stacks, mpirun
# The runtime stage installs at least these: the binary's libraries, mpirun, ssh both ways.
RUNTIME_PACKAGES = {"openmpi-bin", "libopenmpi3", "libnuma1", "libgomp1", "libprotobuf-c1",
                    "libgrpc29", "libmicrohttpd12", "openssh-client", "openssh-server"}
BASE_IMAGE_PACKAGES = {"libc6"}  # pre-depended on by the essential set: in every Debian image
# Programs the manifest may name that come from packages rather than from the Containerfile.
PACKAGE_PATHS = {"/usr/sbin/sshd": "openssh-server", "/usr/bin/ssh": "openssh-client",
                 "/usr/bin/mpirun": "openmpi-bin"}
ESSENTIAL_PROGRAMS = {"grep", "sh", "bash", "cat", "test", "true", "sleep", "/bin/sh",
                      "/bin/bash", "/usr/bin/grep", "/bin/grep"}

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
IANA_SVC_NAME = r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$"


class Problems(list):
    """Error messages, each prefixed with where it comes from (crd:, operator:, service:,
    check:, containerfile:)."""

    def add(self, source, message):
        self.append(f"{source}: {message}")


# ==== 1. The CRD's schema, as strict as the API server with strict field validation ==========

def kubernetes_schema(node):
    """A copy of a structural schema that jsonschema enforces like the API server: objects that
    list their properties reject others unless x-kubernetes-preserve-unknown-fields;
    x-kubernetes-int-or-string without its anyOf gets one. Other x-kubernetes-* keys stay for
    the validators below (list types) or are ignored (map type, descriptions)."""
    if isinstance(node, list):
        return [kubernetes_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: kubernetes_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = kubernetes_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [kubernetes_schema(x) for x in value]
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out and \
            not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def list_type(validator, value, instance, schema):
    """x-kubernetes-list-type: map (entries unique by x-kubernetes-list-map-keys, a missing key
    taking its schema default, as the API server does) and set (unique items)."""
    if not isinstance(instance, list):
        return
    if value == "set":
        seen = []
        for item in instance:
            if item in seen:
                yield ValidationError(f"duplicate entry {item!r} in a list-type=set list")
            seen.append(item)
    elif value == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = schema.get("items", {}).get("properties", {})
        seen = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(json.dumps(item.get(k, props.get(k, {}).get("default"))) for k in keys)
            if key in seen:
                yield ValidationError(
                    f"duplicate entry for keys {keys} = {[json.loads(k) for k in key]}")
            seen.add(key)


def int_format(bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(instance):
        return not isinstance(instance, int) or isinstance(instance, bool) or lo <= instance <= hi
    return check


KubernetesValidator = jsonschema.validators.extend(Draft7Validator,
                                                   {"x-kubernetes-list-type": list_type})
FORMATS = FormatChecker(formats=())
FORMATS.checks("int32")(int_format(32))
FORMATS.checks("int64")(int_format(64))

METADATA_SCHEMA = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
        "labels": {"type": "object", "propertyNames": {"pattern": LABEL_KEY},
                   "additionalProperties": {"type": "string", "maxLength": 63,
                                            "pattern": LABEL_VALUE}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
# The Service fields this deployment uses or might, strictly (core/v1 ServiceSpec subset).
SERVICE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "v1"}, "kind": {"const": "Service"},
        "metadata": {**METADATA_SCHEMA, "properties": {
            **METADATA_SCHEMA["properties"],
            "name": {"type": "string", "maxLength": 63, "pattern": DNS1035_LABEL}}},
        "spec": {
            "type": "object", "required": ["selector", "ports"], "additionalProperties": False,
            "properties": {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "selector": METADATA_SCHEMA["properties"]["labels"],
                "publishNotReadyAddresses": {"type": "boolean"},
                "sessionAffinity": {"enum": ["None", "ClientIP"]},
                "internalTrafficPolicy": {"enum": ["Cluster", "Local"]},
                "externalTrafficPolicy": {"enum": ["Cluster", "Local"]},
                "ports": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port", "name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "targetPort": {"anyOf": [
                                {"type": "integer", "minimum": 1, "maximum": 65535},
                                {"type": "string", "pattern": IANA_SVC_NAME}]},
                            "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                            "appProtocol": {"type": "string"},
                            "nodePort": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                },
            },
        },
    },
}


def schema_errors(validator, instance, source, problems):
    for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        problems.add(source, f"{path or '.'}: {e.message[:300]}")


def load_crd_validator(crd_path):
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    for version in crd["spec"]["versions"]:
        if version["name"] == "v2beta1":
            schema = kubernetes_schema(version["schema"]["openAPIV3Schema"])
            KubernetesValidator.check_schema(schema)
            return KubernetesValidator(schema, format_checker=FORMATS)
    raise SystemExit(f"FAIL: {crd_path} has no v2beta1 version")


# ==== 1b. mpi-operator's defaulting and validation (pkg/apis/kubeflow/v2beta1/default.go,
#          pkg/apis/kubeflow/validation/validation.go) ====================================

def operator_defaults(job):
    job = copy.deepcopy(job)
    spec = job.setdefault("spec", {})
    spec.setdefault("runPolicy", {}).setdefault("cleanPodPolicy", "None")
    spec.setdefault("slotsPerWorker", 1)
    spec.setdefault("sshAuthMountPath", "/root/.ssh")
    spec.setdefault("mpiImplementation", "OpenMPI")
    spec.setdefault("launcherCreationPolicy", "AtStartup")
    spec.setdefault("runLauncherAsWorker", False)
    specs = spec.get("mpiReplicaSpecs") or {}
    if isinstance(specs.get("Launcher"), dict):
        specs["Launcher"].setdefault("restartPolicy", "OnFailure")
        specs["Launcher"].setdefault("replicas", 1)
    if isinstance(specs.get("Worker"), dict):
        specs["Worker"].setdefault("restartPolicy", "Never")
        specs["Worker"].setdefault("replicas", 0)
    return job


def operator_validate(job, problems):
    spec = job["spec"]
    name = job.get("metadata", {}).get("name", "")
    specs = spec.get("mpiReplicaSpecs") or {}
    workers = specs.get("Worker")
    n = workers.get("replicas", 0) if isinstance(workers, dict) else 0
    last = f"{name}-worker-{max(n, 1) - 1}"
    if len(last) > 63 or not re.match(DNS1035_LABEL, last):
        problems.add("operator", f"metadata.name: pod name {last!r} is not a DNS-1035 label")
    if spec["slotsPerWorker"] < 0:
        problems.add("operator", "spec.slotsPerWorker must be >= 0")
    policy = spec["runPolicy"]
    if policy.get("cleanPodPolicy") not in ("None", "Running", "All"):
        problems.add("operator", f"spec.runPolicy.cleanPodPolicy: {policy.get('cleanPodPolicy')!r}"
                     " not one of None, Running, All")
    for field in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        if policy.get(field) is not None and policy[field] < 0:
            problems.add("operator", f"spec.runPolicy.{field} must be >= 0")
    if policy.get("managedBy") not in (None, "kubeflow.org/mpi-operator", "kueue.x-k8s.io/multikueue"):
        problems.add("operator", f"spec.runPolicy.managedBy: {policy['managedBy']!r} not supported")
    if not spec["sshAuthMountPath"]:
        problems.add("operator", "spec.sshAuthMountPath is required")
    if spec["mpiImplementation"] not in ("OpenMPI", "Intel", "MPICH"):
        problems.add("operator", f"spec.mpiImplementation: {spec['mpiImplementation']!r} not supported")
    for role in specs:
        if role not in ("Launcher", "Worker"):
            problems.add("operator", f"spec.mpiReplicaSpecs.{role}: only Launcher and Worker exist")
    launcher = specs.get("Launcher")
    if not isinstance(launcher, dict):
        problems.add("operator", "spec.mpiReplicaSpecs.Launcher is required")
    for role, rs in (("Launcher", launcher), ("Worker", workers)):
        if not isinstance(rs, dict):
            continue
        if rs.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.add("operator", f"spec.mpiReplicaSpecs.{role}.restartPolicy:"
                         f" {rs.get('restartPolicy')!r} not one of Never, OnFailure")
        if not rs.get("template", {}).get("spec", {}).get("containers"):
            problems.add("operator", f"spec.mpiReplicaSpecs.{role}: no container")
    if isinstance(launcher, dict) and launcher.get("replicas") != 1:
        problems.add("operator", "spec.mpiReplicaSpecs.Launcher.replicas must be 1")
    if isinstance(workers, dict) and workers.get("replicas", 0) <= 0:
        problems.add("operator", "spec.mpiReplicaSpecs.Worker.replicas must be >= 1")


def operator_pods(job):
    """The pods the operator makes, in hostfile order, as dicts: role, hostname, labels,
    template, slots (MPI ranks on it: slotsPerWorker if the hostfile lists it, else 0)."""
    spec = job["spec"]
    name = job["metadata"]["name"]
    as_worker = bool(spec.get("runLauncherAsWorker"))
    slots = spec.get("slotsPerWorker", 1)
    specs = spec["mpiReplicaSpecs"]
    pods = []
    launcher_t = specs["Launcher"]["template"]
    labels = dict(launcher_t.get("metadata", {}).get("labels") or {})
    labels.update({LABEL_OPERATOR: OPERATOR_NAME, LABEL_JOB_NAME: name, LABEL_JOB_ROLE: "launcher"})
    if as_worker:
        labels[LABEL_REPLICA_INDEX] = "0"
    pods.append(dict(role="Launcher", hostname=f"{name}-launcher", labels=labels,
                     template=launcher_t, slots=slots if as_worker else 0))
    worker_rs = specs.get("Worker") or {}
    for i in range(worker_rs.get("replicas", 0)):
        labels = dict(worker_rs["template"].get("metadata", {}).get("labels") or {})
        labels.update({LABEL_OPERATOR: OPERATOR_NAME, LABEL_JOB_NAME: name,
                       LABEL_JOB_ROLE: "worker", LABEL_REPLICA_INDEX: str(i + 1 if as_worker else i)})
        pods.append(dict(role="Worker", hostname=f"{name}-worker-{i}", labels=labels,
                         template=worker_rs["template"], slots=slots))
    return pods


def operator_hostfile(job, pods):
    ns = job["metadata"].get("namespace", "default")
    name = job["metadata"]["name"]
    return "".join(f"{p['hostname']}.{name}.{ns}.svc slots={p['slots']}\n" for p in pods if p["slots"])


# ==== helpers ==================================================================================

def quantity(value):
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes); None if malformed."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?", str(value).strip())
    if not m:
        return None
    scale = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
    return float(m.group(1)) * scale[m.group(2)]


def pod_containers(pod_spec):
    """(name, container) of a pod's init containers and containers."""
    every = (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])
    return [(c.get("name"), c) for c in every]


def env_value(container, name):
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e.get("value")
    return None


def split_launch_argv(argv):
    """(launch.sh options as a dict of lists, infernode argv after --)."""
    takes_value = {"--hostfile", "--np", "--threads", "--if", "--btl-if", "--oob-if",
                   "--rsh-agent", "--env", "--binary"}
    opts, i = {}, 1
    while i < len(argv) and argv[i] != "--":
        a = argv[i]
        if a in takes_value and i + 1 < len(argv):
            opts.setdefault(a, []).append(argv[i + 1])
            i += 2
        elif a == "--mca" and i + 2 < len(argv):
            opts.setdefault(a, []).append(argv[i + 1:i + 3])
            i += 3
        else:
            opts.setdefault(a, []).append(True)
            i += 1
    return opts, (argv[i + 1:] if i < len(argv) else None)


def serve_options(args):
    """infernode serve's argv (after 'serve') as {option: value}; -m becomes --model."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
            i += 1
        elif a.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out["--model" if a == "-m" else "--threads" if a == "-t" else a] = args[i + 1]
            i += 2
        else:
            out[a] = True
            i += 1
    return out


def probe_ports(probe):
    """Ports a probe touches (grpc, tcpSocket, httpGet; exec: a /proc/net/tcp LISTEN grep)."""
    ports = set()
    if not isinstance(probe, dict):
        return ports
    for kind in ("grpc", "tcpSocket", "httpGet"):
        if isinstance(probe.get(kind), dict) and "port" in probe[kind]:
            ports.add(probe[kind]["port"])
    for word in (probe.get("exec") or {}).get("command") or []:
        for hexport in re.findall(r":([0-9A-F]{4}) ", str(word)):
            ports.add(int(hexport, 16))
    return ports


def resolve_port(container, port):
    """A probe's or Service's port (number or container port name) as a number, or None."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


# ==== 4. The Containerfile =====================================================================

def parse_containerfile(text):
    """Stages as [{"from": image, "alias": name, "instructions": [(KEYWORD, args)]}]. Lines
    continued with a backslash are joined; comment lines (also inside a continuation, which
    Docker and Buildah drop) are skipped."""
    stages, current, pending = [], None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            current = {"from": words[0], "alias": alias, "instructions": []}
            stages.append(current)
        elif current is not None:
            current["instructions"].append((keyword, args))
    return stages


def copy_parts(args):
    """COPY/ADD arguments as (flags dict, sources, destination)."""
    if args.startswith("["):
        words = json.loads(args)
    else:
        words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, words[:-1], words[-1] if words else ""


def apt_packages(run_args):
    pkgs = set()
    for m in re.finditer(r"apt-get\s+install\s+([^;&|]*)", run_args):
        for w in m.group(1).split():
            if not w.startswith("-") and re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w):
                pkgs.add(w)
    return pkgs


def image_facts(text, repo, problems):
    """What the final stage installs: paths, packages, user; problems with the file itself."""
    src = "containerfile"
    stages = parse_containerfile(text)
    facts = {"paths": set(), "packages": set(), "uid": None, "user": None, "home": None,
             "entrypoint": None, "cmd": None, "stages": stages}
    if len(stages) < 2:
        problems.add(src, f"{len(stages)} stage(s): expected a build stage and a runtime stage")
        if not stages:
            return facts
    for st in stages:
        if not re.fullmatch(r"(docker\.io/(library/)?)?debian:bookworm(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?",
                            st["from"]):
            problems.add(src, f"FROM {st['from']}: every stage must be Debian 12 (debian:bookworm...)")
    build, final = stages[0], stages[-1]
    build_runs = " ".join(a for k, a in build["instructions"] if k == "RUN")
    if "install-deps.sh" not in build_runs and not apt_packages(build_runs):
        problems.add(src, "the build stage installs no packages (deploy/install-deps.sh or apt-get)")
    if not re.search(r"cmake\b[^&;]*-DCMAKE_BUILD_TYPE=Release", build_runs):
        problems.add(src, "the build stage does not configure cmake with -DCMAKE_BUILD_TYPE=Release")
    copied = set()
    for st in stages:
        for k, a in st["instructions"]:
            if k in ("COPY", "ADD"):
                flags, sources, _ = copy_parts(a)
                if "from" not in flags:
                    for s in sources:
                        copied.add(os.path.normpath(s))
                        if not os.path.exists(os.path.join(repo, s)):
                            problems.add(src, f"{k} {s}: no such file in the repository")
    # Every folder the top-level CMakeLists.txt builds (tests are off in the image) is copied.
    try:
        with open(os.path.join(repo, "CMakeLists.txt")) as f:
            subdirs = re.findall(r"^\s*add_subdirectory\((\w+)\)", f.read(), re.M)
    except OSError:
        subdirs = []
    for d in subdirs:
        if d != "tests" and d not in copied and "." not in copied:
            problems.add(src, f"the build stage does not copy {d}/, which CMakeLists.txt builds")
    aliases = {st["alias"] for st in stages[:-1] if st["alias"]} | {str(i) for i in range(len(stages) - 1)}
    user = None
    for k, a in final["instructions"]:
        if k == "RUN":
            facts["packages"] |= apt_packages(a)
            m = re.search(r"useradd\s+([^;&|]*)", a)
            if m:
                words = m.group(1).split()
                uid = re.search(r"(?:--uid|-u)\s+(\d+)", m.group(1))
                home = re.search(r"(?:--home-dir|-d)\s+(\S+)", m.group(1))
                facts["user"] = words[-1]
                facts["uid"] = int(uid.group(1)) if uid else None
                facts["home"] = home.group(1) if home else f"/home/{words[-1]}"
                if "--create-home" in words or "-m" in words:
                    facts["paths"].add(facts["home"])
            for d in re.findall(r"mkdir\s+-p\s+([^;&|]*)", a):
                facts["paths"] |= {p for p in d.split() if p.startswith("/")}
        elif k in ("COPY", "ADD"):
            flags, sources, dest = copy_parts(a)
            if "from" in flags and flags["from"] not in aliases:
                problems.add(src, f"COPY --from={flags['from']}: no such stage")
            for s in sources:
                facts["paths"].add(os.path.join(dest, os.path.basename(s))
                                   if dest.endswith("/") or len(sources) > 1 else dest)
                if "from" in flags and os.path.basename(s) == "infernode":
                    facts["binary"] = dest
        elif k == "USER":
            user = a.split(":")[0]
        elif k in ("ENTRYPOINT", "CMD"):
            try:
                value = json.loads(a)
            except ValueError:
                value = None
            if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
                problems.add(src, f"{k} {a}: use the exec form (a JSON array), so signals reach the program")
            facts["entrypoint" if k == "ENTRYPOINT" else "cmd"] = value
    if user is None:
        problems.add(src, "the final stage has no USER: it would run as root")
    elif user in ("0", "root"):
        problems.add(src, f"the final stage runs as USER {user}")
    elif user.isdigit():
        facts["uid"] = int(user) if facts["uid"] in (None, int(user)) else facts["uid"]
        if facts["uid"] != int(user):
            problems.add(src, f"USER {user} is not the uid useradd gave {facts['user']}")
    elif user != facts["user"]:
        problems.add(src, f"USER {user}: the final stage creates no such user")
    if user and not user.isdigit() and user != "root":
        problems.add(src, f"USER {user}: give the numeric uid, so that the kubelet can verify runAsNonRoot")
    dev = sorted(p for p in facts["packages"]
                 if p.endswith("-dev") or p in ("build-essential", "cmake", "gcc", "make", "sudo"))
    if dev:
        problems.add(src, f"the runtime stage installs build packages: {' '.join(dev)}")
    missing = sorted(RUNTIME_PACKAGES - facts["packages"])
    if missing:
        problems.add(src, f"the runtime stage does not install {' '.join(missing)}")
    if not facts.get("binary"):
        problems.add(src, "the final stage copies no infernode binary from the build stage")
    if facts["entrypoint"]:
        first = facts["entrypoint"][0]
        if first not in facts["paths"] and first not in PACKAGE_PATHS:
            problems.add(src, f"ENTRYPOINT {first}: not installed by the final stage")
    return facts


def binary_packages(binary, problems):
    """Debian packages that hold the shared libraries the binary names (DT_NEEDED)."""
    out = subprocess.run(["readelf", "-d", "--wide", binary], capture_output=True, text=True)
    if out.returncode != 0:
        problems.add("containerfile", f"readelf -d {binary}: {out.stderr.strip()}")
        return {}
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)
    cache = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    found = {}
    for soname in needed:
        m = re.search(rf"^\s*{re.escape(soname)} \([^)]*x86-64[^)]*\) => (\S+)", cache, re.M)
        if not m:
            problems.add("containerfile", f"{soname} (needed by {binary}) is not in ldconfig's cache")
            continue
        path = os.path.realpath(m.group(1))
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", path.replace("/usr/lib/", "/lib/", 1)],
                                   capture_output=True, text=True)
        if owner.returncode != 0:
            problems.add("containerfile", f"{soname} -> {path}: no Debian package owns it")
            continue
        found[soname] = owner.stdout.split(":")[0].strip()
    return found


def essential(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", pkg],
                         capture_output=True, text=True).stdout.split()
    return out[:1] == ["yes"] or "required" in out


# ==== 3. The checks that matter for infernode ==================================================

def health_services(repo):
    """The health service names `infernode serve` registers (tools/infernode/serve.c)."""
    try:
        with open(os.path.join(repo, "tools", "infernode", "serve.c")) as f:
            names = set(re.findall(r'health_set\([^,]+,\s*"([^"]*)"', f.read()))
    except OSError:
        names = set()
    return names or {""}


def model_memory(model_path, ranks, serve):
    """Bytes a rank needs after load (weights 1/N, the embedding whole, its KV heads, runtime),
    or None with the reason when the model's shape is unknown."""
    base = os.path.basename(str(model_path)).lower()
    shape = next((s for prefix, s in MODEL_SHAPES.items() if base.startswith(prefix)), None)
    quant = next((q for q in sorted(QUANT_BITS, key=len, reverse=True)
                  if re.search(rf"[.\-_]{q}(\.|$)", base)), None)
    if not shape or not quant:
        return None, f"no shape or quantization known for {base}: add it to MODEL_SHAPES/QUANT_BITS"
    s, bits = shape, QUANT_BITS[quant]
    params = s["layers"] * (2 * s["dim"] * s["heads"] * s["head_dim"]
                            + 2 * s["dim"] * s["kv_heads"] * s["head_dim"]
                            + 3 * s["dim"] * s["ffn"]) + 2 * s["vocab"] * s["dim"]
    weights = params * bits / 8 / ranks
    embedding = s["vocab"] * s["dim"] * bits / 8
    ctx = int(serve.get("--ctx-size", min(s["ctx"], SERVE_CTX_CAP)))
    slots = int(serve.get("--kv-slots", serve.get("--max-seqs", SERVE_DEFAULTS["--max-seqs"])))
    kv_heads = -(-s["kv_heads"] // ranks)  # uneven splits: the largest share
    kv = 2 * s["layers"] * kv_heads * s["head_dim"] * \
        KV_BYTES.get(serve.get("--kv-type", "f16"), 2) * ctx * slots
    return weights + embedding + kv + RUNTIME_OVERHEAD, None


def launch_dry_run(repo, argv, hostfile_text, env_vars, problems):
    """Runs the launcher's command with --dry-run on the hostfile the operator would write;
    returns the mpirun argv it prints."""
    launch = os.path.join(repo, "deploy", "launch.sh")
    with tempfile.TemporaryDirectory(prefix="ifn-k8s-") as tmp:
        hostfile = os.path.join(tmp, "hostfile")
        with open(hostfile, "w") as f:
            f.write(hostfile_text)
        args = [hostfile if a == HOSTFILE else a for a in argv[1:]]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "LANG": "C"}
        env.update(env_vars)
        try:
            run = subprocess.run(["bash", launch, "--dry-run"] + args, capture_output=True,
                                 text=True, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            problems.add("check", "launch.sh --dry-run did not finish in 60 s")
            return None
    line = next((ln for ln in run.stderr.splitlines() if ln.startswith("mpirun ")), None)
    if run.returncode != 0 or line is None:
        problems.add("check", f"launch.sh --dry-run with the launcher's arguments failed"
                     f" (exit {run.returncode}): {run.stderr.strip()[-400:]}")
        return None
    return shlex.split(line)


class Deployment:
    """The MPIJob as mpi-operator v0.8 will run it, and infernode's options read from it: the
    context every check below looks at. `ok` is False (with problems added) when the files are
    too broken to go on."""

    def __init__(self, docs, image, repo, problems):
        self.image, self.repo, self.problems, self.ok = image, repo, problems, False
        jobs = [d for d in docs if d.get("kind") == "MPIJob"]
        self.services = [d for d in docs if d.get("kind") == "Service"]
        if len(jobs) != 1 or jobs[0].get("apiVersion") != "kubeflow.org/v2beta1":
            self.fail(f"expected one MPIJob of kubeflow.org/v2beta1, found {len(jobs)}")
            return
        if not self.services:
            self.fail("no Service: clients need one that reaches rank 0")
        self.job = operator_defaults(jobs[0])
        self.spec = self.job["spec"]
        try:
            self.pods = operator_pods(self.job)
            self.templates = {p["role"]: p["template"] for p in self.pods}
            self.containers = {r: t["spec"]["containers"][0] for r, t in self.templates.items()}
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            self.fail(f"cannot read the replica specs: {e!r}")
            return
        self.ranks = sum(p["slots"] for p in self.pods)
        if self.ranks < 1:
            self.fail("the hostfile the operator would write has no slots")
            return
        self.rank0 = next(p for p in self.pods if p["slots"])
        self.rank0_c = self.containers[self.rank0["role"]]
        self.rank_roles = {p["role"] for p in self.pods if p["slots"]}
        self.launcher_c = self.containers["Launcher"]
        self.argv = list(self.launcher_c.get("command") or []) + list(self.launcher_c.get("args") or [])
        if not self.argv or self.argv[0] != LAUNCH_PATH:
            self.fail(f"the launcher's command must start with {LAUNCH_PATH}, not {self.argv[:1]}")
            return
        self.opts, infernode_argv = split_launch_argv(self.argv)
        if not infernode_argv or infernode_argv[0] != "serve":
            self.fail(f"launch.sh must run 'serve' after --, got {infernode_argv}")
            return
        self.serve = {**SERVE_DEFAULTS, **serve_options(infernode_argv[1:])}
        self.port = int(self.serve["--port"])
        self.metrics_port = int(self.serve["--metrics-port"])
        self.drain = float(self.serve["--drain-seconds"])
        self.model = self.serve.get("--model")
        self.cpus = {}
        self.ok = True

    def fail(self, message):
        self.problems.add("check", message)

    def pods_of(self, role):
        return sum(1 for p in self.pods if p["role"] == role)


def check_launcher(d):
    """The launcher runs the image's launch.sh on the operator's hostfile, then `serve`."""
    if d.spec.get("slotsPerWorker") != 1:
        d.fail(f"slotsPerWorker {d.spec.get('slotsPerWorker')}: one rank per pod"
               " (a pod is one socket: its CPUs and memory on one NUMA node)")
    if LAUNCH_PATH not in d.image["paths"]:
        d.fail(f"{LAUNCH_PATH} is not installed by the Containerfile")
    if d.opts.get("--hostfile") != [HOSTFILE]:
        d.fail(f"launch.sh needs --hostfile {HOSTFILE} (the operator's hostfile),"
               f" got {d.opts.get('--hostfile')}")
    binary = (d.opts.get("--binary") or [None])[0]
    if binary != d.image.get("binary"):
        d.fail(f"launch.sh --binary {binary}: the image installs the binary at {d.image.get('binary')}")
    for bad in ("--oversubscribe", "--dry-run"):
        if bad in d.opts:
            d.fail(f"launch.sh {bad} has no place in a deployment")
    if "--np" in d.opts and d.opts["--np"] != [str(d.ranks)]:
        d.fail(f"launch.sh --np {d.opts['--np'][0]} but the hostfile has {d.ranks} slot(s)")
    if d.serve["--host"] not in ("0.0.0.0", "::", "[::]"):
        d.fail(f"serve --host {d.serve['--host']}: the Service reaches the pod's IP, not loopback")
    if not d.model:
        d.fail("serve has no -m MODEL (the default model is the image's small one)")


def check_resources(d):
    """Guaranteed QoS with whole CPUs on every pod that holds a rank; threads = CPUs; memory
    enough for a shard of the model plus its KV share."""
    for role in sorted(d.rank_roles | {"Launcher"}):
        for cname, c in pod_containers(d.templates[role]["spec"]):
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            for kind in ("cpu", "memory"):
                if kind not in lim or quantity(req.get(kind, lim.get(kind))) != quantity(lim[kind]):
                    d.fail(f"{role} container {cname}: {kind} requests must equal limits (Guaranteed QoS:"
                           f" every container, init ones too), got {req.get(kind)} / {lim.get(kind)}")
        if role not in d.rank_roles:
            continue
        lim = (d.containers[role].get("resources") or {}).get("limits") or {}
        cpu = quantity(lim.get("cpu"))
        if not cpu or cpu != int(cpu):
            d.fail(f"{role}: cpu {lim.get('cpu')} must be whole CPUs"
                   " (the static CPU manager gives exclusive CPUs only then)")
            continue
        cpu = d.cpus[role] = int(cpu)
        omp = env_value(d.containers[role], "OMP_NUM_THREADS")
        if omp != str(cpu):
            d.fail(f"{role}: OMP_NUM_THREADS {omp} must equal its CPUs ({cpu})")
        if "--threads" in d.opts and d.opts["--threads"] != [str(cpu)]:
            d.fail(f"launch.sh --threads {d.opts['--threads'][0]} but {role} has {cpu} CPUs")
        if not d.model:
            continue
        need, why = model_memory(d.model, d.ranks, d.serve)
        mem = quantity(lim.get("memory"))
        if need is None:
            d.fail(why)
        elif not mem or mem < need:
            d.fail(f"{role}: memory {lim.get('memory')} is below what a rank needs ({need / (1 << 30):.2f}"
                   f" GiB: shard of {os.path.basename(d.model)} over {d.ranks} ranks, its KV heads, runtime)")
    if len(set(d.cpus.values())) > 1:
        d.fail(f"ranks have different CPU counts {d.cpus}: the slowest sets the pace")


def check_launch_dry_run(d):
    """launch.sh itself, on the hostfile the operator would write: one rank per slot, and the
    pods' CPU count as every rank's OMP_NUM_THREADS."""
    env_vars = {e["name"]: str(e.get("value", "")) for e in d.launcher_c.get("env") or []
                if "name" in e and "valueFrom" not in e}
    mpirun = launch_dry_run(d.repo, d.argv, operator_hostfile(d.job, d.pods), env_vars, d.problems)
    if not mpirun:
        return
    np_ = mpirun[mpirun.index("-np") + 1] if "-np" in mpirun else None
    if np_ != str(d.ranks):
        d.fail(f"launch.sh starts {np_} rank(s) but the operator's hostfile has {d.ranks} slot(s)")
    if "--oversubscribe" in mpirun:
        d.fail("launch.sh oversubscribes on the operator's hostfile")
    omp = None
    for i, w in enumerate(mpirun[:-1]):
        name, eq, value = mpirun[i + 1].partition("=")
        if w == "-x" and name == "OMP_NUM_THREADS":
            omp = value if eq else env_vars.get("OMP_NUM_THREADS")
    want = d.cpus.get(d.rank0["role"])
    if want and omp != str(want):
        d.fail(f"the ranks get OMP_NUM_THREADS={omp} from launch.sh (mpirun -x), not the pods' {want} CPUs")
    binary = (d.opts.get("--binary") or [None])[0]
    if binary and binary not in mpirun:
        d.fail("launch.sh's mpirun line does not run the --binary")


def check_model_volume(d):
    """The model comes read-only from one PersistentVolumeClaim in every pod that loads a shard."""
    claims = set()
    for role in sorted(d.rank_roles):
        if not d.model:
            return
        pod_spec = d.templates[role]["spec"]
        mount = None
        for m in d.containers[role].get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/")
            if mp and str(d.model).startswith(mp + "/"):
                mount = m
        if not mount:
            d.fail(f"{role}: no volume is mounted where the model is ({d.model})")
            continue
        if mount.get("readOnly") is not True:
            d.fail(f"{role}: the model mount {mount['mountPath']} must be readOnly")
        vol = next((v for v in pod_spec.get("volumes") or [] if v.get("name") == mount.get("name")), None)
        pvc = (vol or {}).get("persistentVolumeClaim")
        if not pvc:
            d.fail(f"{role}: the model volume must be a PersistentVolumeClaim")
            continue
        if pvc.get("readOnly") is not True:
            d.fail(f"{role}: the model's persistentVolumeClaim must say readOnly: true")
        claims.add(pvc.get("claimName"))
    if len(claims) > 1:
        d.fail(f"ranks read the model from different claims {sorted(claims)}")


def check_security(d):
    """Non-root, as the image's user, no privilege escalation, one image."""
    for role, t in sorted(d.templates.items()):
        psc = t["spec"].get("securityContext") or {}
        for cname, c in pod_containers(t["spec"]):
            csc = c.get("securityContext") or {}
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                d.fail(f"{role} container {cname}: securityContext.runAsNonRoot must be true")
            if uid is not None and uid != d.image["uid"]:
                d.fail(f"{role} container {cname}: runAsUser {uid} is not the image's user"
                       f" ({d.image['uid']}), whose home holds the ssh keys")
            if csc.get("privileged") or csc.get("allowPrivilegeEscalation", True) is not False:
                d.fail(f"{role} container {cname}: set allowPrivilegeEscalation: false (and not privileged)")
            if c.get("image") != d.launcher_c.get("image"):
                d.fail(f"{role} container {cname}: image {c.get('image')} differs from the launcher's")


def check_programs_and_volumes(d):
    """Every program a container, probe or hook starts is in the image; every volume mounted is
    one the template declares or the operator adds."""
    def program(where, argv):
        if not argv:
            return
        first = argv[0]
        if first.startswith("/"):
            if first not in d.image["paths"] and first not in PACKAGE_PATHS:
                d.fail(f"{where}: {first} is not installed by the Containerfile")
        elif first not in ESSENTIAL_PROGRAMS:
            d.fail(f"{where}: {first} is neither an absolute path nor a program every Debian image has")

    for role, t in sorted(d.templates.items()):
        declared = {v.get("name") for v in t["spec"].get("volumes") or []}
        for cname, c in pod_containers(t["spec"]):
            where = f"{role} container {cname}"
            program(where, list(c.get("command") or []) + list(c.get("args") or []))
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                program(f"{where} {kind}", ((c.get(kind) or {}).get("exec") or {}).get("command"))
            for hook in ("preStop", "postStart"):
                program(f"{where} {hook}", (((c.get("lifecycle") or {}).get(hook) or {}).get("exec")
                                            or {}).get("command"))
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in declared | OPERATOR_VOLUMES.get(role, set()):
                    d.fail(f"{where}: volumeMount {m.get('name')} names no volume of the pod"
                           f" (declared: {sorted(declared)}; the operator adds"
                           f" {sorted(OPERATOR_VOLUMES.get(role, set()))})")


def check_ssh(d):
    """The operator's keys where the image's user and sshd look for them; the workers' sshd and
    the launcher's ssh on one port; workers Ready when sshd listens; their preStop hook."""
    image = d.image
    ssh_dir = d.spec["sshAuthMountPath"].rstrip("/")
    if image["home"] and ssh_dir != image["home"].rstrip("/") + "/.ssh":
        d.fail(f"sshAuthMountPath {ssh_dir}: the image's user ({image['user']}) has its home at"
               f" {image['home']}, where ssh looks for .ssh")
    sshd_port = image.get("sshd_port")
    if image.get("sshd_hostkey") and not image["sshd_hostkey"].startswith(ssh_dir + "/"):
        d.fail(f"sshd_config HostKey {image['sshd_hostkey']} is not in sshAuthMountPath {ssh_dir}")
    if image.get("ssh_client_port") != sshd_port:
        d.fail(f"ssh client port {image.get('ssh_client_port')} != sshd port {sshd_port}")
    if "Worker" not in d.templates:
        return
    wc = d.containers["Worker"]
    wargv = list(wc.get("command") or []) + list(wc.get("args") or [])
    if not wargv or wargv[0] != "/usr/sbin/sshd" or "-f" not in wargv[:-1] or \
            not any(a.startswith("-") and not a.startswith("--") and "D" in a for a in wargv[1:]):
        d.fail(f"workers must run /usr/sbin/sshd -D -f CONFIG in the foreground, got {wargv}")
    elif wargv[wargv.index("-f") + 1] != image.get("sshd_config_path"):
        d.fail(f"sshd -f {wargv[wargv.index('-f') + 1]}: the image installs its sshd_config at"
               f" {image.get('sshd_config_path')}")
    if d.spec.get("launcherCreationPolicy") == "WaitForWorkersReady" and \
            sshd_port not in probe_ports(wc.get("readinessProbe")):
        d.fail("with WaitForWorkersReady the workers' readiness probe should say that sshd listens"
               f" (port {sshd_port})")
    grace = d.templates["Worker"]["spec"].get("terminationGracePeriodSeconds", 30)
    stop = (((wc.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
    if stop:
        if len(stop) > 1 and stop[1].isdigit() and int(stop[1]) > grace - 5:
            d.fail(f"preStop waits up to {stop[1]} s of a {grace} s grace period")
    elif "Worker" in d.rank_roles:
        d.fail("workers have no preStop hook: deleting the job kills their ranks before rank 0 has drained")


def check_drain(d):
    for role in sorted(d.rank_roles | {"Launcher"}):
        grace = d.templates[role]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace < d.drain + 15:
            d.fail(f"{role}: terminationGracePeriodSeconds {grace} < --drain-seconds {d.drain:g} + 15"
                   " (the ranks' stop and mpirun's exit)")


def check_probes(d):
    """A gRPC readiness probe where rank 0 is, and no probe of rank 0's ports anywhere else."""
    registered = health_services(d.repo)
    grpc = (d.rank0_c.get("readinessProbe") or {}).get("grpc")
    if not isinstance(grpc, dict):
        d.fail(f"rank 0 ({d.rank0['role']}) has no gRPC readinessProbe on grpc.health.v1")
    else:
        if resolve_port(d.rank0_c, grpc.get("port")) != d.port:
            d.fail(f"the readiness probe's port {grpc.get('port')} is not serve --port {d.port}")
        if grpc.get("service", "") not in registered:
            d.fail(f"readiness service {grpc.get('service')!r}: infernode serve registers"
                   f" {sorted(registered)}")
    served = {d.port, d.metrics_port}
    for role, c in sorted(d.containers.items()):
        only_rank0 = role == d.rank0["role"] and d.pods_of(role) == 1
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            touched = {resolve_port(c, x) for x in probe_ports(c.get(kind))} & served
            if touched and not only_rank0:
                d.fail(f"{role}: {kind} on port {sorted(touched)}, where only rank 0 listens: the other"
                       " pods of this template never pass")
        if isinstance((c.get("livenessProbe") or {}).get("grpc"), dict) and not c.get("startupProbe"):
            d.fail(f"{role}: a gRPC liveness probe fails for the whole model load (NOT_SERVING) and"
                   " would restart the pod")
    # Pods are named in DNS through the operator's headless Service, which publishes not-Ready
    # pods only with runLauncherAsWorker: a rank-0 pod in the hostfile whose readiness waits
    # for the server would hide its own name from mpirun and never start.
    if isinstance(grpc, dict) and not d.spec.get("runLauncherAsWorker"):
        d.fail(f"rank 0 is {d.rank0['hostname']}, which mpirun reaches by a DNS name the operator"
               " publishes only once the pod is Ready: its gRPC readiness probe waits for itself"
               " (use runLauncherAsWorker: true)")


def check_services(d):
    """Each Service selects the rank-0 pod alone and targets its gRPC and metrics ports."""
    job_meta = d.job["metadata"]
    for svc in d.services:
        name = svc["metadata"].get("name")
        sspec = svc.get("spec") or {}
        if name == job_meta["name"]:
            d.fail(f"Service {name}: the operator makes a headless Service of that name")
        if svc["metadata"].get("namespace", "default") != job_meta.get("namespace", "default"):
            d.fail(f"Service {name} is not in the MPIJob's namespace")
        if sspec.get("publishNotReadyAddresses"):
            d.fail(f"Service {name}: publishNotReadyAddresses sends calls to a loading rank 0")
        selector = sspec.get("selector") or {}
        chosen = [p["hostname"] for p in d.pods
                  if selector and all(p["labels"].get(k) == v for k, v in selector.items())]
        if chosen != [d.rank0["hostname"]]:
            d.fail(f"Service {name} selects {chosen or 'no pod'}; it must select rank 0"
                   f" ({d.rank0['hostname']}) alone")
        targets = {sp.get("name"): resolve_port(d.rank0_c, sp.get("targetPort", sp.get("port")))
                   for sp in sspec.get("ports") or []}
        if d.port not in targets.values():
            d.fail(f"Service {name}: no port targets serve --port {d.port} on rank 0 (got {targets})")
        elif targets.get("grpc") != d.port:
            d.fail(f"Service {name}: the port named grpc targets {targets.get('grpc')}, not {d.port}")
        if d.metrics_port > 0 and d.metrics_port not in targets.values():
            d.fail(f"Service {name}: no port targets --metrics-port {d.metrics_port}")
    declared = {p.get("containerPort") for p in d.rank0_c.get("ports") or []}
    for want in (d.port, d.metrics_port):
        if want > 0 and want not in declared:
            d.fail(f"rank 0's container does not declare containerPort {want}")


def check_deployment(docs, image, repo, problems, dry_run=True):
    d = Deployment(docs, image, repo, problems)
    if not d.ok:
        return
    checks = [check_launcher, check_resources, check_model_volume, check_security,
              check_programs_and_volumes, check_ssh, check_drain, check_probes, check_services]
    if dry_run:
        checks.append(check_launch_dry_run)  # after check_resources, which fills d.cpus
    for check in checks:
        check(d)


def ssh_facts(repo, image, problems):
    """Reads the sshd and ssh client configs the Containerfile installs (from the repository)."""
    final = image["stages"][-1] if image["stages"] else {"instructions": []}
    for k, a in final["instructions"]:
        if k != "COPY":
            continue
        flags, sources, dest = copy_parts(a)
        if "from" in flags:
            continue
        for s in sources:
            target = os.path.join(dest, os.path.basename(s)) if dest.endswith("/") else dest
            if not (os.path.basename(target).startswith("sshd_config") or target.startswith("/etc/ssh/")):
                continue
            try:
                with open(os.path.join(repo, s)) as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            words = [ln.split(None, 1) for ln in text.splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
            conf = {}
            for w in words:
                conf.setdefault(w[0].lower(), w[1].strip() if len(w) > 1 else "")
            if os.path.basename(target).startswith("sshd_config"):
                image["sshd_config_path"] = target
                image["sshd_port"] = int(conf.get("port", 22))
                image["sshd_hostkey"] = conf.get("hostkey")
                if image["sshd_port"] < 1024:
                    problems.add("containerfile",
                                 f"sshd port {image['sshd_port']}: a non-root sshd cannot bind it")
                if conf.get("usepam", "no").lower() == "yes":
                    problems.add("containerfile", "sshd_config: UsePAM yes needs root")
            elif target.startswith("/etc/ssh/ssh_config"):
                image["ssh_client_port"] = int(conf.get("port", 22))


# ==== driver ===================================================================================

def check_all(docs, containerfile_text, crd, repo, binary=None, dry_run=True):
    problems = Problems()
    docs = [d for d in docs if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            problems.add("check", f"a YAML document is not a mapping: {d!r:.80}")
            return problems
    jobs = [d for d in docs if d.get("kind") == "MPIJob"]
    for job in jobs:
        schema_errors(crd, job, "crd", problems)
        schema_errors(Draft7Validator(METADATA_SCHEMA), job.get("metadata"), "crd", problems)
        if not any(p.startswith("crd:") for p in problems):
            operator_validate(operator_defaults(job), problems)
    for svc in (d for d in docs if d.get("kind") == "Service"):
        schema_errors(Draft7Validator(SERVICE_SCHEMA), svc, "service", problems)
    for d in docs:
        if d.get("kind") not in ("MPIJob", "Service"):
            problems.add("check", f"unexpected {d.get('kind')} document")
    image = image_facts(containerfile_text, repo, problems)
    ssh_facts(repo, image, problems)
    if binary:
        owners = binary_packages(binary, problems)
        for soname, pkg in sorted(owners.items()):
            if pkg not in image["packages"] and pkg not in BASE_IMAGE_PACKAGES and not essential(pkg):
                problems.add("containerfile", f"{soname} (needed by the binary) comes from {pkg},"
                             " which the runtime stage does not install")
    if problems:  # the deployment checks assume well-formed objects
        return problems
    check_deployment(docs, image, repo, problems, dry_run=dry_run)
    return problems


def mutations():
    """(name, the stage that must reject it, a regular expression its message must match,
    change to the manifest docs or to the Containerfile text)."""
    def job(d):
        return next(x for x in d if x and x.get("kind") == "MPIJob")

    def svc(d):
        return next(x for x in d if x and x.get("kind") == "Service")

    def tpl(d, role):
        return job(d)["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]

    def ctr(d, role):
        return tpl(d, role)["containers"][0]

    def setp(f):
        def m(d):
            f(d)
            return d
        return m

    def cmd_without_hostfile(d):
        c = ctr(d, "Launcher")
        i = c["command"].index("--hostfile")
        del c["command"][i:i + 2]

    def probe_to_workers(d):
        ctr(d, "Worker")["readinessProbe"] = ctr(d, "Launcher").pop("readinessProbe")

    def worker0_design(d):
        job(d)["spec"]["runLauncherAsWorker"] = False
        probe_to_workers(d)
        svc(d)["spec"]["selector"].update({LABEL_JOB_ROLE: "worker", LABEL_REPLICA_INDEX: "0"})

    def duplicate_port(d):
        ports = ctr(d, "Launcher")["ports"]
        ports.append(dict(ports[0], name="grpc2"))

    docs_m = [
        ("slotsPerWorker as a string", "crd", r"slotsPerWorker.*integer",
         setp(lambda d: job(d)["spec"].update(slotsPerWorker="1"))),
        ("unknown mpiImplementation", "crd", r"mpiImplementation",
         setp(lambda d: job(d)["spec"].update(mpiImplementation="OpenMP"))),
        ("unknown field in the readiness probe", "crd", r"serviceName",
         setp(lambda d: ctr(d, "Launcher")["readinessProbe"]["grpc"].update(serviceName="x"))),
        ("unknown field in spec", "crd", r"slotPerWorker",
         setp(lambda d: job(d)["spec"].update(slotPerWorker=1))),
        ("malformed cpu quantity", "crd", r"cpu",
         setp(lambda d: ctr(d, "Worker")["resources"]["limits"].update(cpu="28 cores"))),
        ("containerPort as a string", "crd", r"containerPort",
         setp(lambda d: ctr(d, "Launcher")["ports"][0].update(containerPort="50051"))),
        ("the same containerPort twice", "crd", r"duplicate", setp(duplicate_port)),
        ("replicas beyond int32", "crd", r"int32",
         setp(lambda d: job(d)["spec"]["mpiReplicaSpecs"]["Worker"].update(replicas=1 << 31))),
        ("unknown cleanPodPolicy", "operator", r"cleanPodPolicy",
         setp(lambda d: job(d)["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes"))),
        ("two launchers", "operator", r"Launcher.replicas",
         setp(lambda d: job(d)["spec"]["mpiReplicaSpecs"]["Launcher"].update(replicas=2))),
        ("restartPolicy Always", "operator", r"restartPolicy",
         setp(lambda d: job(d)["spec"]["mpiReplicaSpecs"]["Worker"].update(restartPolicy="Always"))),
        ("a Service port that is not a number", "service", r"port",
         setp(lambda d: svc(d)["spec"]["ports"][0].update(port="grpc"))),
        ("runLauncherAsWorker off: rank 0 moves to worker-0", "check", r"selects no pod",
         setp(lambda d: job(d)["spec"].update(runLauncherAsWorker=False))),
        ("rank 0 on worker-0 with the gRPC probe and Service there", "check", r"waits for itself",
         setp(worker0_design)),
        ("the gRPC readiness probe on the workers", "check", r"only rank 0 listens", setp(probe_to_workers)),
        ("OMP_NUM_THREADS not the CPUs", "check", r"OMP_NUM_THREADS",
         setp(lambda d: ctr(d, "Launcher")["env"][0].update(value="32"))),
        ("cpu requests below limits", "check", r"requests must equal limits",
         setp(lambda d: ctr(d, "Worker")["resources"]["requests"].update(cpu="14"))),
        ("fractional CPUs", "check", r"whole CPUs",
         setp(lambda d: [ctr(d, r)["resources"][k].update(cpu="27500m")
                         for r in ("Launcher", "Worker") for k in ("requests", "limits")])),
        ("too little memory for the shard", "check", r"below what a rank needs",
         setp(lambda d: [ctr(d, r)["resources"][k].update(memory="4Gi")
                         for r in ("Launcher", "Worker") for k in ("requests", "limits")])),
        ("model mount writable", "check", r"must be readOnly",
         setp(lambda d: ctr(d, "Worker")["volumeMounts"][0].update(readOnly=False))),
        ("model claim not readOnly", "check", r"persistentVolumeClaim must say readOnly",
         setp(lambda d: tpl(d, "Launcher")["volumes"][0]["persistentVolumeClaim"].pop("readOnly"))),
        ("runAsNonRoot off", "check", r"runAsNonRoot",
         setp(lambda d: tpl(d, "Worker")["securityContext"].update(runAsNonRoot=False))),
        ("launcher without --hostfile", "check", r"--hostfile", setp(cmd_without_hostfile)),
        ("Service selecting every pod of the job", "check", r"must select rank 0",
         setp(lambda d: [svc(d)["spec"]["selector"].pop(k) for k in (LABEL_JOB_ROLE, LABEL_REPLICA_INDEX)])),
        ("Service selecting the workers' index 0", "check", r"selects no pod",
         setp(lambda d: svc(d)["spec"]["selector"].update({LABEL_JOB_ROLE: "worker"}))),
        ("Service grpc port aimed at metrics", "check", r"targets",
         setp(lambda d: svc(d)["spec"]["ports"][0].update(targetPort="metrics"))),
        ("Service named like the operator's", "check", r"headless Service",
         setp(lambda d: svc(d)["metadata"].update(name=job(d)["metadata"]["name"]))),
        ("grace period shorter than the drain", "check", r"terminationGracePeriodSeconds",
         setp(lambda d: tpl(d, "Launcher").update(terminationGracePeriodSeconds=30))),
        ("ssh keys mounted for root", "check", r"sshAuthMountPath",
         setp(lambda d: job(d)["spec"].update(sshAuthMountPath="/root/.ssh"))),
        ("two ranks per pod", "check", r"one rank per pod",
         setp(lambda d: job(d)["spec"].update(slotsPerWorker=2))),
        ("init container mounting a volume nobody makes", "check", r"names no volume of the pod",
         setp(lambda d: tpl(d, "Launcher")["initContainers"][0]["volumeMounts"][0].update(name="hostfile"))),
        ("init container without limits", "check", r"every container, init ones too",
         setp(lambda d: tpl(d, "Launcher")["initContainers"][0]["resources"].pop("limits"))),
        ("a program the image does not have", "check", r"not installed by the Containerfile",
         setp(lambda d: ctr(d, "Worker")["lifecycle"]["preStop"]["exec"].update(command=["/opt/x.sh"]))),
        ("workers' preStop hook gone", "check", r"preStop",
         setp(lambda d: ctr(d, "Worker").pop("lifecycle"))),
    ]

    def final_user_root(t):
        return re.sub(r"^USER .*$", "USER root", t, flags=re.M)

    def ubuntu_runtime(t):
        return t.replace("FROM debian:bookworm-slim", "FROM ubuntu:24.04")

    def no_sshd(t):
        return t.replace(" openssh-server", "")

    def no_grpc(t):
        return t.replace(" libgrpc29", "")

    def binary_elsewhere(t):
        return t.replace("/src/build/infernode /usr/local/bin/infernode",
                         "/src/build/infernode /usr/bin/infernode")

    def no_user(t):
        return re.sub(r"^USER .*$", "", t, flags=re.M)

    def named_user(t):
        return re.sub(r"^USER .*$", "USER mpiuser", t, flags=re.M)

    def dev_package(t):
        return t.replace(" libgrpc29 ", " libgrpc29 libgrpc-dev ")

    file_m = [
        ("Containerfile: final USER root", "containerfile", r"USER root", final_user_root),
        ("Containerfile: no USER", "containerfile", r"no USER", no_user),
        ("Containerfile: USER by name", "containerfile", r"numeric uid", named_user),
        ("Containerfile: runtime stage not Debian 12", "containerfile", r"Debian 12", ubuntu_runtime),
        ("Containerfile: no openssh-server", "containerfile", r"openssh-server", no_sshd),
        ("Containerfile: no libgrpc29", "containerfile", r"libgrpc29", no_grpc),
        ("Containerfile: a -dev package at run time", "containerfile", r"build packages", dev_package),
        ("Containerfile: binary not where the launcher looks", "containerfile", r"/usr/local/bin/infernode",
         binary_elsewhere),
    ]
    return docs_m, file_m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared-dir", required=True, help="the shared/ folder (k8s/kubeflow.org_mpijobs.yaml)")
    ap.add_argument("--repo", default=REPO_DEFAULT)
    ap.add_argument("--manifest")
    ap.add_argument("--containerfile")
    ap.add_argument("--binary", help="a build of infernode: its libraries must be in the image")
    a = ap.parse_args()
    manifest = a.manifest or os.path.join(a.repo, "deploy", "kubernetes", "infernode-mpijob.yaml")
    containerfile = a.containerfile or os.path.join(a.repo, "deploy", "container", "Containerfile")
    crd_path = os.path.join(a.shared_dir, "k8s", "kubeflow.org_mpijobs.yaml")
    if not os.path.isfile(crd_path):
        if os.environ.get("CI") == "true":
            print(f"FAIL: {crd_path} is missing (CI=true: the shared folder must be present)")
            return 1
        print(f"SKIP: {crd_path} is missing")
        return 77
    if a.binary and not os.path.isfile(a.binary):
        print(f"FAIL: --binary {a.binary} does not exist")
        return 1
    binary = a.binary
    if binary and not (shutil.which("readelf") and shutil.which("dpkg")):
        print("note: readelf or dpkg missing: the binary's libraries are not checked")
        binary = None

    crd = load_crd_validator(crd_path)
    with open(manifest) as f:
        docs = list(yaml.safe_load_all(f))
    with open(containerfile) as f:
        ctext = f.read()
    passed = failed = 0

    def shown(path):
        rel = os.path.relpath(path, a.repo)
        return path if rel.startswith("..") else rel

    problems = check_all(docs, ctext, crd, a.repo, binary)
    if problems:
        failed += 1
        print(f"FAIL {shown(manifest)} + {shown(containerfile)}:")
        for p in problems:
            print(f"    {p}")
    else:
        passed += 1
        print(f"ok   {shown(manifest)} + {shown(containerfile)}:"
              " the CRD schema, the operator's validation, the Service, rank 0, probes, resources,"
              " volume, security, ssh, launch.sh --dry-run, the image")

    if binary and not problems:
        owners = binary_packages(binary, Problems())
        print("     the binary's libraries come from: "
              + ", ".join(f"{so} {pkg}" for so, pkg in sorted(owners.items())))

    # Broken variants: each must be rejected, and by the stage that should see it. They are
    # only meaningful on a manifest that passes (else every variant "fails" for the old reason).
    if problems:
        print("(broken variants not run: the files themselves do not pass)")
    else:
        docs_m, file_m = mutations()
        variants = [(n, s, r, lambda c=c: (c(copy.deepcopy(docs)), ctext)) for n, s, r, c in docs_m] + \
                   [(n, s, r, lambda c=c: (docs, c(ctext))) for n, s, r, c in file_m]
        for name, source, reason, make in variants:
            vdocs, vtext = make()
            if vtext == ctext and vdocs == docs:
                failed += 1
                print(f"FAIL variant {name!r} changes nothing (the files changed under it)")
                continue
            got = check_all(vdocs, vtext, crd, a.repo, None, dry_run=False)
            hits = [p for p in got if p.startswith(source + ":") and re.search(reason, p)]
            if hits:
                passed += 1
                print(f"ok   rejected: {name}: {hits[0][:160]}")
            else:
                failed += 1
                print(f"FAIL not rejected by {source} for /{reason}/: {name}"
                      + (f" (only: {got[0][:200]})" if got else ""))
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
