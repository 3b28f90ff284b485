#!/usr/bin/env bash
# The GPU check (issue 24, part 3): one script, under 8 minutes on one GPU, that records in
# benchmarks/RESULTS.md what a GPU changes:
#   1. cifar10_fast (24 epochs) in mixed_float16, XLA on and off: test accuracy, training seconds, images/s;
#   2. the same with distribute.strategy mirrored on the one GPU (XLA on) vs default;
#   3. cifar10_aug training images/s (2 epochs), default and mirrored;
#   4. the serving benchmark's concurrency-8 row (benchmarks/serving.py, on a 1-epoch mnist_lenet run).
# Without a GPU (nvidia-smi absent or listing no device) it says so and exits 0 at once, before Python.
#
#   benchmarks/gpu_check.sh                 # PYTHON (default .venv/bin/python), GPU_CHECK_BUDGET_S (default 450)
#   GPU_CHECK_EPOCHS=10 benchmarks/gpu_check.sh --no-record
#
# Every step runs under `timeout` within what is left of the budget; a step that does not fit, or fails,
# is recorded as such and the next one runs. Steps in order of importance, so a slow GPU still records 1.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu_check: no GPU here (nvidia-smi is missing or lists no device): nothing measured, RESULTS.md unchanged"
    exit 0
fi

PYTHON=${PYTHON:-.venv/bin/python}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
EPOCHS=${GPU_CHECK_EPOCHS:-24}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check-XXXXXX")
STARTED=$(date +%s)
QUIET=(--set export.enabled=false --set train.callbacks.tensorboard.enabled=false)
echo "gpu_check: $(nvidia-smi -L | head -1); work in $WORK; budget ${BUDGET_S}s"

step() {  # step NAME CAP_S COMMAND...: runs COMMAND with its output in $WORK/NAME.log, bounded by the budget
    local name=$1 cap=$2 left
    shift 2
    left=$((BUDGET_S - ($(date +%s) - STARTED)))
    if ((left < 20)); then
        echo "skipped: ${left}s of the budget left" >"$WORK/$name.status"
        echo "gpu_check: $name skipped (budget spent)"
        return
    fi
    ((cap > left)) && cap=$left
    echo "gpu_check: $name (at most ${cap}s)"
    local begin=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$cap" "$@" >"$WORK/$name.log" 2>&1
    local code=$?
    echo "exit $code after $(($(date +%s) - begin))s (cap ${cap}s)" >"$WORK/$name.status"
    tail -2 "$WORK/$name.log"
}

train() {  # train NAME EXPERIMENT CAP_S SETTINGS...
    local name=$1 experiment=$2 cap=$3
    shift 3
    step "$name" "$cap" "$PYTHON" -m pipeline train "$experiment" --run-dir "$WORK/$name" "${QUIET[@]}" "$@"
}

FAST=(--set train.epochs="$EPOCHS" --set train.mixed_precision=mixed_float16)
train fast_xla cifar10_fast 150 "${FAST[@]}" --set train.jit_compile=true --set distribute.strategy=default
train fast_noxla cifar10_fast 150 "${FAST[@]}" --set train.jit_compile=false --set distribute.strategy=default
train fast_mirrored cifar10_fast 150 "${FAST[@]}" --set train.jit_compile=true --set distribute.strategy=mirrored
AUG=(--set train.epochs=2 --set train.mixed_precision=mixed_float16 --set train.jit_compile=true)
train aug_default cifar10_aug 60 "${AUG[@]}" --set distribute.strategy=default
train aug_mirrored cifar10_aug 60 "${AUG[@]}" --set distribute.strategy=mirrored
if [[ -f benchmarks/serving.py ]]; then
    train serving_run mnist_lenet 40 --set train.epochs=1
    step serving 60 "$PYTHON" -m benchmarks.serving --run-dir "$WORK/serving_run" --concurrency 8 --requests 1000 \
        --no-record
else
    echo "skipped: benchmarks/serving.py is not in this checkout" >"$WORK/serving.status"
fi

"$PYTHON" -m benchmarks.gpu_report --work "$WORK" --epochs "$EPOCHS" --seconds $(($(date +%s) - STARTED)) "$@"
