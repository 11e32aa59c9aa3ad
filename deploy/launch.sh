#!/usr/bin/env bash
# Starts infernode across the NUMA sockets of this machine, or of several machines: one MPI
# rank per socket, each rank's OpenMP threads on its socket's cores, its memory on its
# socket's NUMA node. Prints the mpirun line, then runs it.
#
#   deploy/launch.sh [options] -- infernode-arguments...
#     --hostfile FILE     machines to use (Open MPI hostfile: "host slots=SOCKETS" lines); all
#                         machines are assumed to look like this one (sockets, cores)
#     --np N              ranks in all (default: sockets of this machine x machines)
#     --threads N         OpenMP threads per rank (default: cores per socket)
#     --oversubscribe     allow more ranks than sockets (tests, laptops)
#     --dry-run           print the mpirun line only
#     --binary PATH       the infernode binary (default: build/infernode beside this script)
#
# SIGTERM/SIGINT to this script reach the ranks as SIGUSR1 (graceful drain for 'serve').
#
# As root, Open MPI refuses to start unless told: this script adds --allow-run-as-root when
# it runs as root (the same as OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binary="$here/../build/infernode"
hostfile="" np="" threads="" oversubscribe=0 dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) hostfile="$2"; shift 2 ;;
    --np) np="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --oversubscribe) oversubscribe=1; shift ;;
    --dry-run) dry=1; shift ;;
    --binary) binary="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "launch.sh: unknown option '$1' (infernode's own arguments go after --)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "launch.sh: no infernode arguments (e.g. -- serve -m MODEL)" >&2; exit 2; }

sockets=$(lscpu -p=SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l)
cores=$(lscpu -p=CORE 2>/dev/null | grep -v '^#' | sort -u | wc -l)
nodes=$(lscpu -p=NODE 2>/dev/null | grep -v '^#' | sort -u | wc -l)
[ "$sockets" -ge 1 ] || sockets=1
cores_per_socket=$(( cores / sockets ))
[ "$cores_per_socket" -ge 1 ] || cores_per_socket=1
machines=1
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || { echo "launch.sh: cannot read hostfile '$hostfile'" >&2; exit 2; }
  machines=$(grep -cvE '^\s*(#|$)' "$hostfile")
fi
np=${np:-$(( sockets * machines ))}
threads=${threads:-$cores_per_socket}
echo "launch.sh: $machines machine(s) x $sockets socket(s) x $cores_per_socket cores, $nodes NUMA node(s) here;" \
     "$np rank(s) x $threads thread(s)" >&2

cmd=(mpirun -np "$np")
if [ "$oversubscribe" = 1 ] || [ "$np" -gt $(( sockets * machines )) ]; then
  # More ranks than sockets: let ranks share, and stop idle ranks from spinning on shared cores.
  cmd+=(--oversubscribe --bind-to none --mca mpi_yield_when_idle 1)
else
  cmd+=(--map-by ppr:1:socket --bind-to socket --report-bindings)
fi
[ -n "$hostfile" ] && cmd+=(--hostfile "$hostfile")
[ "$(id -u)" = 0 ] && cmd+=(--allow-run-as-root)
cmd+=(-x "OMP_NUM_THREADS=$threads" -x OMP_PROC_BIND=close -x OMP_PLACES=cores)
for var in INFERNODE_ISA OMP_WAIT_POLICY; do
  [ -n "${!var:-}" ] && cmd+=(-x "$var")
done
cmd+=("$binary" "$@")

printf '%q ' "${cmd[@]}" >&2; echo >&2
[ "$dry" = 1 ] && exit 0
# mpirun turns SIGTERM into a kill of every rank within seconds, but forwards SIGUSR1. So
# SIGTERM or SIGINT here (a service manager stopping us) becomes SIGUSR1 to the ranks, which
# 'infernode serve' takes as "drain and exit"; mpirun's own exit status is ours.
"${cmd[@]}" &
mpirun_pid=$!
trap 'kill -USR1 "$mpirun_pid" 2>/dev/null' TERM INT
while :; do
  wait "$mpirun_pid" && exit 0
  status=$?
  kill -0 "$mpirun_pid" 2>/dev/null || exit "$status"
done
