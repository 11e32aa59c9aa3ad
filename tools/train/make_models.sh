#!/usr/bin/env bash
# Remakes the default model pair in models/ from nothing but this machine's Python sources:
# corpus -> tokenizer -> training of target and draft -> GGUF export -> test fixture ->
# evaluation (the numbers of models/README.md). CI never runs this; it tests what it made.
#
#   bash tools/train/make_models.sh            (from the repository root; WORK=build-train)
#
# The two trainings run at the same time, one thread each (see models/README.md for why).
# Each resumes from its checkpoint if started again.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${WORK:-build-train}
PY=/usr/bin/python3
TARGET_STEPS=${TARGET_STEPS:-1000}
DRAFT_STEPS=${DRAFT_STEPS:-1200}
export OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1

bash tools/train/install-train-deps.sh
bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target infernode

# corpus and tokenizer (both splits tokenized into $WORK/data)
$PY tools/train/tokenizer.py --out "$WORK/data" --vocab-size 8192

# training: target and draft side by side, logs in $WORK/{target,draft}/
$PY tools/train/train.py --preset target --data "$WORK/data" --out "$WORK/target" \
    --steps "$TARGET_STEPS" --batch 16 --lr 2e-3 --warmup 100 > "$WORK/target.log" 2>&1 &
target_pid=$!
$PY tools/train/train.py --preset draft --data "$WORK/data" --out "$WORK/draft" \
    --steps "$DRAFT_STEPS" --batch 16 --lr 3e-3 --warmup 100 > "$WORK/draft.log" 2>&1 &
draft_pid=$!
wait "$target_pid"
wait "$draft_pid"

# export: GGUF F16 into models/, the tokenizer beside them
mkdir -p models
$PY tools/train/export.py gguf --model "$WORK/target/model.pt" --tokenizer "$WORK/data/tokenizer.model" \
    --name infernode-code-target --out models/infernode-code-target-f16.gguf
$PY tools/train/export.py gguf --model "$WORK/draft/model.pt" --tokenizer "$WORK/data/tokenizer.model" \
    --name infernode-code-draft --out models/infernode-code-draft-f16.gguf
cp "$WORK/data/tokenizer.model" models/tokenizer.model

# the model tests' fixture, then the numbers of models/README.md
$PY tools/train/make_test_cases.py --data "$WORK/data" --out tests/model/model_cases.json
$PY tools/train/evaluate.py --data "$WORK/data" --target models/infernode-code-target-f16.gguf \
    --draft models/infernode-code-draft-f16.gguf --infernode build/infernode --work "$WORK/eval" \
    --out "$WORK/results.json"
