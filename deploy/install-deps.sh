#!/usr/bin/env bash
# Installs every Debian package that infernode's build, tests and service need.
# Idempotent and non-interactive; run as root (or through sudo).
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config git
  # runtime libraries of the product
  libopenmpi-dev openmpi-bin libnuma-dev libgomp1
  libprotobuf-c-dev protobuf-c-compiler libgrpc-dev grpc-proto libmicrohttpd-dev
  # the quantizer (GPTQ: Hessians, Cholesky and block updates from BLAS/LAPACK); OpenBLAS's
  # OpenMP build takes over libblas.so.3/liblapack.so.3 through Debian's alternatives
  liblapack-dev libopenblas0-openmp
  # the 'eval humaneval' sandbox: bubblewrap makes its namespaces and mounts, libseccomp builds
  # its system-call filter
  bubblewrap libseccomp-dev
  # the fuzz tests (tests/fuzz): clang with libFuzzer and the sanitizers' runtimes
  # (libclang-rt-14-dev, only recommended by clang), and LLVM's OpenMP runtime for clang
  clang libclang-rt-14-dev libomp-dev
  # test references and clients
  python3 python3-numpy python3-grpcio python3-grpc-tools python3-prometheus-client python3-sentencepiece openssl python3-yaml python3-jsonschema
  # the chat-template test renders the models' real Jinja templates as the independent reference
  python3-jinja2
  # the Slurm test: a real slurmctld + slurmd + munge (tests/slurm runs its own daemons on
  # private ports, sockets and directories; at install, systemd, where it runs, starts only
  # munged with a new /etc/munge/munge.key: slurmd/slurmctld wait for /etc/slurm/slurm.conf)
  slurmctld slurmd slurm-client munge
  # the multi-host test: network namespaces, veth pairs and a bridge (ip)
  iproute2
  # the HTTP API test (tests/http): curl -N for the timing of server-sent events
  curl
)
# The HTTP API test also runs the official `openai` npm package (npm installs it into the build
# tree at test time): Node.js and npm from Debian, unless a Node.js with npm is installed already
# (NodeSource's nodejs, for Node 20, carries its own npm and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
