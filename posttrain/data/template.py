"""Chat templating, loss masks and truncation.

Masks are built by rendering the conversation prefix by prefix with the tokenizer's own chat template:
for each assistant turn i, ``render(messages[:i], add_generation_prompt=True)`` ends right where the
reply starts, and ``render(messages[:i+1])`` right after it. The reply's tokens up to and including its
end-of-turn token (the last special token of the turn, e.g. ``<|im_end|>``) are supervised; everything
else (system, user, role headers such as ``<|im_start|>assistant\\n``, the newline after
``<|im_end|>``) gets label -100. This needs no ``{% generation %}`` markers, but it needs the template to
be *prefix-stable*: each rendered prefix must be a prefix of the full rendering. That is checked on
every example; a template that breaks it raises TemplateError. (A single token merged across the
boundary, e.g. ``"\\n" + "\\nHello"`` → ``"\\n\\n"``, is tolerated: it is counted in the reply.)

Truncation is prompt-first: a prompt (everything before the final reply) longer than
``max_prompt_length`` loses tokens from the LEFT (its end is kept); then the reply is cut from the right
to fit ``max_length``. A reply is never dropped silently: if fewer than ``min_response_tokens`` of it
fit, the example raises DataError, or with ``on_overflow="skip"`` is dropped and counted.

An ``assistant_prefix`` (see :mod:`posttrain.data.records`) is text given at the start of the final reply:
:func:`encode_prompt` appends it after the generation prompt, and :func:`encode_conversation` supervises
only what follows it in the final reply, the prefix counting as prompt for truncation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

from posttrain.errors import DataError, PosttrainError

log = logging.getLogger("posttrain.data")

IGNORE_INDEX = -100
_MERGE_TOLERANCE = 2  # tokens a boundary merge may swallow before we call the template unstable


class TemplateError(PosttrainError):
    """The tokenizer's chat template cannot be used to build masks (missing, or not prefix-stable)."""


@dataclass
class TruncationStats:
    """Counts over a run of encode_* calls (pass the same object to each)."""
    examples: int = 0
    truncated: int = 0          # examples that lost any token
    prompt_truncated: int = 0   # ... from the left of the prompt
    response_truncated: int = 0  # ... from the right of a reply
    skipped: int = 0            # dropped with on_overflow="skip"

    def __str__(self) -> str:
        return (f"{self.examples} examples: {self.truncated} truncated ({self.prompt_truncated} prompt, "
                f"{self.response_truncated} response), {self.skipped} skipped")


# ---------------------------------------------------------------- rendering


def render(tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages`` (no tokenization)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template")
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _tok(tokenizer, text: str) -> list[int]:
    # The template already wrote any BOS it wants; adding special tokens again would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _prefix_len(part: Sequence[int], full: Sequence[int], what: str) -> int:
    n = _common_prefix(part, full)
    if n < len(part) - _MERGE_TOLERANCE:
        raise TemplateError(f"chat template is not prefix-stable: the tokens of {what} are not a prefix "
                            f"of the tokens of the whole conversation (they differ at token {n} of "
                            f"{len(part)}); assistant masks cannot be built by prefix rendering")
    return n


def _check_text_prefix(part: str, full: str, what: str) -> None:
    if not full.startswith(part):
        n = _common_prefix(part, full)
        raise TemplateError(
            f"chat template is not prefix-stable: {what} renders as text that is not a prefix of the whole "
            f"conversation (they differ at character {n}: {part[n:n + 40]!r} vs {full[n:n + 40]!r}); "
            "assistant masks cannot be built by prefix rendering")


def _reply_end(ids: Sequence[int], start: int, stop: int, special: set[int]) -> int:
    """End (exclusive) of a reply in ids[start:stop]: just after its last special token (end of turn)."""
    for j in range(stop - 1, start - 1, -1):
        if ids[j] in special:
            return j + 1
    return stop


def assistant_spans(tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the whole conversation and the ``[start, end)`` token span of each assistant reply
    (content + end-of-turn token). Raises TemplateError if the template is not prefix-stable."""
    full_text = render(tokenizer, messages)
    ids = _tok(tokenizer, full_text)
    special = _special_ids(tokenizer)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        after = full_text if i == len(messages) - 1 else render(tokenizer, messages[:i + 1])
        _check_text_prefix(before, full_text, f"messages[:{i}] with the generation prompt")
        _check_text_prefix(after, full_text, f"messages[:{i + 1}]")
        start = _prefix_len(_tok(tokenizer, before), ids, f"messages[:{i}] with the generation prompt")
        stop = _prefix_len(_tok(tokenizer, after), ids, f"messages[:{i + 1}]")
        end = _reply_end(ids, start, stop, special)
        if end <= start:
            raise TemplateError(f"assistant message {i} renders to no tokens")
        spans.append((start, end))
    return ids, spans


# ---------------------------------------------------------------- truncation


def _check_args(max_length, max_prompt_length, min_response_tokens, on_overflow):
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    if max_prompt_length is not None and (not isinstance(max_prompt_length, int) or max_prompt_length < 0):
        raise ValueError(f"max_prompt_length must be a non-negative integer or None, "
                         f"got {max_prompt_length!r}")
    if not isinstance(min_response_tokens, int) or min_response_tokens < 1:
        raise ValueError(f"min_response_tokens must be an integer >= 1, got {min_response_tokens!r}")
    if on_overflow not in ("error", "skip"):
        raise ValueError(f"on_overflow must be 'error' or 'skip', got {on_overflow!r}")


def _overflow(n_prompt: int, room: int, *, max_length, min_response_tokens, file, line, fld):
    return DataError(
        f"the prompt takes {n_prompt} of max_length={max_length} tokens, leaving room for {max(room, 0)} "
        f"response token(s), fewer than min_response_tokens={min_response_tokens}; raise max_length, set "
        "max_prompt_length to truncate the prompt from the left, or pass on_overflow='skip'",
        file=file, line=line, field=fld)


def _fit(n_prompt: int, n_responses: Sequence[int], *, max_length, max_prompt_length, min_response_tokens,
         on_overflow, stats, file, line, fld) -> tuple[int, list[int]] | None:
    """How many prompt tokens to cut from the left and how many tokens of each reply to keep;
    None when the example overflows and on_overflow is "skip" (counted in stats)."""
    cut = max(0, n_prompt - max_prompt_length) if max_prompt_length is not None else 0
    room = max_length - (n_prompt - cut)
    keep = [min(n, room) for n in n_responses]
    if any(k < min(min_response_tokens, n) for k, n in zip(keep, n_responses)):
        if on_overflow == "skip":
            if stats is not None:
                stats.skipped += 1
            return None
        raise _overflow(n_prompt - cut, room, max_length=max_length, min_response_tokens=min_response_tokens,
                        file=file, line=line, fld=fld)
    return cut, keep


def _count(stats: TruncationStats | None, cut: int, resp_cut: bool) -> None:
    if stats is None:
        return
    stats.examples += 1
    stats.prompt_truncated += cut > 0
    stats.response_truncated += resp_cut
    stats.truncated += cut > 0 or resp_cut


# ---------------------------------------------------------------- assistant prefix


def _check_prefix_arg(assistant_prefix) -> None:
    if assistant_prefix is not None and (not isinstance(assistant_prefix, str) or not assistant_prefix):
        raise ValueError(f"assistant_prefix must be a non-empty string or None, got {assistant_prefix!r}")


def _prefilled_len(tokenizer, messages: list[dict], prefix: str, ids: Sequence[int], start: int,
                   file, line) -> int:
    """How many leading tokens of ``ids`` (the whole conversation) are the final reply's pre-filled
    prompt: everything before the reply, its generation prompt and ``prefix``. ``start`` is where the
    reply begins in ``ids``."""
    text = render(tokenizer, messages[:-1], add_generation_prompt=True) + prefix
    what = f"messages[:{len(messages) - 1}] with the generation prompt and the assistant prefix"
    _check_text_prefix(text, render(tokenizer, messages), what)
    # A token merged across the end of the prefix (e.g. a prefix ending mid-word) makes this shorter than
    # the prompt's own tokens; that token holds reply text too, so it is supervised, as a token merged at
    # the start of a reply is (module docstring).
    n = _prefix_len(_tok(tokenizer, text), ids, what)
    if n < start:
        raise DataError("the pre-filled prompt (generation prompt + assistant_prefix) does not tokenize as a "
                        "prefix of the conversation", file=file, line=line, field="messages")
    return n


# ---------------------------------------------------------------- public encoders


def encode_conversation(tokenizer, messages: Sequence[dict], *, max_length: int,
                        max_prompt_length: int | None = None, min_response_tokens: int = 1,
                        on_overflow: str = "error", stats: TruncationStats | None = None,
                        file: str | None = None, line: int | None = None,
                        assistant_prefix: str | None = None, final_only: bool = False) -> dict | None:
    """Tokenize a chat for SFT: ``{"input_ids", "labels"}`` with labels -100 on every token that is not
    assistant content or an assistant end-of-turn token; every assistant turn is supervised, or with
    ``final_only`` only the final one (one sample per turn: earlier turns are history).

    With ``assistant_prefix`` the final message must be an assistant reply starting with it (else
    DataError), and only the final reply's tokens after the prefix (and its end-of-turn token) are
    supervised: everything up to and including the prefix gets -100, earlier assistant turns (e.g. few-shot
    demonstrations) included, so the model is trained exactly where it generates after
    ``encode_prompt(messages[:-1], assistant_prefix=...)``: the unsupervised tokens are that prompt's.
    A token merged across the end of the prefix (the prefix ending mid-token) counts as supervised, so
    then the prompt's last token is not among them.

    The sequence ends with the final reply's end-of-turn token. The "prompt" for truncation is everything
    before the final reply (earlier replies included, and still supervised if kept), and with a prefix the
    prefix too. Returns None only when the example overflows and ``on_overflow="skip"``.
    """
    _check_args(max_length, max_prompt_length, min_response_tokens, on_overflow)
    _check_prefix_arg(assistant_prefix)
    messages = list(messages)
    if not any(m.get("role") == "assistant" for m in messages):
        raise DataError("no assistant turn: nothing to train on", file=file, line=line, field="messages")
    if assistant_prefix is not None and (messages[-1].get("role") != "assistant" or
                                         not str(messages[-1].get("content",
                                                                  "")).startswith(assistant_prefix)):
        raise DataError(f"with assistant_prefix {assistant_prefix!r} the last message must be an "
                        "assistant reply starting with it", file=file, line=line, field="messages")
    ids, spans = assistant_spans(tokenizer, messages)
    p, end = spans[-1]
    if assistant_prefix is None:
        labels = [IGNORE_INDEX] * len(ids)
        for s, e in spans[-1:] if final_only else spans:
            labels[s:e] = ids[s:e]
    else:
        p = _prefilled_len(tokenizer, messages, assistant_prefix, ids, p, file, line)
        labels = [IGNORE_INDEX] * p + ids[p:]
    ids, labels = ids[:end], labels[:end]  # nothing after the last end-of-turn is worth a position
    fit = _fit(p, [end - p], max_length=max_length, max_prompt_length=max_prompt_length,
               min_response_tokens=min_response_tokens, on_overflow=on_overflow, stats=stats,
               file=file, line=line, fld="messages")
    if fit is None:
        return None
    cut, (keep,) = fit
    _count(stats, cut, keep < end - p)
    stop = p + keep
    return {"input_ids": ids[cut:stop], "labels": labels[cut:stop]}


def encode_prompt(tokenizer, messages: Sequence[dict], *, max_length: int | None = None,
                  assistant_prefix: str | None = None) -> list[int]:
    """Prompt ids ending with the generation prompt (e.g. ``<|im_start|>assistant\\n``), for sampling;
    with ``assistant_prefix``, then the prefix, which the model continues (the rendered text and the
    prefix are tokenized as one string, as the prefix is tokenized inside a whole conversation).
    With ``max_length``, a longer prompt keeps its last ``max_length`` tokens."""
    _check_prefix_arg(assistant_prefix)
    ids = _tok(tokenizer, render(tokenizer, messages, add_generation_prompt=True) + (assistant_prefix or ""))
    if max_length is not None and len(ids) > max_length:
        ids = ids[len(ids) - max_length:]
    return ids


def encode_record_prompt(tokenizer, record, *, max_length: int | None = None) -> list[int]:
    """A PromptRecord's sampling prompt: with ``prefix_ids``, the generation prompt's ids followed by those
    exact ids (never re-tokenized); else :func:`encode_prompt` with its ``assistant_prefix``."""
    ids = getattr(record, "prefix_ids", None)
    if ids is None:
        return encode_prompt(tokenizer, record.prompt, max_length=max_length,
                             assistant_prefix=record.assistant_prefix)
    out = encode_prompt(tokenizer, record.prompt) + list(ids)
    return out[len(out) - max_length:] if max_length is not None and len(out) > max_length else out


def encode_pair(tokenizer, prompt_messages: Sequence[dict], chosen: str, rejected: str, *, max_length: int,
                max_prompt_length: int | None = None, min_response_tokens: int = 1,
                on_overflow: str = "error",
                stats: TruncationStats | None = None, file: str | None = None,
                line: int | None = None) -> dict | None:
    """Tokenize a preference pair: ``{"prompt_ids", "chosen_ids", "rejected_ids"}``.

    ``prompt_ids`` end with the generation prompt; each completion is the reply's tokens plus its
    end-of-turn token. ``prompt + chosen`` and ``prompt + rejected`` each fit ``max_length``.
    Returns None only when the pair overflows and ``on_overflow="skip"``.
    """
    _check_args(max_length, max_prompt_length, min_response_tokens, on_overflow)
    prompt_messages = list(prompt_messages)
    special = _special_ids(tokenizer)
    prompt_text = render(tokenizer, prompt_messages, add_generation_prompt=True)
    prompt_ids = _tok(tokenizer, prompt_text)
    fulls, starts = [], []
    for reply in (chosen, rejected):
        text = render(tokenizer, prompt_messages + [{"role": "assistant", "content": reply}])
        _check_text_prefix(prompt_text, text, "the prompt with the generation prompt")
        full = _tok(tokenizer, text)
        starts.append(_prefix_len(prompt_ids, full, "the prompt with the generation prompt"))
        fulls.append(full)
    p = min(starts)  # equal unless a token merged across the boundary
    prompt_ids = prompt_ids[:p]
    completions = [full[p:_reply_end(full, p, len(full), special)] for full in fulls]
    fit = _fit(p, [len(c) for c in completions], max_length=max_length, max_prompt_length=max_prompt_length,
               min_response_tokens=min_response_tokens, on_overflow=on_overflow, stats=stats,
               file=file, line=line, fld="prompt")
    if fit is None:
        return None
    cut, keep = fit
    _count(stats, cut, any(k < len(c) for k, c in zip(keep, completions)))
    return {"prompt_ids": prompt_ids[cut:], "chosen_ids": completions[0][:keep[0]],
            "rejected_ids": completions[1][:keep[1]]}


def _report(what: str, stats: TruncationStats) -> None:
    if stats.truncated or stats.skipped:
        log.warning("%s: %s", what, stats)


def encode_conversations(tokenizer, records: Iterable, *, max_length: int,
                         max_prompt_length: int | None = None,
                         min_response_tokens: int = 1,
                         on_overflow: str = "error") -> tuple[list[dict], TruncationStats]:
    """Encode many Conversations (or message lists); returns the features and the truncation counts.
    A Conversation's ``assistant_prefix`` applies to it (see :func:`encode_conversation`).
    Errors name the record's file and line."""
    stats, out = TruncationStats(), []
    for rec in records:
        msgs = rec if isinstance(rec, list) else rec.messages
        f = encode_conversation(tokenizer, msgs, max_length=max_length, max_prompt_length=max_prompt_length,
                                min_response_tokens=min_response_tokens, on_overflow=on_overflow, stats=stats,
                                file=getattr(rec, "file", None), line=getattr(rec, "line", None),
                                assistant_prefix=getattr(rec, "assistant_prefix", None))
        if f is not None:
            out.append(f)
    _report("SFT encoding", stats)
    return out, stats


def encode_pairs(tokenizer, pairs: Iterable, *, max_length: int, max_prompt_length: int | None = None,
                 min_response_tokens: int = 1,
                 on_overflow: str = "error") -> tuple[list[dict], TruncationStats]:
    """Encode many PreferencePairs; returns the features and the truncation counts."""
    stats, out = TruncationStats(), []
    for pair in pairs:
        f = encode_pair(tokenizer, pair.prompt, pair.chosen, pair.rejected, max_length=max_length,
                        max_prompt_length=max_prompt_length, min_response_tokens=min_response_tokens,
                        on_overflow=on_overflow, stats=stats, file=pair.file, line=pair.line)
        if f is not None:
            out.append(f)
    _report("preference encoding", stats)
    return out, stats
