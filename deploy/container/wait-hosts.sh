#!/bin/sh
# Waits until every host of an Open MPI hostfile has an address, at most MAX_SECONDS (default
# 120); exits 1 naming the hosts that still have none.
#
#   wait-hosts.sh [HOSTFILE [MAX_SECONDS]]      (default HOSTFILE: /etc/mpi/hostfile)
#
# The init container of the MPIJob's launcher. The MPI Operator names every pod in DNS through
# its headless Service, and a pod's name appears there a moment after the pod has an address;
# mpirun resolves every name of the hostfile at once, the launcher's own included (that is how
# it knows the launcher is rank 0's host), and gives up on a name not there yet. Same idea as
# the operator's own images' entrypoint (build/base/entrypoint.sh there).
hostfile=${1:-/etc/mpi/hostfile}
max=${2:-120}
case "$max" in '' | *[!0-9]*) max=120 ;; esac
[ -r "$hostfile" ] || { echo "wait-hosts.sh: cannot read $hostfile" >&2; exit 1; }
waited=0
while :; do
  missing=""
  while read -r host _; do
    case "$host" in '' | '#'*) continue ;; esac
    host=${host%%:*} # Intel MPI and MPICH write host:slots
    getent hosts "$host" >/dev/null 2>&1 || missing="$missing $host"
  done <"$hostfile"
  [ -z "$missing" ] && exit 0
  if [ "$waited" -ge "$max" ]; then
    echo "wait-hosts.sh: after $max s, no address for:$missing" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
