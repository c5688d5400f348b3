"""Record validation: every bad row names file, line and field."""
import pytest

from posttrain.data import Conversation, PreferencePair, PromptRecord
from posttrain.data.records import completion_text
from posttrain.errors import DataError

F = "data.jsonl"


def err(fn, row):
    with pytest.raises(DataError) as e:
        fn(row, file=F, line=7)
    return str(e.value)


def test_conversation_ok_and_meta():
    c = Conversation.from_row({"messages": [{"role": "system", "content": "s"}, {"role": "user",
                                                                                 "content": "q"},
                                            {"role": "assistant", "content": "a"}], "id": 3,
                               "meta": {"src": "x"}},
                              file=F, line=1)
    assert c.meta == {"id": 3, "src": "x"} and c.file == F and c.line == 1
    assert c == Conversation(c.messages, c.meta)  # file/line take no part in equality


@pytest.mark.parametrize("row, expected", [
    ({"msgs": []}, "data.jsonl:7, field 'messages': missing field"),
    ({"messages": "hi"}, "field 'messages': expected a list of messages, got str"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
     "field 'messages[1].role': unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
     "field 'messages[1].content': expected a string, got int"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
     "field 'messages[1].content': empty content"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "must follow a user turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
     "field 'messages[1]': missing field 'content'"),
])
def test_conversation_errors(row, expected):
    assert expected in err(Conversation.from_row, row)


def test_pair_string_prompt_and_message_responses():
    p = PreferencePair.from_row({"prompt": "Hi", "chosen": [{"role": "assistant", "content": "Hello"}],
                                 "rejected": "Go away", "flipped": True, "score_chosen": 8.0})
    assert p.prompt == [{"role": "user", "content": "Hi"}]
    assert (p.chosen, p.rejected) == ("Hello", "Go away")
    assert p.meta == {"flipped": True, "score_chosen": 8.0}


@pytest.mark.parametrize("row, expected", [
    ({"prompt": "q", "chosen": "a"}, "data.jsonl:7, field 'rejected': missing field"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "field 'rejected': chosen and rejected are identical"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "field 'chosen': empty response"),
    ({"prompt": "q", "chosen": 1, "rejected": "b"}, "field 'chosen': expected a string or a list"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}], "chosen": "a",
      "rejected": "b"}, "field 'prompt[1].role': a prompt must end with a user turn"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "field 'chosen[0].role': expected role 'assistant'"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "field 'prompt': empty prompt"),
])
def test_pair_errors(row, expected):
    assert expected in err(PreferencePair.from_row, row)


def test_prompt_record():
    r = PromptRecord.from_row({"prompt": "2+2?", "answer": 4, "level": 1})
    assert r.prompt == [{"role": "user", "content": "2+2?"}] and r.answer == "4" and r.meta == {"level": 1}
    assert PromptRecord.from_row({"prompt": "x"}).answer is None
    assert "field 'answer': expected a string or a number, got list" in err(PromptRecord.from_row,
                                                                            {"prompt": "x", "answer": [1]})
    assert "field 'prompt': missing field" in err(PromptRecord.from_row, {"question": "x"})


CHAT = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Answer: 4"}]


def test_assistant_prefix_is_a_field():
    c = Conversation.from_row({"messages": CHAT, "assistant_prefix": "Answer:", "id": 1}, file=F, line=1)
    assert c.assistant_prefix == "Answer:" and c.meta == {"id": 1}
    assert c != Conversation(c.messages, c.meta)  # the prefix changes what is trained: part of equality
    assert c == Conversation(c.messages, c.meta, "Answer:")
    r = PromptRecord.from_row({"prompt": "q", "assistant_prefix": "<J>", "label": "x"})
    assert r.assistant_prefix == "<J>" and r.meta == {"label": "x"}
    assert completion_text(r, "yes</J>") == "<J>yes</J>"
    assert PromptRecord.from_row({"prompt": "q"}).assistant_prefix is None
    assert PromptRecord.from_row({"prompt": "q", "assistant_prefix": None}).assistant_prefix is None
    assert completion_text(PromptRecord.from_row({"prompt": "q"}), "yes") == "yes"


@pytest.mark.parametrize("fn, row, expected", [
    (PromptRecord.from_row, {"prompt": "q", "assistant_prefix": 5},
     "data.jsonl:7, field 'assistant_prefix': expected a non-empty string, got int"),
    (PromptRecord.from_row, {"prompt": "q", "assistant_prefix": ""},
     "data.jsonl:7, field 'assistant_prefix': expected a non-empty string, got an empty string"),
    (Conversation.from_row, {"messages": CHAT, "assistant_prefix": ["Answer:"]},
     "data.jsonl:7, field 'assistant_prefix': expected a non-empty string, got list"),
    (Conversation.from_row, {"messages": CHAT, "assistant_prefix": "4"},
     "data.jsonl:7, field 'messages': with assistant_prefix '4' the last message must be an assistant reply "
     "starting with it"),
    (Conversation.from_row, {"messages": CHAT + [{"role": "user", "content": "more?"}],
                             "assistant_prefix": "A"},
     "data.jsonl:7, field 'messages': with assistant_prefix 'A' the last message must be an assistant reply"),
    (PromptRecord.from_row, {"prompt": "q", "meta": {"assistant_prefix": "<J>"}},
     "data.jsonl:7, field 'meta.assistant_prefix': assistant_prefix is a top-level field"),
])
def test_assistant_prefix_errors(fn, row, expected):
    assert expected in err(fn, row)
