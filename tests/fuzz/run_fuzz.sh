#!/bin/sh
# Runs one libFuzzer harness for a bounded time (ctest's fuzz tests):
#   run_fuzz.sh HARNESS SEEDS WORK ARTIFACTS
# SEEDS is the committed corpus (read only); new inputs go to WORK, which later runs start from
# too. INFERNODE_FUZZ_SECONDS (default 60) bounds the run. A crash, sanitizer report, leak,
# timeout or out-of-memory saves the input in ARTIFACTS and fails, naming the file and the
# command that replays it. libFuzzer's own log (a line per new input) goes to WORK/fuzz.log;
# the test prints its end: the report on failure, the final statistics otherwise.
set -u
harness=$1 seeds=$2 work=$3 artifacts=$4
seconds=${INFERNODE_FUZZ_SECONDS:-60}
mkdir -p "$work" "$artifacts"
log="$work/fuzz.log"
stamp="$work/.started"
: > "$stamp"
"$harness" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$work" "$seeds" > "$log" 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then
  tail -n 80 "$log"
  echo "fuzz: $(basename "$harness") failed (exit $rc); whole log: $log"
  find "$artifacts" -type f -newer "$stamp" | while read -r f; do
    echo "fuzz: input saved: $f (replay: $harness $f)"
  done
  exit 1
fi
grep -E '^(Done|stat::)' "$log"
