#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds infernode and generates a
# completion with the shipped default code model (models/infernode-code-target-f16.gguf).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

prompt=$'def fibonacci(n):\n    '
echo "== infernode generate -p 'def fibonacci(n):\\n    ' (greedy, 64 tokens) =="
build/infernode generate -p "$prompt" -n 64 --temp 0
