"""Dev-set accuracy of classification-as-generation (`<Judgement>` prompts, docs/methods.md, NLU).

Greedy decoding after the pre-filled `<Judgement>`; the text up to `</Judgement>` is parsed by the
reward's rule (exactly one label word, else invalid); invalid counts as wrong.
"""
from __future__ import annotations

from posttrain.data.template import encode_prompt
from posttrain.generation.sampler import SamplingParams, sample
from posttrain.tasks.nlu import nlu_accuracy


def nlu_eval(model, tokenizer, records, *, max_new_tokens: int = 8, batch_size: int = 16,
             max_prompt_length: int | None = None, keep_samples: int = 20) -> dict:
    """{"accuracy", "invalid_rate", "n", "samples": first `keep_samples` (completion, gold)}."""
    ids = [encode_prompt(tokenizer, r.prompt, max_length=max_prompt_length,
                         assistant_prefix=r.assistant_prefix)
           for r in records]
    # no stop string: the parser reads up to the first </Judgement> and needs to see it
    out, stats = sample(model, tokenizer, ids, SamplingParams(temperature=0, max_new_tokens=max_new_tokens),
                        batch_size=batch_size)
    texts = [row[0].text for row in out]
    res = nlu_accuracy(texts, [r.meta for r in records])
    res["samples"] = [{"completion": t, "gold": r.meta.get("label")}
                      for t, r in zip(texts[:keep_samples], records)]
    res["seconds"] = round(stats.seconds, 1)
    return res
