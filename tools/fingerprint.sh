#!/usr/bin/env bash
# Behaviour fingerprint of small fixed runs of every benchmark and method, for refactors
# that must not change results (issue 13, point 6). Prints one line per run: the run's
# name, the sha256 of its init.safetensors and of its evaluation's numbers.
#
# usage: tools/fingerprint.sh [REPO] > before.txt    (REPO: the checkout to measure, default .)
# Needs ../shared/data (Omniglot, Multi-CV) and the rl extra; a missing part is skipped.
set -u
repo=$(cd "${1:-.}" && pwd)
data=${LEAP_DATA:-$repo/../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH=$repo/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
py=${PYTHON:-python}
leap() { "$py" -m leap "$@" >/dev/null 2>"$work/err" || { echo "FAILED: leap $*" >&2; cat "$work/err" >&2; return 1; }; }
digest() {  # NAME DIR RESULT_FILE KEYS...: hash of init.safetensors and of the listed result keys
  local name=$1 dir=$2 file=$3; shift 3
  local init=$(sha256sum "$dir/init.safetensors" 2>/dev/null | cut -c1-16)
  # Wall-clock fields ("seconds") are left out: they differ from run to run.
  local res=$("$py" -c '
import json, sys, hashlib
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k != "seconds"}
    return [strip(x) for x in v] if isinstance(v, list) else v
r = json.load(open(sys.argv[1]))
print(hashlib.sha256(json.dumps([strip(r.get(k)) for k in sys.argv[2:]]).encode()).hexdigest()[:16])' "$dir/$file" "$@")
  echo "$name init=${init:-none} result=$res"
}

only=${ONLY:-builtin omniglot multicv minatar}  # which parts to run

[[ " $only " == *" builtin "* ]] && for m in leap reptile fomaml maml finetune none; do
  for engine in sequential batched; do
    [ "$engine" = batched ] && { [ "$m" = maml ] || [ "$m" = finetune ] || [ "$m" = none ]; } && continue
    d=$work/builtin-$m-$engine
    leap train --method "$m" --engine "$engine" --meta-steps 3 --meta-batch 3 --task-steps 5 --eval-steps 5 \
      --val-every 2 --out "$d" --no-progress && leap evaluate "$d" &&
      digest "builtin/$m/$engine" "$d" eval-test.json test_errors curve
  done
done

if [[ " $only " == *" omniglot "* ]] && [ -d "$data/omniglot" ]; then
  for m in leap reptile fomaml maml finetune none; do
    d=$work/omniglot-$m
    leap train --benchmark omniglot --data-dir "$data/omniglot" --method "$m" --pretrain-tasks 3 --meta-steps 2 \
      --meta-batch 2 --task-steps 3 --eval-steps 3 --val-every 0 --out "$d" --no-progress && leap evaluate "$d" &&
      digest "omniglot/$m" "$d" eval-test.json test_errors curve
  done
fi

if [[ " $only " == *" multicv "* ]] && [ -d "$data/multicv" ]; then
  for m in leap finetune progressive hat none; do
    d=$work/multicv-$m
    leap train --benchmark multicv --data-dir "$data/multicv" --held-out mnist --method "$m" --meta-steps 2 \
      --meta-batch 2 --task-batch 8 --eval-batch 8 --max-epochs 0.05 --eval-epochs 0.05 --sample-cap 300 \
      --test-cap 100 --val-size 30 --out "$d" --no-progress &&
      digest "multicv/$m" "$d" result.json test_error
  done
fi

if [[ " $only " == *" minatar "* ]] && "$py" -c "import minatar" 2>/dev/null; then
  for m in leap reptile none; do
    d=$work/minatar-$m
    leap train --benchmark minatar --method "$m" --meta-steps 2 --eval-seeds 1 --eval-games breakout \
      --meta-batch 1 --task-steps 80 --task-batch 8 --unroll 5 --eval-steps 80 --eval-batch 8 --out "$d" \
      --no-progress && leap rl-eval "$d" --no-progress && digest "minatar/$m" "$d" rl-eval.json runs
  done
fi
