"""tool_sft's objective on the tiny model: the weighted mean NLL of an independent forward."""
from __future__ import annotations

import pytest
import torch

from tests.data_helpers import load_smollm2_tokenizer

# ---- the method --------------------------------------------------------------------------------------


def test_tool_sft_objective_is_the_weighted_mean_nll_on_an_independent_forward(tool_recipe):
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models import load_model
    model, _ = load_model("tiny-llama", seed=1)
    tok = load_smollm2_tokenizer()
    recipe = tool_recipe("method.pkt=true")
    spec = get_method("tool_sft")
    built = spec.build(recipe, validate_section(spec.params, recipe.method, "method"), model, tok)
    batch = built.collate(built.train_data)
    loss_sum, _ = built.objective(model, batch)
    num = den = 0.0
    for f in built.train_data:
        logp = torch.log_softmax(model(torch.tensor([f["input_ids"]])).logits[0].double(), -1)
        for t in range(1, len(f["input_ids"])):
            if f["labels"][t] != -100:
                num += f["weights"][t] * -logp[t - 1, f["labels"][t]].item()
                den += f["weights"][t]
    assert built.objective.units(batch) == pytest.approx(den)
    assert loss_sum.item() / built.objective.units(batch) == pytest.approx(num / den, rel=1e-5)
    # key tokens weigh > 1
    assert den > sum(sum(x != -100 for x in f["labels"][1:]) for f in built.train_data)
