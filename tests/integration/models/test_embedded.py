"""The real embedded model (marked slow): its conversion into a fresh cache (~30 s), a fast load that
answers, and one SFT step, LoRA and full, through the engine."""
from __future__ import annotations

import math
import time

import pytest
import torch

from posttrain.config import TrainSettings
from posttrain.data.collate import pad_collate
from posttrain.data.template import encode_conversations
from posttrain.engine import Engine
from posttrain.methods.sft import SFTObjective
from posttrain.models import apply_lora, ensure_converted, ensure_tokenizer, is_lora, list_models, load_model
from posttrain.tasks.synthetic import generate, to_sft_rows
from tests.helpers import SMOL_SYSTEM, no_temp_folders

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_one_sft_step_on_the_embedded_model(tmp_path, lora):
    model, tok = load_model("smollm2-135m-instruct")
    if lora:
        model = apply_lora(model, r=8, alpha=16, targets="all-linear")
    rows = to_sft_rows(generate("arithmetic", 4, seed=0))
    feats, _ = encode_conversations(tok, rows_to_messages(rows), max_length=128)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainSettings(lr=1e-4, micro_batch_size=4, max_steps=1, warmup_steps=0)
    eng = Engine(model, SFTObjective(), feats, lambda b: pad_collate(b, tok.pad_token_id), cfg,
                 run_dir=tmp_path, show_progress=False)
    res = eng.train()
    loss = res.history[0]["loss"]
    # a pretrained chat model is far from uniform (ln 49152 = 10.8)
    assert math.isfinite(loss) and 0 < loss < 5
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed
    if lora:
        assert is_lora(model) and all("lora_" in n for n in changed)


def rows_to_messages(rows):
    return [r["messages"] for r in rows]


# ---------------------------------------------------------------- the real embedded model

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert the embedded model into a fresh cache, as on a first run."""
    cache = tmp_path_factory.mktemp("posttrain-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_CACHE", str(cache))
        start = time.perf_counter()
        folder = ensure_converted(progress=False)
        print(f"\nconversion: {time.perf_counter() - start:.1f} s")
        yield cache, folder


@pytest.mark.slow
def test_conversion_writes_a_complete_folder(converted):
    cache, folder = converted
    assert folder == cache / "models" / "smollm2-135m-instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "generation_config.json"):
        assert (folder / name).is_file(), name
    assert no_temp_folders(cache)
    assert ensure_converted() == folder  # second call reuses
    assert next(r for r in list_models() if r["kind"] == "embedded")["converted"]
    assert ensure_tokenizer() == folder  # the tokenizer comes from the converted folder


@pytest.mark.slow
def test_embedded_model_loads_fast_and_answers(converted):
    start = time.perf_counter()
    model, tok = load_model("smollm2-135m-instruct")
    seconds = time.perf_counter() - start
    print(f"\nload of the converted folder: {seconds:.2f} s")
    assert seconds < 10
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32 and model.lm_head.weight is model.model.embed_tokens.weight
    assert SMOL_SYSTEM in tok.chat_template and tok.pad_token_id is not None
    model.eval()
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
