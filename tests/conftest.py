"""Fixtures shared by the tiers (tests/unit: no model; tests/integration: the tiny or the embedded model, in
one process; tests/distributed: several processes). Shared builders that are not fixtures live in
tests/helpers.py, tests/data_helpers.py, tests/rso_helpers.py and tests/synth_helpers.py."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def tokenizer_folder():
    """Build the tokenizer-only folder once, in whatever cache POSTTRAIN_CACHE names (CI: a fresh one)."""
    from posttrain.models import ensure_tokenizer
    return ensure_tokenizer()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache for the test: POSTTRAIN_CACHE is tmp_path/cache."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def in_tmp_path(cache, tmp_path, monkeypatch):
    """The test runs in tmp_path (its recipes name their data files relative to it), with a private
    cache."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# what `accelerate launch` and posttrain set to ask for DeepSpeed ZeRO or FSDP
LAUNCHER_ENV = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
                "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_USE_FSDP", "POSTTRAIN_ZERO_STAGE")


@pytest.fixture
def clean_launcher_env(monkeypatch):
    """None of the launcher's sharding variables is set."""
    for k in LAUNCHER_ENV:
        monkeypatch.delenv(k, raising=False)


# ---------------------------------------------------------------- tool_sft

TOOLS = [{"name": "get_weather", "description": "Weather now.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
         {"name": "get_time", "description": "Local time.",
          "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}]


def tool_conversation():
    """A conversation with tools: a call with a wrong argument, its error, the right call, its result, the
    answer."""
    from posttrain.data.tool_calls import ToolCall, format_calls
    bad = format_calls([ToolCall("get_weather", {"town": "Paris"})])
    good = format_calls([ToolCall("get_weather", {"city": "Paris"})])
    return {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": bad},
        {"role": "tool", "content": "TypeError: get_weather() got an unexpected keyword argument 'town'"},
        {"role": "assistant", "content": good},
        {"role": "tool", "content": json.dumps({"temp_c": 21})},
        {"role": "assistant", "content": "It is 21 degrees in Paris."}]}


@pytest.fixture
def tool_recipe(tmp_path, monkeypatch):
    """A tool_sft recipe on tool_conversation() (one step, the embedded model named, not loaded here):
    `tool_recipe(*overrides)` loads it."""
    from posttrain.config import load_recipe
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tools.jsonl").write_text(json.dumps(tool_conversation()) + "\n")
    (tmp_path / "r.yaml").write_text("name: t\nmethod: {name: tool_sft}\n"
                                     "model: {name: smollm2-135m-instruct}\n"
                                     "data: {train: {path: tools.jsonl}, max_length: 512}\n"
                                     "train: {max_steps: 1}\n")

    def make(*over):
        return load_recipe(tmp_path / "r.yaml", [f"output_dir={tmp_path}", *over])
    return make
