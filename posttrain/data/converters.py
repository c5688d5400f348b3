"""Converters from real data formats to records. Each is ``fn(row, *, file, line, **options) -> record``
and raises DataError naming file, line and field for a row it cannot convert.

Formats (``FORMATS[(kind, name)]``):

| kind       | name              | row                                                                 |
|------------|-------------------|---------------------------------------------------------------------|
| sft        | messages          | ``{messages: [{role, content}, ...]}``                              |
| sft        | sharegpt          | ``{conversations: [{from: human/gpt/system, value}, ...]}``         |
| sft        | prompt_completion | ``{prompt: str or messages, completion: str or [assistant msg]}``   |
| sft        | gsm8k             | ``{question, answer}``; answer ends ``#### N``                      |
| sft        | math              | ``{problem, solution}`` (MATH; solution holds ``\\boxed{}``)         |
| sft        | alpaca            | ``{instruction, input?, output, system?, history?}``                |
| sft        | text              | ``{text}``: plain text, every token supervised (a TextRecord)       |
| preference | pairs             | ``{prompt, chosen, rejected}``, or chosen/rejected message lists    |
|            |                   | sharing a prefix (the "implicit prompt" form)                       |
| preference | hh-rlhf           | ``{chosen, rejected}`` dialogues ``\\n\\nHuman: ...\\n\\nAssistant: ...``|
| prompt     | prompt            | ``{prompt, answer?}``                                               |
| prompt     | messages          | ``{messages}``; a final assistant turn becomes the answer           |
| prompt     | gsm8k             | ``{question, answer}`` → answer N                                   |
| prompt     | math              | ``{problem, answer}`` or the last ``\\boxed{}`` of ``solution``      |
| prompt     | hh-rlhf           | ``{chosen, ...}`` → the dialogue before the final Assistant turn    |
| tool       | tool_messages     | ``{messages, tools}`` with ``tool`` messages                        |
|            |                   | (posttrain/data/tool_records.py)                                    |
| unpaired   | unpaired          | ``{prompt, completion, label: bool}`` (KTO's; no method takes it yet)|

Alpaca: the user turn is ``instruction``, followed by a blank line and ``input`` when ``input`` is not
empty; ``system`` (optional) is a first system message; ``history`` (optional) is earlier
``[[user, assistant], ...]`` turns placed before it; ``output`` is the assistant reply.

Unpaired rows (``prompt``, ``completion`` and ``label``) are detected for every kind and refused for
every kind but ``unpaired``: read as SFT they would train on the undesirable completions too (a boolean
``label`` is refused by ``prompt_completion`` even when the format is named).

GSM8K solutions: the ``<<a*b=c>>`` calculator notes are removed and the ``#### N`` line is replaced by a
final-answer line chosen by ``answer_style``: ``"answer_is"`` (default) → ``The answer is N.``,
``"boxed"`` → ``The answer is $\\boxed{N}$.``, ``"hash"`` → ``#### N`` (the original). N is written
without thousands separators (``1,080`` → ``1080``), the same string as ``PromptRecord.answer``.

HH-RLHF: both strings are split into turns at ``\\n\\nHuman:`` / ``\\n\\nAssistant:``; consecutive
segments of the same role (a reply split by a stray ``\\n\\nAssistant:``) are joined with a blank line;
turn contents are stripped. The prompt is every turn before the final Assistant turn and must be the
same in chosen and rejected; chosen/rejected are the final Assistant replies. Role words inside a turn
(e.g. a reply that starts "Human: ...") are kept verbatim. A row whose final reply is empty, whose two
dialogues differ before the final reply, or which does not end with an Assistant turn is invalid.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from posttrain.data.answers import gold_answer, last_boxed
from posttrain.data.records import (
    Conversation,
    PreferencePair,
    PromptRecord,
    TextRecord,
    UnpairedPreference,
    as_prompt,
    as_response,
    extra_meta,
    require_field,
    validate_messages,
)
from posttrain.data.tool_records import ToolConversation
from posttrain.errors import DataError

# ---------------------------------------------------------------- helpers


def _str_field(row: dict, key: str, file, line) -> str:
    value = require_field(row, key, file, line)
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {'null' if value is None else type(value).__name__}",
                        file=file, line=line, field=key)
    if not value.strip():
        raise DataError("empty string", file=file, line=line, field=key)
    return value


# ---------------------------------------------------------------- GSM8K

_CALC = re.compile(r"<<[^<>]*>>")
ANSWER_STYLES = ("answer_is", "boxed", "hash")


def gsm8k_final_answer(answer: str) -> str:
    """The number after the last ``####``, without thousands separators; ValueError when there is none."""
    n = gold_answer(answer) if "####" in answer else ""
    if not n:
        raise ValueError("no final answer line '#### N'")
    return n.replace(",", "")


def final_answer_line(n: str, style: str = "answer_is") -> str:
    if style == "answer_is":
        return f"The answer is {n}."
    if style == "boxed":
        return f"The answer is $\\boxed{{{n}}}$."
    if style == "hash":
        return f"#### {n}"
    raise ValueError(f"unknown answer_style {style!r}; expected one of {', '.join(ANSWER_STYLES)}")


def clean_gsm8k_solution(answer: str, style: str = "answer_is") -> str:
    """Remove ``<<...>>`` calculator notes and end with the final-answer line of ``style``."""
    n = gsm8k_final_answer(answer)
    body = _CALC.sub("", answer[:answer.rindex("####")]).rstrip()
    line = final_answer_line(n, style)
    return f"{body}\n{line}" if body else line


def _gsm8k_parts(row, file, line, style="answer_is"):
    question = _str_field(row, "question", file, line)
    answer = _str_field(row, "answer", file, line)
    try:
        solution = clean_gsm8k_solution(answer, style)
        n = gsm8k_final_answer(answer)
    except ValueError as e:
        raise DataError(str(e), file=file, line=line, field="answer") from None
    return question, solution, n


def gsm8k_to_conversation(row: dict, *, file=None, line=None,
                          answer_style: str = "answer_is") -> Conversation:
    question, solution, n = _gsm8k_parts(row, file, line, answer_style)
    meta = {"answer": n, **extra_meta(row, ("question", "answer"), file, line)}
    return Conversation([{"role": "user", "content": question}, {"role": "assistant", "content": solution}],
                        meta, file=file, line=line)


def gsm8k_to_prompt(row: dict, *, file=None, line=None) -> PromptRecord:
    question, _, n = _gsm8k_parts(row, file, line)
    return PromptRecord(question, n, extra_meta(row, ("question", "answer"), file, line), file=file,
                        line=line)


# ---------------------------------------------------------------- MATH


def math_to_conversation(row: dict, *, file=None, line=None) -> Conversation:
    problem = _str_field(row, "problem", file, line)
    solution = _str_field(row, "solution", file, line)
    return Conversation([{"role": "user", "content": problem}, {"role": "assistant", "content": solution}],
                        extra_meta(row, ("problem", "solution"), file, line), file=file, line=line)


def math_to_prompt(row: dict, *, file=None, line=None) -> PromptRecord:
    problem = _str_field(row, "problem", file, line)
    if "answer" in row:
        answer = row["answer"]
    else:
        answer = last_boxed(_str_field(row, "solution", file, line))
        if answer is None:
            raise DataError("no 'answer' field and no \\boxed{} in the solution", file=file, line=line,
                            field="solution")
    return PromptRecord(problem, answer, extra_meta(row, ("problem", "answer"), file, line), file=file,
                        line=line)


# ---------------------------------------------------------------- generic chat formats


def messages_to_conversation(row: dict, *, file=None, line=None) -> Conversation:
    return Conversation.from_row(row, file=file, line=line)


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "system": "system"}


def sharegpt_to_conversation(row: dict, *, file=None, line=None) -> Conversation:
    turns = require_field(row, "conversations", file, line)
    if not isinstance(turns, list):
        raise DataError(f"expected a list, got {type(turns).__name__}", file=file, line=line,
                        field="conversations")
    msgs = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise DataError("expected {from, value}", file=file, line=line, field=f"conversations[{i}]")
        role = _SHAREGPT_ROLES.get(t["from"])
        if role is None:
            raise DataError(f"unknown speaker {t['from']!r}; allowed: {', '.join(_SHAREGPT_ROLES)}",
                            file=file, line=line, field=f"conversations[{i}].from")
        msgs.append({"role": role, "content": t["value"]})
    return Conversation(msgs, extra_meta(row, ("conversations",), file, line), file=file, line=line)


def prompt_completion_to_conversation(row: dict, *, file=None, line=None) -> Conversation:
    if isinstance(row.get("label"), bool):  # KTO's rows even when format is named: never SFT on them
        raise unpaired_refusal("sft", file=file, line=line)
    prompt = as_prompt(require_field(row, "prompt", file, line), fld="prompt", file=file, line=line)
    reply = as_response(require_field(row, "completion", file, line), fld="completion", file=file, line=line)
    return Conversation(prompt + [{"role": "assistant", "content": reply}],
                        extra_meta(row, ("prompt", "completion"), file, line), file=file, line=line)


def _optional_str(row: dict, key: str, file, line) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", file=file, line=line, field=key)
    return value


def alpaca_to_conversation(row: dict, *, file=None, line=None) -> Conversation:
    """``{instruction, input?, output, system?, history?: [[user, assistant], ...]}`` (module doc)."""
    instruction = _str_field(row, "instruction", file, line)
    extra = _optional_str(row, "input", file, line)
    output = _str_field(row, "output", file, line)
    system = _optional_str(row, "system", file, line)
    msgs = [{"role": "system", "content": system}] if system.strip() else []
    history = row.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise DataError(f"expected a list of [user, assistant] pairs, got {type(history).__name__}",
                            file=file, line=line, field="history")
        for i, turn in enumerate(history):
            if (not isinstance(turn, (list, tuple)) or len(turn) != 2
                    or not all(isinstance(t, str) for t in turn)):
                raise DataError("expected a [user, assistant] pair of strings", file=file, line=line,
                                field=f"history[{i}]")
            msgs += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Conversation(msgs, extra_meta(row, ("instruction", "input", "output", "system", "history"),
                                         file, line), file=file, line=line)


def text_to_record(row: dict, *, file=None, line=None) -> TextRecord:
    return TextRecord.from_row(row, file=file, line=line)


def unpaired_to_record(row: dict, *, file=None, line=None) -> UnpairedPreference:
    return UnpairedPreference.from_row(row, file=file, line=line)


def messages_to_prompt(row: dict, *, file=None, line=None) -> PromptRecord:
    msgs = validate_messages(require_field(row, "messages", file, line), file=file, line=line)
    answer = None
    if msgs[-1]["role"] == "assistant":
        answer = msgs.pop()["content"]
    return PromptRecord(msgs, answer, extra_meta(row, ("messages",), file, line), file=file, line=line)


def prompt_to_prompt(row: dict, *, file=None, line=None) -> PromptRecord:
    return PromptRecord.from_row(row, file=file, line=line)


def pairs_to_pair(row: dict, *, file=None, line=None) -> PreferencePair:
    """``{prompt, chosen, rejected}``; without ``prompt``, chosen and rejected may be full message lists
    that share every message but the last (assistant) one."""
    if "prompt" in row or not (isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list)):
        return PreferencePair.from_row(row, file=file, line=line)
    chosen = validate_messages(row["chosen"], fld="chosen", file=file, line=line)
    rejected = validate_messages(row["rejected"], fld="rejected", file=file, line=line)
    if chosen[:-1] != rejected[:-1]:
        raise DataError("without a 'prompt' field, chosen and rejected must share all messages but the last",
                        file=file, line=line, field="rejected")
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"expected role 'assistant', got {msgs[-1]['role']!r}", file=file, line=line,
                            field=f"{name}[{len(msgs) - 1}].role")
    if len(chosen) < 2:
        raise DataError("no prompt: chosen has only the reply", file=file, line=line, field="prompt")
    return PreferencePair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"],
                          extra_meta(row, ("chosen", "rejected"), file, line), file=file, line=line)


# ---------------------------------------------------------------- HH-RLHF

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_dialogue(text: str) -> list[dict]:
    """Split an HH-RLHF dialogue into messages (user/assistant), joining consecutive same-role segments.

    Contents are stripped; an empty content stays empty (the record types reject it with a field name).
    ValueError if there is text before the first turn or no turn at all.
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    if len(parts) < 3:
        raise ValueError("no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    msgs: list[dict] = []
    for word, content in zip(parts[1::2], parts[2::2]):
        role = "user" if word == "Human" else "assistant"
        content = content.strip()
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] = "\n\n".join(c for c in (msgs[-1]["content"], content) if c)
        else:
            msgs.append({"role": role, "content": content})
    return msgs


def _hh_split(row, file, line, key):
    text = _str_field(row, key, file, line)
    try:
        msgs = parse_hh_dialogue(text)
    except ValueError as e:
        raise DataError(str(e), file=file, line=line, field=key) from None
    if msgs[-1]["role"] != "assistant":
        raise DataError("the dialogue does not end with an Assistant turn", file=file, line=line, field=key)
    if not msgs[-1]["content"]:
        raise DataError("empty response (the final Assistant turn is empty)", file=file, line=line, field=key)
    if len(msgs) < 2:
        raise DataError("no Human turn before the final Assistant turn", file=file, line=line, field=key)
    return msgs[:-1], msgs[-1]["content"]


def hh_rlhf_to_pair(row: dict, *, file=None, line=None) -> PreferencePair:
    prompt_c, chosen = _hh_split(row, file, line, "chosen")
    prompt_r, rejected = _hh_split(row, file, line, "rejected")
    if prompt_c != prompt_r:
        k = next((i for i, (a, b) in enumerate(zip(prompt_c, prompt_r)) if a != b),
                 min(len(prompt_c), len(prompt_r)))
        raise DataError(f"chosen and rejected dialogues differ before the final reply (at turn {k + 1})",
                        file=file, line=line, field="rejected")
    return PreferencePair(prompt_c, chosen, rejected, extra_meta(row, ("chosen", "rejected"), file, line),
                          file=file, line=line)


def hh_rlhf_to_prompt(row: dict, *, file=None, line=None) -> PromptRecord:
    """The dialogue before the final Assistant turn of ``chosen``, for sampling (no reference answer)."""
    key = "chosen" if "chosen" in row else "prompt"
    text = _str_field(row, key, file, line)
    try:
        msgs = parse_hh_dialogue(text)
    except ValueError as e:
        raise DataError(str(e), file=file, line=line, field=key) from None
    if msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    if not msgs:
        raise DataError("no Human turn", file=file, line=line, field=key)
    return PromptRecord(msgs, None, extra_meta(row, ("chosen", "rejected", "prompt"), file, line), file=file,
                        line=line)


# ---------------------------------------------------------------- registry and detection

FORMATS: dict[tuple[str, str], Callable[..., Any]] = {
    ("sft", "messages"): messages_to_conversation,
    ("sft", "sharegpt"): sharegpt_to_conversation,
    ("sft", "prompt_completion"): prompt_completion_to_conversation,
    ("sft", "gsm8k"): gsm8k_to_conversation,
    ("sft", "math"): math_to_conversation,
    ("sft", "alpaca"): alpaca_to_conversation,
    ("sft", "text"): text_to_record,
    ("preference", "pairs"): pairs_to_pair,
    ("preference", "hh-rlhf"): hh_rlhf_to_pair,
    ("prompt", "prompt"): prompt_to_prompt,
    ("prompt", "messages"): messages_to_prompt,
    ("prompt", "gsm8k"): gsm8k_to_prompt,
    ("prompt", "math"): math_to_prompt,
    ("prompt", "hh-rlhf"): hh_rlhf_to_prompt,
    ("tool", "tool_messages"): ToolConversation.from_row,
    ("unpaired", "unpaired"): unpaired_to_record,
}

UNPAIRED_FIELDS = {"prompt", "completion", "label"}


def unpaired_refusal(kind: str, *, file: str | None = None, line: int | None = None) -> DataError:
    """The error for unpaired preference rows read as ``kind`` records: no current method takes them."""
    return DataError(f"rows {{prompt, completion, label}} are unpaired preference data (format 'unpaired', "
                     f"KTO's): no current method trains on them (this one wants {kind} records); method "
                     "kto (issue 35) will. To train SFT on the completions, drop the 'label' column or keep "
                     "only the desirable rows", file=file, line=line, field="format")


def _is_hh(row: dict) -> bool:
    return isinstance(row.get("chosen"), str) and "\n\nAssistant:" in row["chosen"]


def detect_format(row: dict, kind: str, *, file: str | None = None, line: int | None = None) -> str:
    """Pick a format name from a row's fields; DataError listing the fields when nothing fits."""
    keys = set(row) if isinstance(row, dict) else set()
    if UNPAIRED_FIELDS <= keys:
        if kind == "unpaired":
            return "unpaired"
        raise unpaired_refusal(kind, file=file, line=line)
    rules = {
        "sft": [({"messages"}, "messages"), ({"conversations"}, "sharegpt"),
                ({"prompt", "completion"}, "prompt_completion"), ({"question", "answer"}, "gsm8k"),
                ({"problem", "solution"}, "math"), ({"instruction", "output"}, "alpaca"),
                ({"text"}, "text")],
        "preference": [({"prompt", "chosen", "rejected"}, "pairs")],
        "prompt": [({"prompt"}, "prompt"), ({"messages"}, "messages"), ({"question", "answer"}, "gsm8k"),
                   ({"problem"}, "math")],
        "tool": [({"messages", "tools"}, "tool_messages")],
        "unpaired": [],
    }[kind]
    for need, name in rules:
        if need <= keys:
            return name
    if kind in ("preference", "prompt") and {"chosen"} <= keys and _is_hh(row):
        return "hh-rlhf"
    if kind == "preference" and {"chosen", "rejected"} <= keys:
        return "pairs"
    known = sorted(f for k, f in FORMATS if k == kind)
    raise DataError(f"cannot tell the format of {kind} data from fields {sorted(map(str, keys))}; "
                    f"name it with the source's `format:` (one of {', '.join(known)})", file=file, line=line)
