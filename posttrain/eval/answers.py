"""Light, dependency-free final-answer extraction and comparison for evaluation.

``extract_answer`` looks, in priority order, for the last balanced ``\\boxed{...}``, a GSM8K ``#### N``
line, the last "The answer is N" / "answer: N", and otherwise the last number in the text. Numbers come
back canonical: ``"1,234.50"`` -> ``"1234.5"``, ``"$12."`` -> ``"12"``, ``"-3.00"`` -> ``"-3"``.

``answers_match`` compares numerically where both sides parse as numbers (``"1/2"`` == ``"0.5"``) and as
normalised strings otherwise. Symbolic equivalence (``\\sqrt{2}/2`` vs ``1/\\sqrt{2}``) is left to the
math-verify based reward.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

__all__ = ["accuracy", "answers_match", "extract_answer", "is_correct", "normalize_answer"]

# A number: optional sign (not when glued to a preceding word/digit, so "3-5" is not "-5"), optional "$",
# digits with proper thousands groups or plain, optional decimals, or a simple fraction "3/4".
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?\$?"
    r"(?:\d+/\d+(?!\d|\.\d)|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
)
_ANSWER_PHRASE = re.compile(r"\banswer(?:\s+is\b|\s*:|\s*=)", re.IGNORECASE)
_GSM8K = re.compile(r"####\s*([^\n]*)")
_FRAC_TEX = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}")
_TEXT_TEX = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")


def _canonical_number(s: str) -> str | None:
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
    """Canonical form of an answer string: numbers as in :func:`extract_answer`, else trimmed text.

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
    num = _canonical_number(t)
    if num is not None:
        return num
    return t.rstrip(".").strip()


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces; one linear pass."""
    box_opens = {m.end() - 1 for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)}
    if not box_opens:
        return None
    stack: list[int] = []
    best: tuple[int, int] | None = None
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            j = stack.pop()
            if j in box_opens and (best is None or j > best[0]):
                best = (j, i)
    return text[best[0] + 1: best[1]] if best else None


def _first_number(s: str) -> str | None:
    m = _NUMBER.search(s)
    return _canonical_number(m.group(0)) if m else None


def extract_answer(text: str | None) -> str | None:
    """The final answer in a model output, canonicalised; None when there is none.

    Priority: last ``\\boxed{...}`` > last ``#### N`` > last "the answer is N" / "answer: N" > last number.
    """
    if not text:
        return None
    text = text.replace("\u2212", "-")
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return normalize_answer(boxed)
    for m in reversed(list(_GSM8K.finditer(text))):
        num = _first_number(m.group(1))
        if num is not None:
            return num
    for m in reversed(list(_ANSWER_PHRASE.finditer(text))):
        end = text.find("\n", m.end())
        num = _first_number(text[m.end(): end if end >= 0 else len(text)])
        if num is not None:
            return num
    numbers = _NUMBER.findall(text)
    return _canonical_number(numbers[-1]) if numbers else None


def _as_fraction(s: str) -> Fraction | None:
    t = normalize_answer(s)
    num = _canonical_number(t)
    if num is None:
        if not re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d{1,4}", t):  # scientific notation
            return None
        num = t
    try:
        return Fraction(num)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(pred: str | None, gold: str | None, *, rel_tol: float = 0.0) -> bool:
    """True when ``pred`` and ``gold`` are the same answer.

    Numbers compare exactly as fractions (``"0.5"`` == ``"1/2"`` == ``"0.50"``, ``"1,000"`` == ``"1000"``),
    or within ``rel_tol`` when given; anything else compares as text after normalisation (whitespace
    and case ignored).
    """
    if pred is None or gold is None:
        return False
    p, g = _as_fraction(str(pred)), _as_fraction(str(gold))
    if p is not None and g is not None:
        if p == g:
            return True
        return rel_tol > 0 and abs(p - g) <= rel_tol * max(abs(p), abs(g))
    norm = lambda s: re.sub(r"\s+", "", normalize_answer(str(s))).casefold()  # noqa: E731
    return norm(pred) == norm(gold)


def is_correct(completion: str | None, gold: str | None) -> bool:
    """Whether the answer extracted from ``completion`` matches ``gold``."""
    return answers_match(extract_answer(completion), gold)


def accuracy(completions: Sequence[str | None], golds: Sequence[str]) -> float:
    """Fraction of completions whose extracted answer matches its gold answer (0.0 for none)."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    if not golds:
        return 0.0
    return sum(is_correct(c, g) for c, g in zip(completions, golds)) / len(golds)
