#!/usr/bin/env bash
# Installs the dependencies, builds infernode three times (Release; ASan+UBSan; clang with
# libFuzzer) and runs every test: all labels on the Release build, the unit, tokenizer and
# bad-input tests again under the sanitizers, then each fuzz harness for
# INFERNODE_FUZZ_SECONDS (default 60), as many at once as there are cores. This is the
# README's test command and what CI runs.
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

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFERNODE_FUZZ=ON
cmake --build build-fuzz -j"$jobs"
ctest --test-dir build-fuzz --output-on-failure -L fuzz -j"$jobs"
