"""Reasoning steps at the token level (step-level DAPO, docs/methods.md "Direct Advantage Policy
Optimization").

A response splits into steps at newlines. Byte-level BPE tokenizers (SmolLM2's among them) merge "\n" with
neighbouring whitespace ("\n\n", " \n"), so the split is made between tokens: a step ends with a token
whose text contains a newline, or with the last of a run of them (such a token is whitespace only, the
pre-tokenizer never joins a newline to letters or digits), and whatever follows the last newline is the last
step. Concatenating the steps' token ids gives the response's ids back exactly, so decoding them gives its
text back. """
from __future__ import annotations

from typing import Sequence

_NEWLINES: dict[tuple[str, int], frozenset[int]] = {}


def newline_tokens(tokenizer) -> frozenset[int]:
    """Ids of every vocabulary token whose text contains a newline (computed once per vocabulary)."""
    key = (tokenizer.name_or_path, len(tokenizer))
    if key not in _NEWLINES:
        _NEWLINES[key] = frozenset(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))
    return _NEWLINES[key]


def split_steps(token_ids: Sequence[int], newline_ids: frozenset[int]) -> list[list[int]]:
    """The response's token ids cut after every run of tokens in `newline_ids` (a run such as "\n\n" + "\n"
    ends one step, it does not make an empty one; newlines before any text belong to the first step);
    trailing text is the last step. An empty response has no steps."""
    steps, cur, body = [], [], False
    ids = [int(t) for t in token_ids]
    for i, t in enumerate(ids):
        cur.append(t)
        body = body or t not in newline_ids
        if body and t in newline_ids and (i + 1 == len(ids) or ids[i + 1] not in newline_ids):
            steps.append(cur)
            cur, body = [], False
    if cur:
        steps.append(cur)
    return steps
