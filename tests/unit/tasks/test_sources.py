"""Recipe data sources: `skip` + `limit` select a window of a data file (hold out its tail for
evaluation); NLU sources give prompt and SFT records."""
import json

import pytest

from posttrain.config import DataSource, NLUSource
from posttrain.tasks.sources import load_source
from tests.data_helpers import require_data


def test_skip_and_limit_select_a_window(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(10)))
    got = lambda **kw: [r.answer for r in load_source(DataSource(path=str(f), **kw), "prompt")]  # noqa: E731
    assert got(limit=3) == ["0", "1", "2"]
    assert got(skip=7) == ["7", "8", "9"]
    assert got(skip=2, limit=3) == ["2", "3", "4"]
    assert got(skip=9, limit=5) == ["9"]
    assert got(skip=12) == []


@pytest.mark.usefixtures("cache")
def test_nlu_sources_give_prompt_and_sft_records():
    require_data("superglue")
    prompts = load_source(DataSource(nlu=NLUSource(task="cb", split="validation", limit=5, shots=2)),
                          "prompt")
    assert len(prompts) == 5 and prompts[0].assistant_prefix == "<Judgement>"
    assert "assistant_prefix" not in prompts[0].meta
    assert prompts[0].meta["labels"] == ["Entailment", "Contradiction", "Neutral"]
    assert sum(m["role"] == "assistant" for m in prompts[0].prompt) == 2  # the two shots
    sft = load_source(DataSource(nlu=NLUSource(task="rte", split="train")), "sft")
    assert len(sft) == 32 and sft[0].messages[-1]["content"].startswith("<Judgement>")
    assert sft[0].assistant_prefix == "<Judgement>" and "assistant_prefix" not in sft[0].meta
    with pytest.raises(Exception, match="give exactly one"):
        DataSource(nlu=NLUSource(task="rte"), path="x.jsonl")
