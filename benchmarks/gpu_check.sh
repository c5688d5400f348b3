#!/usr/bin/env bash
# GPU correctness (issue 20): every method for 2 steps on a random-initialised 0.49B Llama-shaped model in
# bf16 autocast on CUDA, then SFT and DPO launched with an FSDP config (one process: the engine only moves the model). One PASS / FAIL line each;
# the logs stay in $OUT. Budget: under 8 minutes on one GPU. Run from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# The cases are the CPU multi-process test's (tests/distributed/dist_methods_worker.py), with the model and precision
# overridden. Record the output in docs/results/scale.md.
# The tokenizer and environment: benchmarks/gpu_env.sh.
set -u
OUT=${1:-${OUT:-/tmp/gpu_check}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
MODEL=(model.name=random-llama-0.5b train.precision=bf16)
CASES=$("$PY" -c "from tests.distributed.dist_methods_worker import CASES; print(' '.join(CASES))")
fails=0
run_case() {  # name, then the command
  local name=$1; shift
  local t0=$SECONDS
  if timeout 240 "$@" > "$OUT/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - t0)) s)"
  else
    fails=$((fails + 1)); echo "FAIL $name ($((SECONDS - t0)) s): $(grep -E 'Error|error' "$OUT/$name.log" | tail -n 1)"
  fi
}
for c in $CASES; do
  run_case "$c" "$PY" tests/distributed/dist_methods_worker.py "$OUT/single" "$c" "${MODEL[@]}"
done
for c in sft dpo_live; do
  run_case "fsdp-$c" "$PY" -m accelerate.commands.launch --use_fsdp --fsdp_version 2 --num_processes 1 \
    --mixed_precision no tests/distributed/dist_methods_worker.py "$OUT/fsdp" "$c" "${MODEL[@]}"
done
echo "$fails failed"
exit $((fails > 0))
