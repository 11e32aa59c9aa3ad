#!/bin/bash
# infernode against llama.cpp's llama-bench on the same model file, run A-B-A (infernode,
# llama-bench, infernode) so that a drift of the machine's speed during the run shows up as a
# difference between the two infernode runs instead of hiding in the ratio. See usage below.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/bench/vs-llamacpp.sh MODEL LLAMA_BENCH [options]

Runs `infernode bench MODEL` (A), then LLAMA_BENCH -m MODEL (B), then infernode again (A),
with the same tests, and prints per test and thread count both engines' tokens/s and the
ratio infernode / llama.cpp (infernode's figure: the mean of its two runs). Both engines
define the tests alike: ppN evaluates an N-token prompt in one batch, tgN generates N tokens
one at a time from an empty context; t/s is the mean ± stddev over the repetitions, after a
warm-up run. A2/A1 near 1 says the machine held still; compare ratios of one run, never
absolute figures across runs. `uptime`'s load is printed before and after. Both engines
run in this environment (OMP_WAIT_POLICY, OMP_PROC_BIND ... reach infernode; -t sets both
engines' threads).

  MODEL            a GGUF file both engines read (random-weight shape files:
                   ../shared/peers/mk_shape_gguf.py)
  LLAMA_BENCH      a llama-bench binary (llama.cpp is not a dependency: build it outside
                   the project)

options:
  -t, --threads LIST   thread counts, comma-separated (default: 1,2)
  -p, --n-prompt N     prompt tokens of the pp test, 0 for none (default 512)
  -n, --n-gen N        generated tokens of the tg test, 0 for none (default 128)
  -r, --reps N         repetitions per test and engine (default 5)
      --infernode BIN  the infernode binary (default: $INFERNODE_BIN, else build/infernode
                       of this checkout, else infernode on PATH)
      --raw DIR        keep both engines' JSON lines (a1.jsonl, b.jsonl, a2.jsonl) in DIR
  -h, --help           this help

Exit status: 0 with the table printed; 1 when an engine fails (its last messages are shown);
2 for bad arguments.
EOF
}

die_usage() {
    echo "vs-llamacpp.sh: error: $1" >&2
    echo "usage: tools/bench/vs-llamacpp.sh MODEL LLAMA_BENCH [-t LIST] [-p N] [-n N] [-r N] [--infernode BIN] [--raw DIR]" >&2
    exit 2
}

threads=1,2 n_prompt=512 n_gen=128 reps=5 infernode="" raw_dir=""
operands=()
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    -t | --threads | -p | --n-prompt | -n | --n-gen | -r | --reps | --infernode | --raw)
        [ $# -ge 2 ] || die_usage "$1 needs a value"
        case "$1" in
        -t | --threads) threads=$2 ;;
        -p | --n-prompt) n_prompt=$2 ;;
        -n | --n-gen) n_gen=$2 ;;
        -r | --reps) reps=$2 ;;
        --infernode) infernode=$2 ;;
        --raw) raw_dir=$2 ;;
        esac
        shift 2 ;;
    -*) die_usage "unknown option $1" ;;
    *) operands+=("$1"); shift ;;
    esac
done
[ ${#operands[@]} -eq 2 ] || die_usage "give MODEL and LLAMA_BENCH"
model=${operands[0]} llama_bench=${operands[1]}
[[ $threads =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die_usage "--threads: '$threads' is not a list of positive integers"
[[ $n_prompt =~ ^[0-9]+$ ]] || die_usage "--n-prompt: '$n_prompt' is not an integer >= 0"
[[ $n_gen =~ ^[0-9]+$ ]] || die_usage "--n-gen: '$n_gen' is not an integer >= 0"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die_usage "--reps: '$reps' is not an integer >= 1"
[ "$n_prompt" -gt 0 ] || [ "$n_gen" -gt 0 ] || die_usage "-p 0 and -n 0 leave no test to run"
[ -r "$model" ] || die_usage "MODEL $model: no such readable file"
[ -x "$llama_bench" ] || die_usage "LLAMA_BENCH $llama_bench: not an executable"

if [ -z "$infernode" ]; then
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    if [ -n "${INFERNODE_BIN:-}" ]; then infernode=$INFERNODE_BIN
    elif [ -x "$here/../../build/infernode" ]; then infernode=$here/../../build/infernode
    else infernode=$(command -v infernode || true)
    fi
fi
[ -n "$infernode" ] && [ -x "$infernode" ] || die_usage "no infernode binary: give --infernode BIN"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run NAME CMD...: the command's stdout into $work/NAME.jsonl; on failure its last messages.
run() {
    local name=$1
    shift
    echo "vs-llamacpp.sh: $name: $*" >&2
    if ! "$@" >"$work/$name.jsonl" 2>"$work/$name.err"; then
        echo "vs-llamacpp.sh: error: $name failed (exit status $?):" >&2
        tail -n 5 "$work/$name.err" >&2
        exit 1
    fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run a1 "$infernode" bench "$model" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" -o jsonl
run b "$llama_bench" -m "$model" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" -o jsonl
run a2 "$infernode" bench "$model" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" -o jsonl
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$raw_dir" ]; then
    mkdir -p "$raw_dir"
    cp "$work/a1.jsonl" "$work/b.jsonl" "$work/a2.jsonl" "$raw_dir/"
fi

quant=$(sed -n 's/.*"quant": "\([^"]*\)".*/\1/p' "$work/a1.jsonl" | head -n 1)
echo "model: $model"
echo "infernode: $infernode (weights $quant); llama.cpp: $llama_bench"
echo "load average (1, 5, 15 min): before $load_before, after $load_after; $(nproc) CPUs"
echo
# Both engines write one flat JSON object per test with the same field names; a test is
# keyed by its kind and size and the thread count.
awk '
function field(line, key,    v) {
    if (!match(line, "\"" key "\": *[^,}]*")) return ""
    v = substr(line, RSTART, RLENGTH)
    sub(/^[^:]*: */, "", v)
    gsub(/"/, "", v)
    return v
}
/^\{/ {
    test = field($0, "n_prompt") > 0 ? "pp" field($0, "n_prompt") : "tg" field($0, "n_gen")
    key = test SUBSEP field($0, "n_threads")
    avg[run, key] = field($0, "avg_ts")
    sd[run, key] = field($0, "stddev_ts")
    if (run == 1) order[++n] = key
}
function cell(r, k) { return (r, k) in avg ? sprintf("%.2f ± %.2f", avg[r, k], sd[r, k]) : "missing" }
END {
    print "| test | threads | infernode A1 t/s | llama.cpp t/s | infernode A2 t/s | infernode / llama.cpp | A2 / A1 |"
    print "|---|---|---|---|---|---|---|"
    for (i = 1; i <= n; i++) {
        k = order[i]
        split(k, part, SUBSEP)
        ratio = "-"; drift = "-"
        if ((1, k) in avg && (2, k) in avg && (3, k) in avg && avg[2, k] > 0)
            ratio = sprintf("%.2f", (avg[1, k] + avg[3, k]) / 2 / avg[2, k])
        if ((1, k) in avg && (3, k) in avg && avg[1, k] > 0) drift = sprintf("%.2f", avg[3, k] / avg[1, k])
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", part[1], part[2], cell(1, k), cell(2, k), cell(3, k), ratio, drift
    }
}' run=1 "$work/a1.jsonl" run=2 "$work/b.jsonl" run=3 "$work/a2.jsonl"
