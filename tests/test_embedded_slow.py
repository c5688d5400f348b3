"""The real embedded model: one SFT step, LoRA and full, through the engine."""
import math

import pytest
import torch

from posttrain.config import TrainSettings
from posttrain.data.collate import pad_collate
from posttrain.data.template import encode_conversations
from posttrain.engine import Engine
from posttrain.methods.sft import SFTObjective
from posttrain.models import apply_lora, is_lora, load_model
from posttrain.tasks.synthetic import generate, to_sft_rows

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
