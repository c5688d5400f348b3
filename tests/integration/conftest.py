"""Fixtures of the integration tier: the tiny model (tiny-llama, random weights, the real SmolLM2
tokenizer), built in this process."""
from __future__ import annotations

import pytest


@pytest.fixture
def tiny():
    """A fresh tiny-llama and its tokenizer, for a test that may change the model."""
    from posttrain.models import load_model
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """tiny-llama with seed 3 in eval mode, and its tokenizer, shared by a module's sampling tests (loaded
    with a private cache)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POSTTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
    from posttrain.models import load_model
    model, tok = load_model("tiny-llama", seed=3)
    yield model.eval(), tok
    mp.undo()
