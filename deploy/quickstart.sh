#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds infernode, starts the gRPC
# service on the shipped default code model (models/infernode-code-target-f16.gguf) across
# this machine's sockets with deploy/launch.sh, sends a completion request with the C client
# (gRPC) and one with curl (the OpenAI-style HTTP API), and stops the service with SIGTERM (a
# graceful drain).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

port=${INFERNODE_PORT:-50051}
http_port=${INFERNODE_HTTP_PORT:-8080}
log=$(mktemp)
echo "== starting: deploy/launch.sh -- infernode serve --port $port --http-port $http_port (log: $log) =="
bash deploy/launch.sh -- serve --port "$port" --http-port "$http_port" --metrics-port -1 2>"$log" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
  build/infernode client health --addr "127.0.0.1:$port" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
grep -E "^infernode: (listening|serving)" "$log" || true

prompt=$'def fibonacci(n):\n    '
echo "== infernode client stream -p 'def fibonacci(n):\\n    ' -n 64 (greedy) =="
build/infernode client stream --addr "127.0.0.1:$port" -p "$prompt" -n 64
echo

echo "== curl http://127.0.0.1:$http_port/v1/completions (the same prompt, 32 tokens) =="
curl -sS "http://127.0.0.1:$http_port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "def fibonacci(n):\n    ", "max_tokens": 32}'
echo

kill -TERM "$server"
wait "$server"
trap - EXIT
echo "== service stopped =="
