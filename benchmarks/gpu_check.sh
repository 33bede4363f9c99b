#!/usr/bin/env bash
# The GPU check of the batched engine, as one prepared script (issue #4):
#   1. benchmarks/meta_step.py in full mode (20 tasks x 100 steps, batch 20): plain
#      sequential training, sequential Leap, batched Leap, batched + compiled Leap;
#   2. one full Omniglot Leap run (Table 3's budgets: 1000 meta-steps, validation every
#      100) with the batched, compiled engine, then its evaluation on the 10 test alphabets.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [OMNIGLOT_DIR]
#
# Without OMNIGLOT_DIR the benchmark uses random images of Omniglot's shapes and the
# full run is skipped. STAGES="bench run" (default) selects the parts. At most 6 small
# files land in OUT_DIR (the run directory itself stays in $RUN_DIR, default /tmp).
# Uses `python3` with src/ on the path, so it needs no install where torch is present.
# A CPU dry run of the plumbing: DEVICE=cpu BENCH_ARGS="--quick" TRAIN_ARGS="--meta-steps 1
# --meta-batch 2 --task-steps 2 --val-every 0 --eval-steps 2" bash benchmarks/gpu_check.sh OUT DIR
set -euo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [OMNIGLOT_DIR]}
data=${2:-}
stages=${STAGES:-bench run}
run_dir=${RUN_DIR:-/tmp/leap-omniglot-gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
device=${DEVICE:-cuda}

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")'
} | tee "$out/gpu.txt"

data_args=()
if [ -n "$data" ]; then data_args=(--data-dir "$data"); fi

if [[ " $stages " == *" bench "* ]]; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  "$py" benchmarks/meta_step.py --device "$device" "${data_args[@]}" --repeats "${REPEATS:-3}" \
    --warmup "${WARMUP:-1}" ${BENCH_ARGS:-} --json "$out/meta_step.json" | tee "$out/meta_step.txt"
fi

if [[ " $stages " == *" run "* ]]; then
  if [ -z "$data" ]; then
    echo "no OMNIGLOT_DIR: full run skipped" | tee -a "$out/gpu.txt"
    exit 0
  fi
  rm -rf "$run_dir"
  start=$(date +%s)
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
  "$py" -m leap train --benchmark omniglot --data-dir "$data" --method leap --device "$device" --engine batched \
    --out "$run_dir" --no-progress ${TRAIN_ARGS:-} 2>&1 | tee "$out/train.log"
  trained=$(date +%s)
  "$py" -m leap evaluate "$run_dir" --device "$device" --engine batched 2>&1 | tee -a "$out/train.log"
  echo "wall: train $((trained - start)) s, evaluate $(($(date +%s) - trained)) s" | tee -a "$out/train.log"
  cp "$run_dir/metrics.jsonl" "$run_dir/eval-test.json" "$out/"
fi
