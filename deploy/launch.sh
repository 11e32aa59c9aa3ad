#!/usr/bin/env bash
# Starts infernode under Open MPI's mpirun: one rank per NUMA socket, on this machine or on the
# machines of a hostfile or a Slurm allocation. Prints the exact mpirun line, then runs it.
#
#   deploy/launch.sh [options] -- infernode-arguments...
#
# How many ranks (--np overrides all three, but never allows more ranks than slots by itself):
#   --hostfile FILE       the sum of the hostfile's slots= (Open MPI syntax, "host slots=N" per
#                         line; a line without slots= counts 1; comments and blank lines skipped)
#   inside Slurm          (SLURM_JOB_ID set, no --hostfile) SLURM_NTASKS, else SLURM_NNODES x
#                         SLURM_NTASKS_PER_NODE, else the sum of SLURM_TASKS_PER_NODE; mpirun
#                         takes the hosts from the allocation itself
#   otherwise             the sockets of this machine (lscpu)
#   Never the launching machine's sockets for other machines: a login node is not a compute node.
#
# Options:
#   --hostfile FILE       machines to use; give each "slots=" its number of sockets
#   --np N                ranks in all (at most the slots, unless --oversubscribe)
#   --threads N           OpenMP threads per rank (-x OMP_NUM_THREADS=N). Default: on this machine
#                         alone, its cores divided among its ranks; on other machines (hostfile,
#                         Slurm) OMP_NUM_THREADS is left unset so that each rank picks its own
#                         from the CPUs it is allowed to run on (its socket, its cgroup), which
#                         this machine cannot know. An OMP_NUM_THREADS in the environment is
#                         forwarded as it is.
#   --oversubscribe       allow more ranks than slots (tests, laptops): adds --oversubscribe
#                         --bind-to none --mca mpi_yield_when_idle 1 (idle ranks do not spin)
#   --if LIST             network for MPI and for Open MPI's own control traffic: interface
#                         names or CIDR subnets, comma-separated (eth1 or 10.1.0.0/16); the same
#                         as --btl-if LIST --oob-if LIST
#   --btl-if LIST         the ranks' traffic only (--mca btl_tcp_if_include LIST)
#   --oob-if LIST         mpirun's and its daemons' traffic only (--mca oob_tcp_if_include LIST)
#   --rsh-agent PATH      how mpirun starts its daemon on another machine, instead of ssh
#                         (--mca plm_rsh_agent PATH; called as PATH HOST COMMAND..., like ssh)
#   --mca NAME VALUE      any other Open MPI parameter, passed on (repeatable)
#   --env NAME[=VALUE]    forward one more environment variable to every rank (repeatable)
#   --binary PATH         the infernode binary (default: build/infernode beside this script);
#                         the same path must hold the same build on every machine
#   --teardown-grace S    once part of the job has ended, how long mpirun may take to end
#                         before it is killed (default 1; 0 = wait for ever; see "Failures")
#   --dry-run             print the mpirun line only
#   -h, --help            this text
#
# Mapping: one rank per slot, spread over each machine's sockets and bound to its socket
# (--map-by socket --bind-to socket), so "host slots=2" on a dual-socket server puts one rank
# on each socket; every rank then binds its memory and threads to its NUMA node.
#
# Environment: every variable infernode reads is forwarded to all ranks when it is set here
# (-x NAME, so values such as tokens are not printed): INFERNODE_* (INFERNODE_MODEL,
# INFERNODE_ISA, ...), OMP_* and GOMP_* (the OpenMP runtime). OMP_PROC_BIND=close and
# OMP_PLACES=cores are set when not given. TMPDIR (read by 'eval humaneval') is not: a path of
# this machine may not exist on the others; use --env TMPDIR to send it.
#
# Stopping: SIGTERM or SIGINT to this script, at any moment, becomes SIGUSR1 to the ranks
# ('infernode serve' drains and exits 0; a job still loading exits non-zero). mpirun kills
# every rank on SIGTERM, and delivers SIGUSR1 only to ranks that already exist, so the stop is
# remembered and SIGUSR1 sent to mpirun again every 0.5 s until it exits (from its first
# child on: before that, SIGUSR1 could kill mpirun itself): a rank that starts later still
# gets it. A stop before mpirun starts ends the script with 128 + the signal, without
# starting it. Otherwise the exit status is mpirun's. Under systemd, use KillMode=mixed so
# that only this script gets the SIGTERM (docs/cluster.md).
#
# Failures: a rank that fails or loses a peer exits non-zero and mpirun ends the job, killing
# the other ranks at once (--mca odls_base_sigkill_timeout 0, unless given: Open MPI's default
# of SIGCONT, 1 s, SIGTERM, 1 s, SIGKILL only delays the end, as infernode drains on SIGUSR1
# alone). But mpirun then waits for every daemon to confirm, and a daemon on a host it cannot
# reach (a dead link) never does: nothing closes its TCP connection for many minutes. So once
# a child of mpirun that ran for 2 s or more has ended (a local rank, or the ssh/rsh agent of
# a daemon: the job is ending; in a normal end all of them end within ~0.1 s), mpirun gets
# --teardown-grace seconds to end too; then it and its remaining children are killed
# (SIGKILL) and this script exits non-zero. A daemon left on an unreachable host ends by
# itself once it can reach this machine again and sees that mpirun is gone.
#
# As root, Open MPI refuses to start unless told: this script adds --allow-run-as-root when
# it runs as root (the same as OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
# docs/cluster.md says what each machine needs (paths, ssh, ports, interfaces).
set -euo pipefail

# Stop requests are remembered from the very start, before mpirun exists (see "Stopping").
stop_signal="" signals=0 mpirun_pid="" forwarder="" watchdog="" teardown_grace=1
mpirun_children() {
  # mpirun's child processes (its local ranks, or the ssh/rsh agents holding its daemons on
  # other machines), from /proc/PID/task/*/children; fails where the kernel has no such file.
  local f line kids=""
  for f in /proc/"$mpirun_pid"/task/*/children; do
    [ -r "$f" ] || return 1
    line=""
    read -r line < "$f" || true
    kids+=" $line"
  done
  echo "$kids"
}
mpirun_started_a_child() {
  # mpirun sets up its signal forwarding before it starts anything, and SIGUSR1 kills it
  # before that: wait for its first child. Without the children files, assume it has.
  local kids
  kids=$(mpirun_children) || return 0
  [ -n "${kids// /}" ]
}
start_forwarder() {
  [ -z "$forwarder" ] && [ -n "$mpirun_pid" ] || return 0
  ( trap - TERM INT
    while kill -0 "$mpirun_pid" 2>/dev/null; do
      if mpirun_started_a_child; then
        kill -USR1 "$mpirun_pid" 2>/dev/null || true
        sleep 0.5
      else
        sleep 0.05
      fi
    done ) &
  forwarder=$!
}
start_watchdog() {
  # See "Failures" above: once a child of mpirun seen for 2 s (8 ticks of 0.25 s) has ended,
  # mpirun gets teardown_grace seconds to end too, then it and its other children are killed.
  [ "$teardown_grace" != 0 ] || return 0
  ( trap - TERM INT
    declare -A ticks=()
    local tick=0 ended=-1 kids pid
    while kill -0 "$mpirun_pid" 2>/dev/null; do
      kids=$(mpirun_children) || exit 0
      if [ "$ended" -lt 0 ]; then
        declare -A now=()
        for pid in $kids; do now[$pid]=1; ticks[$pid]=$(( ${ticks[$pid]:-0} + 1 )); done
        for pid in "${!ticks[@]}"; do
          if [ -z "${now[$pid]:-}" ]; then
            [ "${ticks[$pid]}" -lt 8 ] || ended=$tick
            unset "ticks[$pid]"
          fi
        done
        unset now
      elif [ $(( (tick - ended) / 4 )) -ge "$teardown_grace" ]; then
        echo "launch.sh: mpirun still runs ${teardown_grace} s after part of the job ended (a host it" \
             "cannot reach?): killing it" >&2
        for pid in $kids; do kill -KILL "$pid" 2>/dev/null || true; done
        kill -KILL "$mpirun_pid" 2>/dev/null || true
        exit 0
      fi
      tick=$((tick + 1))
      sleep 0.25
    done ) &
  watchdog=$!
}
# shellcheck disable=SC2317  # called from the traps below
on_stop() { stop_signal=$1; signals=$((signals + 1)); start_forwarder; }
trap 'on_stop 15' TERM
trap 'on_stop 2' INT

die() { echo "launch.sh: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

here=$(cd "$(dirname "$0")" && pwd)
binary="$(cd "$here/.." && pwd)/build/infernode"
hostfile="" np="" threads="" oversubscribe=0 dry=0 btl_if="" oob_if="" rsh_agent=""
mca=() envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) need_arg "$@"; hostfile="$2"; shift 2 ;;
    --np) need_arg "$@"; np="$2"; shift 2 ;;
    --threads) need_arg "$@"; threads="$2"; shift 2 ;;
    --oversubscribe) oversubscribe=1; shift ;;
    --if) need_arg "$@"; btl_if="$2"; oob_if="$2"; shift 2 ;;
    --btl-if) need_arg "$@"; btl_if="$2"; shift 2 ;;
    --oob-if) need_arg "$@"; oob_if="$2"; shift 2 ;;
    --rsh-agent) need_arg "$@"; rsh_agent="$2"; shift 2 ;;
    --mca) [ $# -ge 3 ] || die "--mca needs a name and a value"; mca+=(--mca "$2" "$3"); shift 3 ;;
    --env) need_arg "$@"; envs+=("$2"); shift 2 ;;
    --teardown-grace) need_arg "$@"; teardown_grace="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --binary) need_arg "$@"; binary="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option '$1' (infernode's own arguments go after --; see --help)" ;;
  esac
done
[ $# -gt 0 ] || die "no infernode arguments (e.g. -- serve -m MODEL)"
# A relative --binary would be looked up from each machine's working directory: make it absolute.
if [[ "$binary" == */* && "$binary" != /* ]] && [ -d "$(dirname "$binary")" ]; then
  binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
fi
[ -z "$np" ] || is_count "$np" || die "--np must be a positive integer, not '$np'"
[ -z "$threads" ] || is_count "$threads" || die "--threads must be a positive integer, not '$threads'"
[[ "$teardown_grace" =~ ^[0-9]+$ ]] || die "--teardown-grace takes whole seconds, not '$teardown_grace'"
for e in ${envs[@]+"${envs[@]}"}; do
  [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*(=.*)?$ ]] || die "--env takes NAME or NAME=VALUE, not '$e'"
done

# This machine (used only when the ranks run here).
sockets=$(lscpu -p=SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l) || sockets=0
cores=$(lscpu -p=CORE 2>/dev/null | grep -v '^#' | sort -u | wc -l) || cores=0
[ "$sockets" -ge 1 ] || sockets=1
[ "$cores" -ge 1 ] || cores=$(nproc 2>/dev/null || echo 1)

# Where the ranks go, and how many slots there are.
slurm_tasks() {
  if is_count "${SLURM_NTASKS:-}"; then echo "$SLURM_NTASKS"; return; fi
  local nodes=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-}}
  if is_count "$nodes" && is_count "${SLURM_NTASKS_PER_NODE:-}"; then
    echo $(( nodes * SLURM_NTASKS_PER_NODE )); return
  fi
  # "2(x3),1": 2 tasks on each of 3 nodes, then 1
  if [ -n "${SLURM_TASKS_PER_NODE:-}" ]; then
    local total=0 part n x
    IFS=, read -ra parts <<< "$SLURM_TASKS_PER_NODE"
    for part in "${parts[@]}"; do
      [[ "$part" =~ ^([0-9]+)(\(x([0-9]+)\))?$ ]] || return 0
      n=${BASH_REMATCH[1]} x=${BASH_REMATCH[3]:-1}
      total=$(( total + n * x ))
    done
    [ "$total" -ge 1 ] && echo "$total"
  fi
}
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "cannot read hostfile '$hostfile'"
  where=remote
  slots=$(awk '{ sub(/#.*/, "") } NF == 0 { next }
               { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) n = substr($i, 7) + 0; total += n; hosts++ }
               END { print total + 0, hosts + 0 }' "$hostfile")
  machines=${slots#* } slots=${slots% *}
  [ "$slots" -ge 1 ] || die "hostfile '$hostfile' names no machine"
  source_desc="$machines machine(s) of $hostfile, $slots slot(s)"
elif [ -n "${SLURM_JOB_ID:-}" ]; then
  where=remote
  slots=$(slurm_tasks)
  [ -n "$slots" ] || slots=${np:-}
  [ -n "$slots" ] || die "cannot tell the rank count from Slurm job $SLURM_JOB_ID (no SLURM_NTASKS," \
                         "SLURM_NTASKS_PER_NODE or SLURM_TASKS_PER_NODE): give --np"
  source_desc="Slurm job $SLURM_JOB_ID, $slots task(s)"
else
  where=local
  slots=$cores
  source_desc="this machine: $sockets socket(s), $cores core(s)"
fi
if [ -z "$np" ]; then
  if [ "$where" = local ]; then np=$sockets; else np=$slots; fi
fi
if [ "$np" -gt "$slots" ] && [ "$oversubscribe" = 0 ]; then
  die "$np ranks but only $slots slot(s) ($source_desc): add --oversubscribe to run more ranks than slots"
fi

# Threads per rank: explicit, else the environment's, else (here only) cores over ranks.
omp_threads=""
if [ -n "$threads" ]; then
  omp_threads=$threads
elif [ -z "${OMP_NUM_THREADS:-}" ] && [ "$where" = local ]; then
  omp_threads=$(( cores / (np > sockets ? np : sockets) ))
  [ "$omp_threads" -ge 1 ] || omp_threads=1
fi
if [ -n "$omp_threads" ]; then thread_desc="$omp_threads thread(s) each"
elif [ -n "${OMP_NUM_THREADS:-}" ]; then thread_desc="OMP_NUM_THREADS=$OMP_NUM_THREADS from the environment"
else thread_desc="threads: each rank's own default (the CPUs it may use)"; fi
echo "launch.sh: $source_desc; $np rank(s), $thread_desc" >&2

cmd=(mpirun -np "$np")
if [ "$oversubscribe" = 1 ]; then
  # Ranks share cores: no binding, and idle ranks yield instead of spinning on shared cores.
  cmd+=(--oversubscribe --bind-to none --mca mpi_yield_when_idle 1)
else
  cmd+=(--map-by socket --bind-to socket --report-bindings)
fi
[ -n "$hostfile" ] && cmd+=(--hostfile "$hostfile")
[ "$(id -u)" = 0 ] && cmd+=(--allow-run-as-root)
[ -n "$btl_if" ] && cmd+=(--mca btl_tcp_if_include "$btl_if")
[ -n "$oob_if" ] && cmd+=(--mca oob_tcp_if_include "$oob_if")
[ -n "$rsh_agent" ] && cmd+=(--mca plm_rsh_agent "$rsh_agent")
cmd+=(${mca[@]+"${mca[@]}"})
# An aborted job's ranks have nothing to save: kill them at once, not SIGCONT, 1 s, SIGTERM,
# 1 s, SIGKILL (see "Failures").
if [ -z "${OMPI_MCA_odls_base_sigkill_timeout:-}" ] && [[ " ${mca[*]-} " != *" odls_base_sigkill_timeout "* ]]; then
  cmd+=(--mca odls_base_sigkill_timeout 0)
fi

[ -n "$omp_threads" ] && cmd+=(-x "OMP_NUM_THREADS=$omp_threads")
[ -n "${OMP_PROC_BIND:-}" ] || cmd+=(-x OMP_PROC_BIND=close)
[ -n "${OMP_PLACES:-}" ] || cmd+=(-x OMP_PLACES=cores)
while read -r var; do
  case "$var" in
    OMP_NUM_THREADS) [ -n "$omp_threads" ] && continue ;;
  esac
  [ -n "${!var:-}" ] && cmd+=(-x "$var")
done < <(compgen -e | grep -E '^(INFERNODE_|OMP_|GOMP_)' | sort)
for e in ${envs[@]+"${envs[@]}"}; do cmd+=(-x "$e"); done
cmd+=("$binary" "$@")

printf '%q ' "${cmd[@]}" >&2; echo >&2
[ "$dry" = 1 ] && exit 0

if [ -n "$stop_signal" ]; then
  echo "launch.sh: stopped (signal $stop_signal) before mpirun started" >&2
  exit $((128 + stop_signal))
fi
"${cmd[@]}" &
mpirun_pid=$!
[ -z "$stop_signal" ] || start_forwarder
start_watchdog
# wait returns early when a trapped signal arrives (the trap then runs and counts it): wait
# again until it returns because mpirun itself ended.
while :; do
  before=$signals rc=0
  wait "$mpirun_pid" || rc=$?
  [ "$signals" != "$before" ] || break
done
for helper in $forwarder $watchdog; do kill "$helper" 2>/dev/null || true; done
exit "$rc"
