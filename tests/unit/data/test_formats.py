"""The Alpaca, plain-text and unpaired (KTO) formats, on files written by `datasets` and pandas."""
import json
from types import SimpleNamespace

import datasets
import pandas as pd
import pytest

from posttrain.data import Conversation, load_records
from posttrain.data.converters import detect_format
from posttrain.data.records import TextRecord, UnpairedPreference
from posttrain.errors import DataError
from posttrain.methods.sft import encode_all

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "You add.",
     "history": [["Hi", "Hello!"]]},
    {"instruction": "Name a colour.", "input": "", "output": "Blue.", "system": "", "history": []},
]


def alpaca_file(tmp_path, rows=ALPACA):
    path = tmp_path / "alpaca.jsonl"
    datasets.Dataset.from_list(rows).to_json(str(path))  # JSON lines, as `datasets` writes them
    return path


def error_of(path, kind="sft", **kw):
    with pytest.raises(DataError) as e:
        load_records(path, kind, **kw)
    return str(e.value)


def test_alpaca_rows_become_conversations(tmp_path):
    recs = load_records(alpaca_file(tmp_path), "sft")
    assert [type(r) for r in recs] == [Conversation, Conversation]
    assert recs[0].messages == [
        {"role": "system", "content": "You add."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    assert recs[1].messages == [{"role": "user", "content": "Name a colour."},
                                {"role": "assistant", "content": "Blue."}]


def test_alpaca_without_optional_columns_from_pandas(tmp_path):
    path = tmp_path / "a.jsonl"
    pd.DataFrame({"instruction": ["Say hi."], "output": ["Hi."]}).to_json(path, orient="records", lines=True)
    (rec,) = load_records(path, "sft")
    assert rec.messages == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]


@pytest.mark.parametrize("row, field, words", [
    ({"instruction": "x"}, "output", "missing field"),
    ({"instruction": "x", "output": 5}, "output", "expected a string, got int"),
    ({"instruction": "x", "output": "y", "input": 3}, "input", "expected a string, got int"),
    ({"instruction": "x", "output": "y", "history": [["only one"]]}, "history[0]", "[user, assistant] pair"),
    ({"instruction": "x", "output": "y", "history": "no"}, "history", "expected a list"),
])
def test_bad_alpaca_rows_name_file_line_and_field(tmp_path, row, field, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"instruction": "ok", "output": "fine"}) + "\n" + json.dumps(row) + "\n")
    msg = error_of(path, fmt="alpaca")
    assert f"bad.jsonl:2, field '{field}'" in msg and words in msg


def test_text_rows_are_text_records(tmp_path):
    path = tmp_path / "t.jsonl"
    pd.DataFrame({"text": ["Once upon a time.", "The end."], "source": ["a", "b"]}).to_json(
        path, orient="records", lines=True)
    assert detect_format({"text": "x"}, "sft") == "text"
    recs = load_records(path, "sft")
    assert recs == [TextRecord("Once upon a time.", {"source": "a"}), TextRecord("The end.", {"source": "b"})]
    path.write_text('{"text": "fine"}\n{"text": "  "}\n{"text": 3}\n')
    assert "t.jsonl:2, field 'text': empty text" in error_of(path)
    assert "t.jsonl:3, field 'text': expected a string, got int" in error_of(path, on_invalid="skip",
                                                                             max_invalid_fraction=0.5)


def test_text_is_supervised_on_every_token_without_a_template(tok):
    data = SimpleNamespace(max_length=8, max_prompt_length=None, on_overflow="error")
    chat = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    text = TextRecord("The cat sat on the mat.")
    feats, stats = encode_all([text, chat], tok, SimpleNamespace(**{**vars(data), "max_length": 64}))
    ids = tok("The cat sat on the mat.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert feats[0] == {"input_ids": ids, "labels": ids}
    assert "<|im_start|>" not in tok.decode(feats[0]["input_ids"])
    assert -100 in feats[1]["labels"]  # the chat keeps its template and masks
    assert stats["examples"] == 2 and stats["text_examples"] == 1
    long = TextRecord(" ".join(["word"] * 40))
    (feat,), stats = encode_all([long], tok, data)
    assert len(feat["input_ids"]) == 8 and feat["labels"] == feat["input_ids"] and stats["truncated"] == 1


def unpaired_file(tmp_path):
    path = tmp_path / "kto.jsonl"
    datasets.Dataset.from_list([{"prompt": "2+2?", "completion": "4", "label": True},
                                {"prompt": "2+2?", "completion": "5", "label": False}]).to_json(str(path))
    return path


@pytest.mark.parametrize("kind", ["sft", "preference", "prompt"])
def test_unpaired_rows_are_refused_by_every_current_kind(tmp_path, kind):
    msg = error_of(unpaired_file(tmp_path), kind)
    assert "kto.jsonl:1" in msg and "unpaired preference data (format 'unpaired'" in msg
    assert "method kto" in msg and f"wants {kind} records" in msg
    # skip does not turn the refusal into silently skipped rows
    assert "format 'unpaired'" in error_of(unpaired_file(tmp_path), kind, on_invalid="skip")


def test_naming_prompt_completion_does_not_train_sft_on_unpaired_rows(tmp_path):
    assert "format 'unpaired'" in error_of(unpaired_file(tmp_path), "sft", fmt="prompt_completion")
    assert "format 'unpaired'" in error_of(unpaired_file(tmp_path), "sft", fmt="prompt_completion",
                                           on_invalid="skip")


def test_unpaired_rows_are_kept_for_kto(tmp_path):
    recs = load_records(unpaired_file(tmp_path), "unpaired")
    assert recs == [UnpairedPreference([{"role": "user", "content": "2+2?"}], "4", True),
                    UnpairedPreference([{"role": "user", "content": "2+2?"}], "5", False)]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "q", "completion": "a", "label": "yes"}) + "\n")
    assert "bad.jsonl:1, field 'label': expected true or false, got str" in error_of(path, "unpaired")
