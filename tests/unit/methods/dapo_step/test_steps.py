"""Step-level DAPO's token-level steps on the real tokenizer (METHODS.md section 5)."""
from __future__ import annotations

import pytest

from posttrain.methods.dapo_step.steps import newline_tokens, split_steps
from tests.data_helpers import load_smollm2_tokenizer

TEXTS = [
    "Step 1: 3 + 4 = 7.\nStep 2: 7 * 2 = 14.\nThe answer is 14.",
    "First, add.\n\nThen multiply:  \n 5 * 6 = 30\n\n\nThe answer is 30.\n",
    "no newline at all",
    "\nstarts with one\r\nand a windows line\n \n  indented last",
    "trailing spaces after the newline\n   ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_steps_split_at_newline_tokens_and_reassemble_exactly(text):
    tok = load_smollm2_tokenizer()
    ids = tok.encode(text, add_special_tokens=False)
    nl = newline_tokens(tok)
    steps = split_steps(ids, nl)
    assert [t for s in steps for t in s] == ids  # exact round trip of the ids ...
    assert tok.decode([t for s in steps for t in s]) == text  # ... and of the text
    for s in steps[:-1]:
        assert "\n" in tok.decode([s[-1]])  # every step but the last ends with a newline token
        assert any(t not in nl for t in s)  # ... and holds more than newlines
    # a newline token is whitespace only: the cut never separates a newline from words
    assert all(tok.decode([t]).strip() == "" for t in nl if t < 1000)
    assert text.count("\n") >= len(steps) - 1


def test_steps_merge_runs_of_newlines_into_one_token_boundary():
    tok = load_smollm2_tokenizer()
    steps = split_steps(tok.encode("a\n\n\nb", add_special_tokens=False), newline_tokens(tok))
    assert [tok.decode(s) for s in steps] == ["a\n\n\n", "b"]
    assert split_steps([], newline_tokens(tok)) == []
    steps = split_steps(tok.encode("\n\nx\ny", add_special_tokens=False), newline_tokens(tok))
    assert [tok.decode(s) for s in steps] == ["\n\nx\n", "y"]  # leading newlines join the first step
