#!/usr/bin/env bash
# Installs the dependencies, builds infernode twice (Release, and ASan+UBSan) and runs every
# test: all labels on the Release build, then the unit, tokenizer and bad-input tests again
# under the sanitizers. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DINFERNODE_SANITIZE=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -L 'unit|tokenizer|bad_input'
