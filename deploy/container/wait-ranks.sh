#!/bin/sh
# Waits until no infernode rank runs in this container, at most MAX_SECONDS (default 60).
#
#   wait-ranks.sh [MAX_SECONDS]
#
# The preStop hook of the MPIJob's worker pods. When the MPIJob is deleted, every pod gets its
# stop at the same moment: the launcher's launch.sh turns its SIGTERM into a drain of all ranks,
# but a worker's PID 1 is sshd, and its exit would kill the ranks below it (orted and infernode)
# at once, failing the calls rank 0 is still finishing. Kubernetes runs this hook before it sends
# SIGTERM, so the worker's ranks live until rank 0 tells them to stop. Exits 0 in every case: a
# hook that fails only adds a warning event, and the grace period bounds it anyway.
max=${1:-60}
case "$max" in '' | *[!0-9]*) max=60 ;; esac
waited=0
while [ "$waited" -lt "$max" ]; do
  running=0
  for status in /proc/[0-9]*/status; do
    name="" state=""
    # "Name:<tab>infernode" ... "State:<tab>S (sleeping)"; a zombie (Z) has already ended.
    while read -r key value rest; do
      case "$key" in
        Name:) name=$value ;;
        State:) state=$value; break ;;
      esac
    done 2>/dev/null <"$status" || continue
    if [ "$name" = infernode ] && [ "$state" != Z ]; then
      running=1
      break
    fi
  done
  [ "$running" = 1 ] || exit 0
  sleep 1
  waited=$((waited + 1))
done
exit 0
