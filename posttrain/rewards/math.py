"""Verifiable math reward: the completion's final answer checked against the gold answer.

Extraction (:func:`extract_final_answer`), in priority order as :func:`posttrain.eval.extract_answer`:
the last balanced ``\\boxed{...}`` (kept as raw LaTeX, not number-normalised), the last GSM8K
``#### ...`` line, the last "the answer is ..." / "answer: ..." line, else the last number.

Equivalence (:func:`math_equal`): a cheap exact check first (:func:`posttrain.eval.answers_match`:
numbers as exact fractions, text after normalisation), then math-verify's symbolic check
(``verify(gold, pred)``, gold first: the check is not symmetric), which understands ``\\frac``/``\\dfrac``,
decimals, ``\\sqrt`` forms, intervals, sets, tuples, ``x = 5`` vs ``5``, percentages, degrees, units.
Gold answers may be a GSM8K solution (the part after the last ``####`` is used) or plain/LaTeX text.

Thread safety: math-verify's timeouts use ``signal.alarm``, which works only in the main thread (in
any other thread it raises). We pass the timeout only when running in the main thread and disable it
(``parsing_timeout=None``, ``timeout_seconds=None``) elsewhere, so scoring from worker threads works and
gives the same answers, but without a time limit there. If math-verify itself fails, the result of the
exact check stands.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import threading

from math_verify import parse, verify

from posttrain.errors import DataError, RecipeError
from posttrain.eval.answers import _canonical_number, _last_boxed, answers_match, extract_answer
from posttrain.rewards.base import check_batch, meta_value

__all__ = ["MathReward", "extract_final_answer", "gold_answer", "math_equal"]


class _DropTimeoutDisabledWarning(logging.Filter):
    """We disable math-verify's timeout on purpose in worker threads; its one-time warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _logger in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger).addFilter(_DropTimeoutDisabledWarning())

_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_PHRASE = re.compile(r"\banswer(?:\s+is\b|\s*:|\s*=)", re.IGNORECASE)
_INLINE_MATH = re.compile(r"\$([^$]+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?\$?(?:\d+/\d+(?!\d|\.\d)|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_LATEX_MARK = re.compile(r"[\\^_{}]")
_BASE = re.compile(r"([0-9A-Za-z]+)_\{?(\d+)\}?")  # 52_8, 2516_{8}: a number written in base 8


def _answer_segment(segment: str) -> str | None:
    """The answer in the rest of an "answer is ..." / "#### ..." line."""
    seg = segment.strip().lstrip(":=").strip().rstrip(".").strip()
    m = _INLINE_MATH.search(seg)
    if m:  # "the answer is $\frac{1}{2}$ dollars" -> \frac{1}{2}
        seg = next(g for g in m.groups() if g is not None).strip().rstrip(".").strip()
    if not seg:
        return None
    num = _canonical_number(seg)
    if num is not None:
        return num
    if _LATEX_MARK.search(seg):
        return seg
    found = _NUMBER.search(seg)  # "18 apples", "$18 in total"
    if found:
        return _canonical_number(found.group(0))
    return seg


def extract_final_answer(text: str | None) -> str | None:
    """The final answer of a completion as a string (raw LaTeX for boxed answers); None when none.

    ``"... \\boxed{\\frac{1}{2}}"`` -> ``"\\frac{1}{2}"``; ``"... #### 1,234"`` -> ``"1234"``;
    ``"The answer is $3\\sqrt{2}$."`` -> ``"3\\sqrt{2}"``; otherwise the last number, as
    :func:`posttrain.eval.extract_answer` gives it.
    """
    if not text:
        return None
    text = text.replace("\u2212", "-")
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for m in reversed(list(_GSM8K.finditer(text))):
        ans = _answer_segment(m.group(1))
        if ans is not None:
            return ans
    for m in reversed(list(_ANSWER_PHRASE.finditer(text))):
        end = text.find("\n", m.end())
        ans = _answer_segment(text[m.end(): end if end >= 0 else len(text)])
        if ans is not None:
            return ans
    return extract_answer(text)


def gold_answer(gold: str) -> str:
    """The answer part of a gold string: after the last ``####`` when present (GSM8K), else all of it."""
    gold = str(gold)
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1].split("\n", 1)[0]
    return gold.strip()


def _timeout_here(timeout: float | None) -> int | None:
    """math-verify's timeout for the current thread: signals work only in the main thread."""
    if timeout is None or timeout <= 0 or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout))


@functools.lru_cache(maxsize=8192)
def _parse(answer: str, timeout: int | None) -> list:
    return parse("\\boxed{" + answer + "}", parsing_timeout=timeout)


def _base_equal(pred: str, gold: str) -> bool | None:
    """Gold written in a base (``52_8``): digits must match, and the base too when pred gives one.

    math-verify drops the subscript (``52_8`` parses as 52, so ``52_9`` would match). None when gold
    is not in base notation.
    """
    g = _BASE.fullmatch(gold.replace(" ", ""))
    if not g or not 2 <= int(g.group(2)) <= 36:
        return None
    try:
        int(g.group(1), int(g.group(2)))
    except ValueError:  # x_1: a subscripted variable, not a base
        return None
    p = pred.replace(" ", "").replace("\\text{", "").replace("}_", "_")
    m = _BASE.fullmatch(p)
    digits, base = (m.group(1), m.group(2)) if m else (p, None)
    return digits.upper() == g.group(1).upper() and (base is None or int(base) == int(g.group(2)))


def math_equal(pred: str | None, gold: str | None, *, timeout: float | None = 5) -> bool:
    """Whether answer ``pred`` equals ``gold`` (plain, LaTeX, or a GSM8K solution ending ``#### N``).

    ``pred`` is an answer, not a whole completion (see :func:`extract_final_answer`). ``timeout`` is
    math-verify's per-step limit in seconds, applied in the main thread only (see the module notes).
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), gold_answer(gold)
    if not pred or not gold:
        return False
    if answers_match(pred, gold):
        return True
    based = _base_equal(pred, gold)
    if based is not None:
        return based
    t = _timeout_here(timeout)
    try:
        gold_parsed, pred_parsed = _parse(gold, t), _parse(pred, t)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=t))
    except Exception:  # math-verify failed: the exact check above stands
        return False


class MathReward:
    """``correct`` when the completion's final answer equals ``meta[i][answer_key]``, else ``wrong``.

    ``no_answer`` (default: ``wrong``) scores completions with no extractable answer, e.g. for a format
    penalty. ``timeout`` is math-verify's limit in seconds per step (main thread only; None disables).
    ``closeness`` > 0 gives a wrong numeric answer partial credit, ``wrong + closeness / (1 + |pred - gold|
    / (1 + |gold|))``: a dense shaping for small models whose candidates are mostly wrong (a 0/1 reward
    ties most pairs); correctness is still what ``correct`` pays for.
    """

    name = "math"

    def __init__(self, correct: float = 1.0, wrong: float = 0.0, no_answer: float | None = None,
                 timeout: float | None = 5, answer_key: str = "answer", closeness: float = 0.0):
        for label, v in (("correct", correct), ("wrong", wrong), ("no_answer", no_answer)):
            try:
                ok = (label == "no_answer" and v is None) or math.isfinite(float(v))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise RecipeError(f"reward 'math': {label} must be a finite number, got {v!r}")
        self.correct, self.wrong = float(correct), float(wrong)
        self.no_answer = self.wrong if no_answer is None else float(no_answer)
        self.timeout, self.answer_key = timeout, answer_key
        if not (math.isfinite(float(closeness)) and closeness >= 0):
            raise RecipeError(f"reward 'math': closeness must be >= 0, got {closeness!r}")
        self.closeness = float(closeness)

    def _partial(self, pred: str, gold: str) -> float:
        try:
            p, g = float(_canonical_number(pred) or "x"), float(_canonical_number(gold) or "x")
        except ValueError:
            return self.wrong
        return self.wrong + self.closeness / (1.0 + abs(p - g) / (1.0 + abs(g)))

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        check_batch(prompts, completions, meta, self.name, need_meta=True)
        scores = []
        for i, completion in enumerate(completions):
            gold = gold_answer(meta_value(meta, i, self.answer_key, self.name))
            if not gold:
                raise DataError(f"reward 'math': meta[{i}]['{self.answer_key}'] has no answer "
                                f"(empty, or nothing after '####')", field=self.answer_key)
            pred = extract_final_answer(completion)
            if pred is None:
                scores.append(self.no_answer)
            else:
                ok = math_equal(pred, gold, timeout=self.timeout)
                scores.append(self.correct if ok else self._partial(pred, gold) if self.closeness else self.wrong)
        return scores
