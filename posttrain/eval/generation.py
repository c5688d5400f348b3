"""Accuracy of generated answers against gold answers on held-out prompts."""
from __future__ import annotations

from posttrain import distributed as dist
from posttrain.data.answers import extract_answer, grade
from posttrain.generation.chat import generate_chat


def answer_accuracy(model, tokenizer, prompts: list[list[dict]], golds: list[str], *,
                    max_new_tokens: int = 64, batch_size: int = 16) -> dict:
    """Greedy generation graded as the math reward grades it (:func:`grade`).

    Under several processes each rank generates its shard and every rank grades the whole list.
    Returns accuracy, the count, the rate of answerless completions and the samples (``pred``: the last
    committed answer, for reading; the verdict is ``correct``)."""
    completions = dist.map_sharded(lambda shard: generate_chat(model, tokenizer, shard,
                                                               max_new_tokens=max_new_tokens,
                                                               batch_size=batch_size), prompts)
    preds = [extract_answer(c) for c in completions]
    correct = [grade(c, g) for c, g in zip(completions, golds)]
    return {"accuracy": sum(correct) / max(len(correct), 1), "n": len(correct),
            "no_answer_rate": sum(p is None for p in preds) / max(len(preds), 1),
            "samples": [{"prompt": p[-1]["content"], "completion": c, "pred": pr, "gold": g, "correct": ok}
                        for p, c, pr, g, ok in zip(prompts, completions, preds, golds, correct)]}
