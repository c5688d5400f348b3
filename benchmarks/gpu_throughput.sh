#!/usr/bin/env bash
# GPU training throughput (issue 21), under 8 minutes on one GPU: TRL's DPOTrainer vs posttrain, DPO pairs/s
# and model-FLOPs utilisation on random-initialised Llama-shaped models (random-llama-0.5b, -1.2b) in bf16
# autocast, 8 pairs of 128 prompt + 384 completion tokens (fixed-length random words), full fine-tune with a
# live frozen reference (the reference point in ../shared/GPU.md: TRL 29.8 pairs/s, 38% MFU at 1.23B on an
# H100), LoRA with the adapter-disabled reference at 1.2B; a bf16 8192^3 matmul timed in the same run is the
# MFU denominator. Every (model, config, library) runs in its own process (benchmarks/dpo_throughput.py);
# a last posttrain-only run at 1.2B on padded pair rows says whether its padding-free default pays on a GPU.
#   bash benchmarks/gpu_throughput.sh [OUT_DIR]          # from the repository root
# TRL is not on the GPU machine: carry its wheels in .whl/ (benchmarks/gpu_env.sh); without them only
# posttrain runs and the script says so. Record the tables in docs/results/throughput.md.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_throughput}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
IMPLS=trl,posttrain
if ! "$PY" -c "import trl" 2> /dev/null; then
  echo "TRL is not importable here: posttrain alone (carry trl and its needs in .whl/)"; IMPLS=posttrain
fi
status=0
bench() {  # model, configs
  echo "== $1: $2"
  timeout 200 "$PY" benchmarks/dpo_throughput.py --model "$1" --configs "$2" --impls "$IMPLS" --device cuda \
    --precision bf16 --lengths 128,384 --batch 8 --steps 5 --threads 8 --ceiling --hash-patch \
    --tmp "$OUT/runs" 2>&1 | tee "$OUT/$1-$2.log" | grep -v '^{"impl"' || status=1
}
bench random-llama-0.5b full-live
bench random-llama-1.2b full-live
bench random-llama-1.2b lora-live
# posttrain's pair layout on a GPU: its default (one padding-free row, two attention calls per pair) against
# one padded shared-prefix row per pair (one masked attention call per layer)
echo "== random-llama-1.2b: full-live, posttrain on padded rows"
timeout 120 "$PY" benchmarks/dpo_throughput.py --model random-llama-1.2b --configs full-live --impls posttrain \
  --device cuda --precision bf16 --lengths 128,384 --batch 8 --steps 5 --threads 8 --padded \
  --tmp "$OUT/runs" 2>&1 | tee "$OUT/random-llama-1.2b-full-live-padded.log" | grep -v '^{"impl"' || status=1
exit $status
