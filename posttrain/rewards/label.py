"""Label-match reward for classification as generation (RL4GLUE, docs/methods.md, NLU).

The policy answers inside ``<Judgement>...</Judgement>``; the prompt pre-fills the assistant turn with
``<Judgement>``, so a completion normally reads ``Positive</Judgement>``. The answer format and steps 1-3 of
the rule (reading the completion, :func:`posttrain.data.labels.judgement_prediction`) live in
:mod:`posttrain.data.labels`, beside the prompts that write the format; this module adds step 4, the score.

The rule (:func:`judgement_reward`), applied to one completion: steps 1-3 of
:mod:`posttrain.data.labels` read the stated label (the text before the first ``</Judgement>``, opening
tags removed, label words matched whole and case-insensitively, longer labels first); then

4. Exactly one label found → that label is the prediction: ``correct`` (default +1) if it is the gold
   label (case-insensitive), else ``wrong`` (default -1). None found, or two or more → **invalid**
   (default -3). This is the same for binary and 3-way tasks.

Where this differs from the official code (github.com/coder-qicao/RL4GLUE ``ppo.py``): the official
check is a case-sensitive substring test ("No" in "Not sure" counts as "No"; CB also accepts the
lower-case word), and for SST-2 it does not test for both words ("Positive" wins). Here every task uses
the whole-word, case-insensitive rule above, and both words present is always invalid, as the method
spec (docs/methods.md, NLU) states. STS-B (a regression reward) is not implemented.
"""
from __future__ import annotations

from typing import Any, Sequence

from posttrain.data.labels import check_labels, judgement_prediction
from posttrain.errors import DataError

__all__ = ["LabelReward", "judgement_reward"]


def judgement_reward(completion: str, gold: str, labels: Sequence[str], correct: float = 1.0,
                     wrong: float = -1.0, invalid: float = -3.0) -> float:
    """The RL4GLUE reward of one completion (see the module docstring for the exact rule)."""
    labels = check_labels(labels)
    gold_key = " ".join(str(gold).split()).lower()
    if not any(" ".join(lab.split()).lower() == gold_key for lab in labels):
        raise ValueError(f"gold label {gold!r} is not one of the label words {list(labels)!r}")
    pred = judgement_prediction(completion, labels)
    if pred is None:
        return float(invalid)
    return float(correct) if " ".join(pred.split()).lower() == gold_key else float(wrong)


class LabelMetaError(DataError, ValueError):
    """A meta entry the label reward needs is missing or malformed (both a DataError and a ValueError)."""


class LabelReward:
    """Reward ``label``: ``score(prompts, completions, meta)`` with ``meta[i] = {"label": gold word,
    "labels": [all label words]}`` (as :func:`posttrain.tasks.nlu.prompt_rows` writes them)."""

    name = "label"

    def __init__(self, correct: float = 1.0, wrong: float = -1.0, invalid: float = -3.0):
        self.correct, self.wrong, self.invalid = float(correct), float(wrong), float(invalid)

    def _meta(self, meta: Sequence[dict] | None, i: int, key: str) -> Any:
        if meta is None:
            raise LabelMetaError(f"reward 'label' needs meta[{i}]['{key}'], but meta is None", field=key)
        entry = meta[i]
        if not isinstance(entry, dict):
            raise LabelMetaError(f"reward 'label': meta[{i}] must be a dict, got {type(entry).__name__}",
                                 field=key)
        if entry.get(key) is None:
            have = ", ".join(sorted(map(str, entry))) or "none"
            raise LabelMetaError(f"reward 'label': meta[{i}] has no '{key}' (keys: {have})", field=key)
        return entry[key]

    def score(self, prompts: Sequence[str] | None, completions: Sequence[str],
              meta: Sequence[dict] | None = None) -> list[float]:
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"reward 'label': {len(prompts)} prompts but {len(completions)} completions")
        if meta is not None and len(meta) != len(completions):
            raise ValueError(f"reward 'label': {len(meta)} meta entries but {len(completions)} completions")
        out = []
        for i, completion in enumerate(completions):
            gold, labels = self._meta(meta, i, "label"), self._meta(meta, i, "labels")
            try:
                out.append(judgement_reward(completion, gold, labels, self.correct, self.wrong, self.invalid))
            except ValueError as e:
                raise LabelMetaError(f"reward 'label': meta[{i}]: {e}", field="label") from None
        return out
