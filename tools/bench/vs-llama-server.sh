#!/bin/bash
# infernode serve against llama.cpp's llama-server on the same model file with the same client
# (tools/bench/serve-load.py), run A-B-A (infernode, llama-server, infernode) so that a drift of
# the machine's speed during the run shows up as a difference between the two infernode runs
# instead of hiding in the ratio. See usage below.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/bench/vs-llama-server.sh MODEL LLAMA_SERVER [options]

Starts `infernode serve -m MODEL` (A), waits for /health and runs tools/bench/serve-load.py
against its OpenAI HTTP API, stops it (SIGTERM); then LLAMA_SERVER -m MODEL -np N (B, N the
largest stream count, continuous batching on as llama-server's default) with the same client;
then infernode again (A). Every request streams /v1/completions with a prompt of -p token
ids and -n greedy tokens, end-of-generation ignored. Prints per stream count both engines'
aggregate tokens/s, TTFT p50 and TPOT p50, the ratios (infernode's figure: the mean of its
two runs; each ratio > 1 means infernode is ahead), A2/A1 of the aggregate (near 1: the
machine held still) and, per engine, the aggregate at the largest stream count over that at
the smallest. Both servers get the same threads and a context of -p + -n + 16 positions per
stream. `uptime`'s load is printed before and after; compare ratios of one run, never
absolute figures across runs. Both engines run in this environment (OMP_WAIT_POLICY,
OMP_PROC_BIND ... reach infernode).

  MODEL             a GGUF file both engines read (random-weight shape files:
                    ../shared/peers/mk_shape_gguf.py)
  LLAMA_SERVER      a llama-server binary (llama.cpp is not a dependency: build it outside
                    the project)

options:
  -s, --streams LIST   concurrent streams, comma-separated (default: 1,4,16)
  -p, --n-prompt N     prompt tokens per request (default 32)
  -n, --n-gen N        generated tokens per request, >= 2 (default 64)
  -t, --threads N      threads of both servers (default: all CPUs, nproc)
      --rounds R       requests each stream sends one after the other (default 1)
      --infernode BIN  the infernode binary (default: $INFERNODE_BIN, else build/infernode
                       of this checkout, else infernode on PATH)
      --start-timeout S  seconds a server may take to answer /health (default 300)
      --raw DIR        keep the client's JSON (a1.json, b.json, a2.json) and the servers'
                       logs (a1.log, b.log, a2.log) in DIR
  -h, --help           this help

Exit status: 0 with the table printed; 1 when a server or a request fails (its last messages
are shown); 2 for bad arguments.
EOF
}

die_usage() {
    echo "vs-llama-server.sh: error: $1" >&2
    echo "usage: tools/bench/vs-llama-server.sh MODEL LLAMA_SERVER [-s LIST] [-p N] [-n N] [-t N] [--rounds R] [--infernode BIN] [--start-timeout S] [--raw DIR]" >&2
    exit 2
}

streams=1,4,16 n_prompt=32 n_gen=64 threads=$(nproc) rounds=1 infernode="" start_timeout=300 raw_dir=""
operands=()
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    -s | --streams | -p | --n-prompt | -n | --n-gen | -t | --threads | --rounds | --infernode | --start-timeout | --raw)
        [ $# -ge 2 ] || die_usage "$1 needs a value"
        case "$1" in
        -s | --streams) streams=$2 ;;
        -p | --n-prompt) n_prompt=$2 ;;
        -n | --n-gen) n_gen=$2 ;;
        -t | --threads) threads=$2 ;;
        --rounds) rounds=$2 ;;
        --infernode) infernode=$2 ;;
        --start-timeout) start_timeout=$2 ;;
        --raw) raw_dir=$2 ;;
        esac
        shift 2 ;;
    -*) die_usage "unknown option $1" ;;
    *) operands+=("$1"); shift ;;
    esac
done
[ ${#operands[@]} -eq 2 ] || die_usage "give MODEL and LLAMA_SERVER"
model=${operands[0]} llama_server=${operands[1]}
[[ $streams =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die_usage "--streams: '$streams' is not a list of positive integers"
[[ $n_prompt =~ ^[1-9][0-9]*$ ]] || die_usage "--n-prompt: '$n_prompt' is not an integer >= 1"
[[ $n_gen =~ ^[1-9][0-9]*$ && $n_gen -ge 2 ]] || die_usage "--n-gen: '$n_gen' is not an integer >= 2"
[[ $threads =~ ^[1-9][0-9]*$ ]] || die_usage "--threads: '$threads' is not an integer >= 1"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die_usage "--rounds: '$rounds' is not an integer >= 1"
[[ $start_timeout =~ ^[1-9][0-9]*$ ]] || die_usage "--start-timeout: '$start_timeout' is not an integer >= 1"
[ -r "$model" ] || die_usage "MODEL $model: no such readable file"
[ -x "$llama_server" ] || die_usage "LLAMA_SERVER $llama_server: not an executable"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "$infernode" ]; then
    if [ -n "${INFERNODE_BIN:-}" ]; then infernode=$INFERNODE_BIN
    elif [ -x "$here/../../build/infernode" ]; then infernode=$here/../../build/infernode
    else infernode=$(command -v infernode || true)
    fi
fi
[ -n "$infernode" ] && [ -x "$infernode" ] || die_usage "no infernode binary: give --infernode BIN"
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3 || true)
[ -n "$python" ] || die_usage "no python3 for serve-load.py"

max_streams=$(tr , '\n' <<<"$streams" | sort -n | tail -n 1)
ctx=$((n_prompt + n_gen + 16))

work=$(mktemp -d)
server_pid=""
stop_server() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$server_pid" 2>/dev/null && [ $waited -lt 60 ]; do
        sleep 0.5
        waited=$((waited + 1))
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
trap 'stop_server; rm -rf "$work"' EXIT

fail() { # NAME MESSAGE: the server's last messages, exit 1
    echo "vs-llama-server.sh: error: $1: $2" >&2
    [ ! -s "$work/$1.log" ] || tail -n 5 "$work/$1.log" >&2
    exit 1
}

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_health NAME URL: until URL/health answers 200, while the server lives.
wait_health() {
    local name=$1 url=$2 deadline=$((SECONDS + start_timeout))
    until "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$url/health" 2>/dev/null; do
        kill -0 "$server_pid" 2>/dev/null || fail "$name" "the server exited before it was ready"
        [ $SECONDS -lt $deadline ] || fail "$name" "no answer 200 from $url/health within $start_timeout s"
        sleep 0.5
    done
}

# run_load NAME URL: serve-load.py against URL, its JSON into $work/NAME.json.
run_load() {
    local name=$1 url=$2
    echo "vs-llama-server.sh: $name: serve-load.py $url --streams $streams -p $n_prompt -n $n_gen" >&2
    if ! "$python" "$here/serve-load.py" "$url" --streams "$streams" --prompt-tokens "$n_prompt" --gen "$n_gen" \
        --rounds "$rounds" --json "$work/$name.json" >"$work/$name.out" 2>"$work/$name.err"; then
        tail -n 5 "$work/$name.err" >&2
        fail "$name" "serve-load.py failed"
    fi
}

run_infernode() { # NAME
    local name=$1 port deadline=$((SECONDS + start_timeout))
    echo "vs-llama-server.sh: $name: $infernode serve -m $model --max-seqs $max_streams --ctx-size $ctx -t $threads" >&2
    "$infernode" serve -m "$model" --host 127.0.0.1 --port 0 --http-port 0 --metrics-port -1 \
        --max-seqs "$max_streams" --ctx-size "$ctx" -t "$threads" >"$work/$name.log" 2>&1 &
    server_pid=$!
    # the first line after start names the HTTP port it picked
    until port=$(sed -n 's/.*http on [^ ,;]*:\([0-9][0-9]*\).*/\1/p' "$work/$name.log" | head -n 1) && [ -n "$port" ]; do
        kill -0 "$server_pid" 2>/dev/null || fail "$name" "infernode serve exited before it listened"
        [ $SECONDS -lt $deadline ] || fail "$name" "infernode serve named no HTTP port within $start_timeout s"
        sleep 0.2
    done
    wait_health "$name" "http://127.0.0.1:$port"
    run_load "$name" "http://127.0.0.1:$port"
    stop_server
}

run_llama_server() { # NAME
    local name=$1 port
    port=$(free_port)
    echo "vs-llama-server.sh: $name: $llama_server -m $model -np $max_streams -c $((max_streams * ctx)) -t $threads" >&2
    "$llama_server" -m "$model" -np "$max_streams" -c $((max_streams * ctx)) -t "$threads" -tb "$threads" \
        --host 127.0.0.1 --port "$port" >"$work/$name.log" 2>&1 &
    server_pid=$!
    wait_health "$name" "http://127.0.0.1:$port"
    run_load "$name" "http://127.0.0.1:$port"
    stop_server
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run_infernode a1
run_llama_server b
run_infernode a2
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$raw_dir" ]; then
    mkdir -p "$raw_dir"
    cp "$work"/{a1,b,a2}.json "$work"/{a1,b,a2}.log "$raw_dir/"
fi

echo "model: $model"
echo "infernode: $infernode; llama.cpp: $llama_server (-np $max_streams)"
echo "requests: $n_prompt prompt token ids, $n_gen generated tokens, greedy, streamed; $rounds per stream; $threads threads each"
echo "load average (1, 5, 15 min): before $load_before, after $load_after; $(nproc) CPUs"
echo
"$python" - "$work/a1.json" "$work/b.json" "$work/a2.json" <<'EOF'
import json
import sys

a1, b, a2 = ({r["streams"]: r for r in json.load(open(p))["results"]} for p in sys.argv[1:])
mean = lambda k, n: (a1[n][k] + a2[n][k]) / 2  # noqa: E731
ratio = lambda x, y: f"{x / y:.2f}" if y else "-"  # noqa: E731
print("| streams | infernode t/s (A1, A2) | llama.cpp t/s | t/s infernode / llama.cpp | A2 / A1 "
      "| TTFT p50 infernode | TTFT p50 llama.cpp | TTFT llama.cpp / infernode "
      "| TPOT p50 infernode | TPOT p50 llama.cpp | TPOT llama.cpp / infernode |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in a1:
    ts, ttft, tpot = mean("aggregate_tps", n), mean("ttft_p50_ms", n), mean("tpot_p50_ms", n)
    print(f"| {n} | {ts:.2f} ({a1[n]['aggregate_tps']:.2f}, {a2[n]['aggregate_tps']:.2f}) "
          f"| {b[n]['aggregate_tps']:.2f} | {ratio(ts, b[n]['aggregate_tps'])} "
          f"| {ratio(a2[n]['aggregate_tps'], a1[n]['aggregate_tps'])} "
          f"| {ttft:.2f} ms | {b[n]['ttft_p50_ms']:.2f} ms | {ratio(b[n]['ttft_p50_ms'], ttft)} "
          f"| {tpot:.2f} ms | {b[n]['tpot_p50_ms']:.2f} ms | {ratio(b[n]['tpot_p50_ms'], tpot)} |")
lo, hi = min(a1), max(a1)
if hi != lo:
    print()
    print(f"aggregate at {hi} streams / at {lo}: infernode {ratio(mean('aggregate_tps', hi), mean('aggregate_tps', lo))}x "
          f"(A1 {ratio(a1[hi]['aggregate_tps'], a1[lo]['aggregate_tps'])}x, "
          f"A2 {ratio(a2[hi]['aggregate_tps'], a2[lo]['aggregate_tps'])}x), "
          f"llama.cpp {ratio(b[hi]['aggregate_tps'], b[lo]['aggregate_tps'])}x")
EOF
