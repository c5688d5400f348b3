"""Loss masks with the real SmolLM2 chat template, prefix-stability, and prompt-first truncation."""
from __future__ import annotations

import pytest

from posttrain.data import (
    IGNORE_INDEX,
    TemplateError,
    TruncationStats,
    encode_conversation,
    encode_conversations,
    encode_pair,
    encode_pairs,
    encode_prompt,
    load_records,
    render,
)
from posttrain.data.records import Conversation, PreferencePair, PromptRecord
from posttrain.data.template import encode_record_prompt
from posttrain.errors import DataError
from tests.data_helpers import load_smollm2_tokenizer, require_data

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
EOT = "<|im_end|>"


def supervised_segments(tok, feat):
    """Decoded runs of consecutive supervised tokens."""
    segs, cur = [], []
    for i, lab in zip(feat["input_ids"], feat["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == i
            cur.append(i)
        elif cur:
            segs.append(tok.decode(cur))
            cur = []
    if cur:
        segs.append(tok.decode(cur))
    return segs


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 is 4."}]
MULTI = CHAT + [{"role": "user", "content": "And times 3?"},
                {"role": "assistant", "content": "That makes 12.\nAnything else?"},
                {"role": "user", "content": "No"}, {"role": "assistant", "content": "Bye!"}]


@pytest.mark.parametrize("system", [None, "Answer briefly."])
def test_single_turn_mask(tok, system):
    msgs = ([{"role": "system", "content": system}] if system else []) + CHAT
    f = encode_conversation(tok, msgs, max_length=512)
    text = render(tok, msgs)
    assert (DEFAULT_SYSTEM in text) == (system is None)
    # The whole rendering (minus the newline after the last <|im_end|>) is the input.
    assert text.endswith(EOT + "\n") and f["input_ids"] == ids(tok, text[:-1])
    assert supervised_segments(tok, f) == ["2+2 is 4." + EOT]
    # Everything up to and including the role header is masked.
    n_prompt = len(encode_prompt(tok, msgs[:-1]))
    assert tok.decode(f["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n")
    assert all(lab == IGNORE_INDEX for lab in f["labels"][:n_prompt])
    assert all(lab != IGNORE_INDEX for lab in f["labels"][n_prompt:])


@pytest.mark.parametrize("system", [None, "Be kind."])
def test_multi_turn_mask(tok, system):
    msgs = ([{"role": "system", "content": system}] if system else []) + MULTI
    f = encode_conversation(tok, msgs, max_length=512)
    assert supervised_segments(tok, f) == [m["content"] + EOT for m in msgs if m["role"] == "assistant"]
    masked = tok.decode([i for i, lab in zip(f["input_ids"], f["labels"]) if lab == IGNORE_INDEX])
    for m in msgs:
        if m["role"] != "assistant":
            assert m["content"] in masked
    assert masked.count("<|im_start|>assistant\n") == 3


def test_template_must_be_prefix_stable(tok):
    original = tok.chat_template
    # Renders the number of messages first: no rendered prefix is a prefix of the whole conversation.
    tok.chat_template = ("{{ messages|length }}{% for m in messages %}"
                         "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    try:
        with pytest.raises(TemplateError,
                           match="chat template is not prefix-stable: messages\\[:1\\] with the "
                                                "generation prompt renders as text that is not a prefix"):
            encode_conversation(tok, CHAT, max_length=512)
        with pytest.raises(TemplateError, match="not prefix-stable"):
            encode_pair(tok, CHAT[:1], "a", "b", max_length=64)
    finally:
        tok.chat_template = original
    assert encode_conversation(tok, CHAT, max_length=512)["labels"][-1] != IGNORE_INDEX


def test_token_merged_across_the_boundary_is_tolerated(tok):
    original = tok.chat_template
    # The generation prompt ends with a space, which the tokenizer merges with the reply's first word
    # ("assistant " + "Hello" -> "assistant", " Hello"): text prefix-stable, tokens off by one.
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
    try:
        f = encode_conversation(tok, [{"role": "user", "content": "Hi"},
                                      {"role": "assistant", "content": "Hello there"}], max_length=64)
        p = encode_pair(tok, [{"role": "user", "content": "Hi"}], "Hello there", "Go", max_length=64)
    finally:
        tok.chat_template = original
    assert supervised_segments(tok, f) == [" Hello there" + EOT]
    assert (tok.decode(p["chosen_ids"]) == " Hello there" + EOT
            and tok.decode(p["rejected_ids"]) == " Go" + EOT)
    assert tok.decode(p["prompt_ids"]).endswith("<|im_start|>assistant")


def test_encode_prompt_and_pair(tok):
    p = encode_prompt(tok, CHAT[:1])
    assert tok.decode(p).endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert encode_prompt(tok, CHAT[:1], max_length=5) == p[-5:]
    f = encode_pair(tok, CHAT[:1], "It is 4.", "It is 5.", max_length=512)
    assert f["prompt_ids"] == p
    assert (tok.decode(f["chosen_ids"]) == "It is 4." + EOT
            and tok.decode(f["rejected_ids"]) == "It is 5." + EOT)
    # prompt + completion is exactly the tokenized full chat (minus the trailing newline).
    full = render(tok, CHAT[:1] + [{"role": "assistant", "content": "It is 4."}])
    assert f["prompt_ids"] + f["chosen_ids"] == ids(tok, full[:-1])


# ------------------------------------------------------------ assistant prefix


def test_encode_prompt_with_assistant_prefix(tok):
    p = encode_prompt(tok, CHAT[:1])
    pre = encode_prompt(tok, CHAT[:1], assistant_prefix="The answer is")
    assert pre == p + ids(tok, "The answer is")
    assert tok.decode(pre) == render(tok, CHAT[:1], add_generation_prompt=True) + "The answer is"
    assert encode_prompt(tok, CHAT[:1], max_length=5, assistant_prefix="The answer is") == pre[-5:]
    with pytest.raises(ValueError, match="assistant_prefix must be a non-empty string"):
        encode_prompt(tok, CHAT[:1], assistant_prefix="")


def test_encode_conversation_with_assistant_prefix_supervises_only_after_it(tok):
    msgs = MULTI[:-1] + [{"role": "assistant", "content": "The answer is 4."}]
    plain = encode_conversation(tok, msgs, max_length=512)
    f = encode_conversation(tok, msgs, max_length=512, assistant_prefix="The answer is")
    assert f["input_ids"] == plain["input_ids"]
    # earlier replies (e.g. demonstrations) are not supervised, nor the prefix
    assert supervised_segments(tok, f) == [" 4." + EOT]
    n = len(encode_prompt(tok, msgs[:-1], assistant_prefix="The answer is"))
    assert f["input_ids"][:n] == encode_prompt(tok, msgs[:-1], assistant_prefix="The answer is")
    assert all(lab == IGNORE_INDEX for lab in f["labels"][:n]) and f["labels"][n:] == f["input_ids"][n:]
    # a Conversation carries its prefix to encode_conversations
    conv = Conversation(msgs, assistant_prefix="The answer is", file="c.jsonl", line=3)
    feats, stats = encode_conversations(tok, [conv, Conversation(msgs)], max_length=512)
    assert feats == [f, plain] and stats.examples == 2
    with pytest.raises(DataError,
                       match="c.jsonl:3, field 'messages': with assistant_prefix 'The answer was' the "
                                        "last message must be an assistant reply starting with it"):
        encode_conversation(tok, msgs, max_length=512, assistant_prefix="The answer was", file="c.jsonl",
                            line=3)


def test_token_merged_across_the_prefix_is_supervised(tok):
    # "Hel" is its own token after the header, but inside the reply "Hello" is one token: that token
    # holds generated text, so it is supervised and the prompt's "Hel" token is not among the inputs.
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    f = encode_conversation(tok, msgs, max_length=64, assistant_prefix="Hel")
    assert supervised_segments(tok, f) == ["Hello there" + EOT]
    prompt = encode_prompt(tok, msgs[:1], assistant_prefix="Hel")
    assert f["input_ids"][:len(prompt) - 1] == prompt[:-1] and tok.decode(prompt[-1:]) == "Hel"


# ------------------------------------------------------------ truncation

LONG_USER = " ".join(f"word{i}" for i in range(60))
LONG_CHAT = [{"role": "user", "content": LONG_USER}, {"role": "assistant", "content": "Short reply here."}]


def test_prompt_is_truncated_from_the_left(tok):
    full = encode_conversation(tok, LONG_CHAT, max_length=1024)
    reply = len(ids(tok, "Short reply here." + EOT))
    n_prompt = len(full["input_ids"]) - reply
    stats = TruncationStats()
    f = encode_conversation(tok, LONG_CHAT, max_length=64, max_prompt_length=40, stats=stats)
    assert f["input_ids"] == full["input_ids"][n_prompt - 40:]  # keeps the END of the prompt
    assert f["labels"] == full["labels"][n_prompt - 40:]
    assert supervised_segments(tok, f) == ["Short reply here." + EOT]
    assert tok.decode(f["input_ids"]).endswith("word59<|im_end|>\n<|im_start|>assistant\n"
                                               "Short reply here." + EOT)
    assert (stats.examples, stats.truncated, stats.prompt_truncated, stats.response_truncated) == (1, 1, 1, 0)


def test_response_is_truncated_from_the_right(tok):
    msgs = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " ".join(map(str,
                                                                                                 range(50)))}]
    full = encode_conversation(tok, msgs, max_length=1024)
    n_prompt = len(encode_prompt(tok, msgs[:1]))
    stats = TruncationStats()
    f = encode_conversation(tok, msgs, max_length=n_prompt + 5, stats=stats)
    assert f["input_ids"] == full["input_ids"][:n_prompt + 5]
    assert sum(lab != IGNORE_INDEX for lab in f["labels"]) == 5
    assert (stats.truncated, stats.prompt_truncated, stats.response_truncated) == (1, 0, 1)


def test_response_is_never_dropped_silently(tok):
    n_prompt = len(encode_prompt(tok, LONG_CHAT[:1]))
    with pytest.raises(DataError) as e:
        encode_conversation(tok, LONG_CHAT, max_length=n_prompt, file="chat.jsonl", line=9)
    assert str(e.value) == (
        f"chat.jsonl:9, field 'messages': the prompt takes {n_prompt} of max_length={n_prompt} tokens, "
        "leaving room for 0 response token(s), fewer than min_response_tokens=1; raise max_length, "
        "set max_prompt_length to truncate the prompt from the left, or pass on_overflow='skip'")
    with pytest.raises(DataError,
                       match="leaving room for 3 response token\\(s\\), fewer than min_response_tokens=4"):
        encode_conversation(tok, LONG_CHAT, max_length=n_prompt + 3, min_response_tokens=4)
    stats = TruncationStats()
    assert encode_conversation(tok, LONG_CHAT, max_length=n_prompt, on_overflow="skip", stats=stats) is None
    assert stats.skipped == 1 and stats.examples == 0
    # A max_prompt_length that leaves no room is an error too, not an empty response.
    with pytest.raises(DataError, match="leaving room for 0"):
        encode_conversation(tok, LONG_CHAT, max_length=30, max_prompt_length=30)


def test_multi_turn_truncation_keeps_the_final_reply(tok):
    full = encode_conversation(tok, MULTI, max_length=1024)
    reply = len(ids(tok, "Bye!" + EOT))
    f = encode_conversation(tok, MULTI, max_length=40, max_prompt_length=15)
    assert len(f["input_ids"]) == 15 + reply and f["input_ids"] == full["input_ids"][-(15 + reply):]
    assert supervised_segments(tok, f)[-1] == "Bye!" + EOT


def test_pair_truncation_and_counts(tok):
    chosen, rejected = "A fine and long answer with many words in it.", "No."
    stats = TruncationStats()
    f = encode_pair(tok, LONG_CHAT[:1], chosen, rejected, max_length=30, max_prompt_length=24, stats=stats)
    full = encode_pair(tok, LONG_CHAT[:1], chosen, rejected, max_length=1024)
    assert f["prompt_ids"] == full["prompt_ids"][-24:]
    assert f["chosen_ids"] == full["chosen_ids"][:6] and f["rejected_ids"] == full["rejected_ids"]
    assert (stats.prompt_truncated, stats.response_truncated) == (1, 1)
    with pytest.raises(DataError, match="pairs.jsonl:3, field 'prompt': the prompt takes"):
        encode_pair(tok, LONG_CHAT[:1], chosen, rejected, max_length=30, file="pairs.jsonl", line=3)
    pairs = [PreferencePair(LONG_CHAT[:1], chosen, rejected, file="p", line=1),
             PreferencePair("Hi", chosen, rejected, file="p", line=2)]
    feats, stats = encode_pairs(tok, pairs, max_length=40, on_overflow="skip")
    assert len(feats) == 1 and stats.skipped == 1 and stats.examples == 1
    assert str(stats) == "1 examples: 1 truncated (0 prompt, 1 response), 1 skipped"


def test_batch_encoding_counts(tok):
    convs = [CHAT, LONG_CHAT, MULTI]
    feats, stats = encode_conversations(tok, convs, max_length=50, max_prompt_length=40)
    assert len(feats) == 3 and all(len(f["input_ids"]) <= 50 for f in feats)
    assert stats.examples == 3 and stats.prompt_truncated == 2  # LONG_CHAT and MULTI


def test_real_gsm8k_masks(tok):
    convs = load_records(require_data("gsm8k", "test.jsonl"), "sft")
    feats, stats = encode_conversations(tok, convs, max_length=1024)
    assert stats.truncated == 0 and len(feats) == len(convs)
    for c, f in zip(convs[:300], feats):
        assert supervised_segments(tok, f) == [c.messages[-1]["content"] + EOT]


def test_a_token_id_prefix_is_continued_exactly_not_retokenized():
    tok = load_smollm2_tokenizer()
    msgs = [{"role": "user", "content": "Add 2 and 3."}]
    # "Hel" + "lo" as two tokens: the text "Hello" re-tokenizes to other ids
    ids = tok.encode("Hel", add_special_tokens=False) + tok.encode("lo", add_special_tokens=False)
    assert tok.encode("Hello", add_special_tokens=False) != ids
    rec = PromptRecord(msgs, "5", assistant_prefix=tok.decode(ids), prefix_ids=ids)
    assert encode_record_prompt(tok, rec) == encode_prompt(tok, msgs) + ids
    assert encode_record_prompt(tok, rec, max_length=5) == (encode_prompt(tok, msgs) + ids)[-5:]
    plain = PromptRecord(msgs, "5", assistant_prefix="Hello")
    assert encode_record_prompt(tok, plain) == encode_prompt(tok, msgs, assistant_prefix="Hello")
    with pytest.raises(DataError, match="prefix_ids"):
        PromptRecord(msgs, prefix_ids=[1, -2], assistant_prefix="x")
    with pytest.raises(DataError, match="assistant_prefix"):
        PromptRecord(msgs, prefix_ids=[1, 2])
