"""Final answers: extraction, gold parsing and grading. Evaluation, rewards and data converters all use it.

:func:`grade` decides whether a completion is right. The accuracy a run reports
(:func:`posttrain.eval.generation.answer_accuracy`, :func:`accuracy`) and the reward it trains on
(:class:`posttrain.rewards.math.MathReward`) both call it, so they cannot disagree.

The answer rule
---------------
A completion commits to final answers through its markers (:func:`final_answers`):

- every balanced ``\\boxed{...}`` / ``\\fbox{...}`` (the innermost when nested): its content;
- every ``#### ...`` line and every "answer is ..." / "answer: ..." / "answer = ..." phrase: the rest of its
  line. When another marker follows on the same line, the text before it only leads into that marker
  ("The answer is $2+3=\\boxed{5}$", "Final Answer: The final answer is 5") and commits to nothing itself.

A segment that offers alternatives commits to each of them: "3 or 4", "3 or maybe 4", "either 3 or 4",
``3 \\text{ or } 4``, "12 (or 12.0)" (two answers, both 12). Only the word "or" separates alternatives:
"3/4" is one fraction, "1, -2" one answer (a list). In a line segment each alternative's answer is its first
inline math, else all of it when it is a number or LaTeX, else its first number ("3 apples for 4 people" ->
3). Words alone commit to nothing ("so our answer is correct", the "so" of "3 or so"): a text answer must
be boxed or in math (``$\\text{Evelyn}$``). Only when no marker commits to anything is the last number in
the text the answer.

A completion is correct when it commits to at least one answer and every committed answer equals the gold:
"\\boxed{3} ... The answer is 3." is right; "\\boxed{3} ... the answer is 4" and "the answer is 3 or maybe
4" are wrong against 3. Naming several answers cannot buy a hit.

Equality
--------
:func:`answers_match` is the exact check: numbers as exact fractions (``"0.5"`` == ``"1/2"`` ==
``"0.50"``, ``"1,000"`` == ``"1000"``), text after normalisation. :func:`math_equal` tries it first, then
math-verify's symbolic check (``verify(gold, pred)``, gold first: it is not symmetric), which understands
``\\frac``, ``\\sqrt`` forms, intervals, sets, tuples, ``x = 5`` vs ``5``, percentages, degrees, units.
Gold answers may be a GSM8K solution (what follows its last ``####`` is used, :func:`gold_answer`).

math-verify's timeouts use ``signal.alarm``, which works only in the main thread (elsewhere it raises), so
the timeout is passed in the main thread only and switched off in others: scoring from worker threads gives
the same answers, without a time limit. If math-verify itself fails, the exact check's result stands.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import threading
from fractions import Fraction
from typing import Sequence

__all__ = ["accuracy", "answers_match", "canonical_number", "extract_answer", "final_answers", "gold_answer",
           "grade", "last_boxed", "math_equal", "normalize_answer"]


class _DropTimeoutDisabledWarning(logging.Filter):
    """We switch math-verify's timeout off on purpose in worker threads; its one-time warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _logger in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger).addFilter(_DropTimeoutDisabledWarning())

# A number: optional sign (not when glued to a preceding word/digit, so "3-5" is not "-5"), optional "$",
# digits with proper thousands groups or plain, optional decimals, or a simple fraction "3/4".
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?\$?"
    r"(?:\d+/\d+(?!\d|\.\d)|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
)
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LINE_MARKER = re.compile(r"####|\banswer(?:\s+is\b|\s*:|\s*=)", re.IGNORECASE)
_OR = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{\s*or\s*\}|\bor\b", re.IGNORECASE)
_INLINE_MATH = re.compile(r"\$([^$]+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_LATEX_MARK = re.compile(r"[\\^_{}]")
_ALNUM = re.compile(r"[^\W_]")
_FRAC_TEX = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}")
_TEXT_TEX = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_BASE = re.compile(r"([0-9A-Za-z]+)_\{?(\d+)\}?")  # 52_8, 2516_{8}: a number written in base 8


# ----------------------------------------------------------------------------------------- normal forms

def canonical_number(s: str) -> str | None:
    """``"-1,234.500"`` -> ``"-1234.5"``; ``"3/4"`` stays a fraction; None if ``s`` is not a number."""
    t = s.replace("\u2212", "-").replace("$", "").replace("\\%", "").replace("%", "").strip()
    t = re.sub(r"\s+", "", t)
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", t):
        t = t.replace(",", "")
    m = re.fullmatch(r"([-+]?)(\d*)(?:\.(\d*))?", t)
    if m and (m.group(2) or m.group(3)):
        sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
        out = whole + ("." + frac if frac else "")
        return ("-" + out) if sign == "-" and out != "0" else out
    m = re.fullmatch(r"([-+]?)(\d+)/(\d+)", t)
    if m and int(m.group(3)) != 0:
        return ("-" if m.group(1) == "-" else "") + f"{int(m.group(2))}/{int(m.group(3))}"
    return None


def normalize_answer(s: str) -> str:
    """Canonical form of an answer string: a canonical number when it is one, else trimmed text.

    Strips surrounding ``$``, ``\\text{}``-style wrappers, ``x =`` prefixes and a trailing period;
    turns ``\\frac{a}{b}`` with integer parts into ``a/b``.
    """
    t = s.replace("\u2212", "-").strip()
    t = _TEXT_TEX.sub(r"\1", t)
    t = _FRAC_TEX.sub(r"\1/\2", t)
    t = t.replace("\\!", "").replace("\\,", "").replace("\\ ", " ").replace("\\$", "$")
    t = t.strip().strip("$").strip()
    m = re.fullmatch(r"[A-Za-z]\w*\s*=\s*(.+)", t)
    if m:
        t = m.group(1).strip()
    num = canonical_number(t)
    if num is not None:
        return num
    return t.rstrip(".").strip()


# ----------------------------------------------------------------------------------------- extraction

def _boxes(text: str) -> list[tuple[int, int, int]]:
    """``(marker start, content start, content end)`` of every balanced innermost box, in text order."""
    opens = {m.end() - 1: m.start() for m in _BOX_OPEN.finditer(text)}
    if not opens:
        return []
    stack: list[int] = []
    found = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            j = stack.pop()
            if j in opens:
                found.append((opens[j], j + 1, i))
    # an outer box closes after its inner ones, so it holds one of the boxes found before it
    inner = [b for k, b in enumerate(found) if not any(b[1] <= o[0] and o[2] < b[2] for o in found[:k])]
    return sorted(inner)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed {...}``), braces balanced."""
    boxes = _boxes(text)
    return text[boxes[-1][1]: boxes[-1][2]] if boxes else None


def _line_answer(alternative: str) -> str | None:
    """The answer one alternative of an "answer is ..." / "#### ..." segment names; None when it names
    none."""
    seg = alternative.strip().lstrip(":=").strip().rstrip(".").strip()
    m = _INLINE_MATH.search(seg)
    if m:  # "the answer is $\frac{1}{2}$ dollars" -> \frac{1}{2}
        seg = next(g for g in m.groups() if g is not None).strip().rstrip(".").strip()
    if not _ALNUM.search(seg):
        return None
    num = canonical_number(seg)
    if num is not None:
        return num
    if _LATEX_MARK.search(seg):
        return seg
    found = _NUMBER.search(seg)  # "18 apples", "$18 in total"
    return canonical_number(found.group(0)) if found else None  # words alone: "the answer is correct"


def final_answers(text: str | None) -> list[str]:
    """Every answer ``text`` commits to, in text order (see the module notes); ``[]`` when none.

    Box contents come back as written (raw LaTeX); line answers as :func:`_line_answer` reads them, with
    numbers canonical: ``"#### 1,234"`` -> ``["1234"]``, ``"the answer is 3 or maybe 4"`` -> ``["3", "4"]``.
    """
    if not text:
        return []
    text = text.replace("\u2212", "-")
    boxes = _boxes(text)
    lines = [m for m in _LINE_MARKER.finditer(text) if not any(b[1] <= m.start() < b[2] for b in boxes)]
    starts = sorted([b[0] for b in boxes] + [m.start() for m in lines])
    segments = [(b[0], text[b[1]: b[2]], str.strip) for b in boxes]
    for m in lines:
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        if any(m.end() <= s < end for s in starts):
            continue  # a lead-in: the marker after it on this line speaks
        segments.append((m.start(), text[m.end(): end], _line_answer))
    answers = []
    for _, segment, read in sorted(segments, key=lambda s: s[0]):
        for alternative in _OR.split(segment):
            ans = read(alternative)
            if ans and _ALNUM.search(ans):
                answers.append(ans)
    if answers:
        return answers
    numbers = _NUMBER.findall(text)
    last = canonical_number(numbers[-1]) if numbers else None  # None for e.g. "5/0"
    return [last] if last is not None else []


def extract_answer(text: str | None) -> str | None:
    """The last answer ``text`` commits to, normalised (for reports); None when there is none.

    Not a verdict: a completion that commits to several answers is graded on all of them (:func:`grade`).
    """
    answers = final_answers(text)
    return normalize_answer(answers[-1]) if answers else None


def gold_answer(gold: str) -> str:
    """The answer part of a gold string: after the last ``####`` when present (GSM8K), else all of it."""
    gold = str(gold)
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1].split("\n", 1)[0]
    return gold.strip()


# ----------------------------------------------------------------------------------------- equality

def _as_fraction(s: str) -> Fraction | None:
    t = normalize_answer(s)
    num = canonical_number(t)
    if num is None:
        if not re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d{1,4}", t):  # scientific notation
            return None
        num = t
    try:
        return Fraction(num)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(pred: str | None, gold: str | None, *, rel_tol: float = 0.0) -> bool:
    """The exact check: ``pred`` and ``gold`` are the same number (as fractions, or within ``rel_tol``),
    or the same text after normalisation (whitespace and case ignored)."""
    if pred is None or gold is None:
        return False
    p, g = _as_fraction(str(pred)), _as_fraction(str(gold))
    if p is not None and g is not None:
        if p == g:
            return True
        return rel_tol > 0 and abs(p - g) <= rel_tol * max(abs(p), abs(g))
    norm = lambda s: re.sub(r"\s+", "", normalize_answer(str(s))).casefold()  # noqa: E731
    return norm(pred) == norm(gold)


def _timeout_here(timeout: float | None) -> int | None:
    """math-verify's timeout for the current thread: signals work only in the main thread."""
    if timeout is None or timeout <= 0 or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout))


# math-verify is imported on first use: it costs half a second and most importers (data) never compare.
@functools.lru_cache(maxsize=8192)
def _parse(answer: str, timeout: int | None) -> list:
    from math_verify import parse
    return parse("\\boxed{" + answer + "}", parsing_timeout=timeout)


def _verify(gold_parsed: list, pred_parsed: list, timeout: int | None) -> bool:
    from math_verify import verify
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


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

    ``pred`` is one answer, not a completion (see :func:`grade`). ``timeout`` is math-verify's per-step
    limit in seconds, applied in the main thread only (see the module notes).
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
        return bool(gold_parsed and pred_parsed) and _verify(gold_parsed, pred_parsed, t)
    except Exception:  # math-verify failed: the exact check above stands
        return False


# ----------------------------------------------------------------------------------------- grading

def grade(completion: str | None, gold: str | None, *, timeout: float | None = 5) -> bool:
    """Whether ``completion`` commits to at least one answer and every one equals ``gold``."""
    answers = final_answers(completion)
    return bool(answers) and all(math_equal(a, gold, timeout=timeout) for a in answers)


def accuracy(completions: Sequence[str | None], golds: Sequence[str]) -> float:
    """Fraction of completions :func:`grade` accepts against their gold answers (0.0 for none)."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    if not golds:
        return 0.0
    return sum(grade(c, g) for c, g in zip(completions, golds)) / len(golds)
