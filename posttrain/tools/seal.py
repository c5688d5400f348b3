"""Seal-Tools-style scores: tool selection, parameter identification and content filling (P / R / F1).

After the Seal-Tools paper's ``calculate_score_ToolLearning`` (LLM_Evaluation/src/llm_tools/evaluation/
calculate.py in fairyshine/Seal-Tools), micro-averaged over a data set:

- format: the share of outputs that parse (:func:`posttrain.data.tool_calls.parse_calls` ``ok``); an output
  that does not parse counts its gold calls and parameters, and predicts nothing;
- tool selection: a predicted call is right when it is matched to a gold call of the same name;
  P = right / predicted calls, R = right / gold calls;
- parameter identification: over (call, parameter name) pairs of matched calls: a predicted parameter is
  right when its matched gold call has a parameter of that name; P over all predicted parameters (of all
  predicted calls), R over all gold parameters;
- content filling: as parameter identification, and the value must also equal the gold one, compared as
  ``str(value)`` as the paper's script does (so ``85`` equals ``"85"``) — the paper's "parameter" score.

One deviation, on purpose: matching is one to one. The paper's script matches every predicted call to the
first gold call of its name without using it up, so repeating a right call raises the count of right calls
past the gold count (recall above 1). Here each gold call is matched at most once; among the unused gold
calls of the same name a predicted call takes the one sharing most (name, value) parameters, the first on a
tie. Without repeated names the two agree (tested against a transcription of the paper's script).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

from posttrain.data.tool_calls import ParseResult, ToolCall


@dataclass
class SealCounts:
    examples: int = 0
    parsed: int = 0
    exact: int = 0          # outputs whose calls equal the gold calls (as a multiset, values as str)
    gold_calls: int = 0
    pred_calls: int = 0
    right_calls: int = 0
    gold_params: int = 0
    pred_params: int = 0
    right_names: int = 0
    right_values: int = 0

    def __add__(self, other: "SealCounts") -> "SealCounts":
        return SealCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def same_value(a, b) -> bool:
    return str(a) == str(b)


def _overlap(pred: ToolCall, gold: ToolCall) -> int:
    return sum(1 for k, v in pred.arguments.items()
               if k in gold.arguments and same_value(v, gold.arguments[k]))


def seal_counts(parsed: ParseResult, gold: Sequence[ToolCall]) -> SealCounts:
    """The counts of one example (module docstring)."""
    c = SealCounts(examples=1, gold_calls=len(gold), gold_params=sum(len(g.arguments) for g in gold))
    if not parsed.ok:
        return c
    c.parsed = 1
    used: set[int] = set()
    for call in parsed.calls:
        c.pred_calls += 1
        c.pred_params += len(call.arguments)
        same = [i for i, g in enumerate(gold) if i not in used and g.name == call.name]
        if not same:
            continue
        best = max(same, key=lambda i: (_overlap(call, gold[i]), -i))
        used.add(best)
        c.right_calls += 1
        g = gold[best]
        c.right_names += sum(1 for k in call.arguments if k in g.arguments)
        c.right_values += _overlap(call, g)
    full = c.right_values == c.gold_params == c.pred_params
    c.exact = int(c.right_calls == c.gold_calls == c.pred_calls and full)
    return c


def _prf(right: int, predicted: int, gold: int) -> dict:
    p = right / predicted if predicted else 0.0
    r = right / gold if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def seal_scores(c: SealCounts) -> dict:
    """Rates from summed counts: format, exact match, and P/R/F1 of the three levels."""
    n = max(c.examples, 1)
    return {"n": c.examples, "format_rate": c.parsed / n, "exact_match": c.exact / n,
            "tool_selection": _prf(c.right_calls, c.pred_calls, c.gold_calls),
            "parameter_identification": _prf(c.right_names, c.pred_params, c.gold_params),
            "content_filling": _prf(c.right_values, c.pred_params, c.gold_params)}
