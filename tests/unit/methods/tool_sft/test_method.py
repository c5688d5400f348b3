"""The tool_sft method's per-turn samples: MAE drops the adverse turn, PKT weighs the key tokens."""
from __future__ import annotations

import pytest

from tests.data_helpers import load_smollm2_tokenizer

# ---- the method --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mae,pkt", [(False, False), (True, False), (False, True), (True, True)])
def test_tool_sft_samples_one_turn_each_mae_drops_the_adverse_turn_and_pkt_weighs(tool_recipe, mae, pkt):
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    tok = load_smollm2_tokenizer()
    recipe = tool_recipe(f"method.mae={str(mae).lower()}", f"method.pkt={str(pkt).lower()}")
    spec = get_method("tool_sft")
    params = validate_section(spec.params, recipe.method, "method")
    built = spec.build(recipe, params, None, tok)
    assert built.stats["turns"] == 3
    assert len(built.train_data) == (2 if mae else 3) and built.stats["adverse_turns_skipped"] == int(mae)
    for f in built.train_data:
        sup = [t for t, lab in zip(f["input_ids"], f["labels"]) if lab != -100]
        text = tok.decode(sup)
        assert text.count("<|im_end|>") == 1  # one assistant turn supervised, with its end-of-turn token
    trained = [tok.decode([t for t, lab in zip(f["input_ids"],
                                               f["labels"]) if lab != -100]) for f in built.train_data]
    assert any("town" in t for t in trained) != mae  # the adverse call is trained only without MAE
    last = built.train_data[-1]
    assert "town" in tok.decode(last["input_ids"])  # ... but it is history for the later turns either way
    if pkt:
        keyed = [tok.decode([t]) for f in built.train_data[:-1] for t, w in zip(f["input_ids"],
                                                                                f["weights"]) if w > 1]
        assert keyed[-2:] == ["get", "weather"]  # the call's key tokens: get_time shares "get", "_"
        assert all(w == 1.0 for w in built.train_data[-1]["weights"])  # a plain-text turn has no key token
        assert built.objective.normalization == "weights"
        batch = built.collate(built.train_data)
        assert built.objective.units(batch) > sum(len([x for x in f["labels"][1:] if x != -100])
                                                  for f in built.train_data)
    else:
        assert built.objective.normalization == "token" and "weights" not in built.train_data[0]
