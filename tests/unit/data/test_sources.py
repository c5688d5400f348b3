"""Sources beyond JSON lines (CSV, DatasetDict folders with a split, Hub ids from the local datasets cache),
column maps and on_invalid skip, on files written by `datasets` and pandas."""
import json

import datasets
import pandas as pd
import pytest

from posttrain.data import Conversation, PreferencePair, load_records
from posttrain.data.readers import hub_files
from posttrain.errors import DataError

PAIRS = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]


def error_of(path, kind="preference", **kw):
    with pytest.raises(DataError) as e:
        load_records(path, kind, **kw)
    return str(e.value)


def test_csv_written_by_pandas(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame(PAIRS).to_csv(path, index=False)
    pairs = load_records(path, "preference")
    assert [type(p) for p in pairs] == [PreferencePair] * 4 and pairs[3].chosen == "good 3"
    alpaca = tmp_path / "alpaca.csv"
    pd.DataFrame({"instruction": ["Say hi.", "Add."], "input": ["", "1 and 2"],
                  "output": ["Hi.", "3"]}).to_csv(alpaca, index=False)
    recs = load_records(alpaca, "sft")
    assert recs[0].messages[0]["content"] == "Say hi." and recs[1].messages[0]["content"] == "Add.\n\n1 and 2"


def test_csv_missing_field_and_empty_file(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame([{"prompt": "q", "chosen": "a"}]).to_csv(path, index=False)
    assert "p.csv:0, field 'rejected': missing field" in error_of(path, fmt="pairs")
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert "e.csv: no rows: the data is empty" in error_of(empty)
    (tmp_path / "e.jsonl").write_text("\n")
    assert "e.jsonl: no rows" in error_of(tmp_path / "e.jsonl")


def test_datasetdict_folder_and_its_split(tmp_path):
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(PAIRS),
                          "validation": datasets.Dataset.from_list(PAIRS[:1])}).save_to_disk(str(folder))
    assert len(load_records(folder, "preference")) == 4
    assert len(load_records(folder, "preference", split="validation")) == 1
    msg = error_of(folder, split="test")
    assert "dd, field 'split': no split 'test'; splits: train, validation" in msg
    single = tmp_path / "ds"
    datasets.Dataset.from_list(PAIRS).save_to_disk(str(single))
    assert len(load_records(single, "preference")) == 4
    assert "not a DatasetDict folder" in error_of(single, split="train")


def cached_hub_dataset(tmp_path, monkeypatch, hub_id="acme/toy"):
    """A real `datasets` cache entry: prepared by load_dataset from parquet files, then filed under the Hub
    id's folder name (`acme___toy`), where load_dataset(hub_id) looks in offline mode."""
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame(PAIRS).to_parquet(src / "train.parquet")
    pd.DataFrame(PAIRS[:2]).to_parquet(src / "test.parquet")
    cache = tmp_path / "cache"
    datasets.load_dataset("parquet", data_files={"train": str(src / "train.parquet"),
                                                 "test": str(src / "test.parquet")}, cache_dir=str(cache))
    (cache / "parquet").rename(cache / hub_id.replace("/", "___"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


def test_hub_id_reads_the_local_datasets_cache(tmp_path, monkeypatch):
    cached_hub_dataset(tmp_path, monkeypatch)
    pairs = load_records(None, "preference", hub="acme/toy")
    assert [p.chosen for p in pairs] == [r["chosen"] for r in PAIRS]
    assert len(load_records(None, "preference", hub="acme/toy", split="test")) == 2
    msg = error_of(None, hub="acme/toy", split="dev")
    assert "hub:acme/toy" in msg and "no split 'dev'; splits: test, train" in msg
    assert [f.name for f in hub_files("acme/toy", "test")] == ["parquet-test.arrow"]


def test_hub_id_not_cached_names_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty"))
    msg = error_of(None, hub="acme/missing")
    assert "hub:acme/missing, field 'hub': Hub dataset 'acme/missing' is not in the local datasets" in msg
    assert "never downloaded" in msg


def test_columns_rename_fields_before_conversion(tmp_path):
    path = tmp_path / "qa.jsonl"
    datasets.Dataset.from_list([{"q": "Hi?", "a": "Hello."}]).to_json(str(path))
    (rec,) = load_records(path, "sft", columns={"q": "prompt", "a": "completion"})
    assert isinstance(rec, Conversation) and rec.messages[-1]["content"] == "Hello."
    msg = error_of(path, "sft", columns={"question": "prompt", "a": "completion"})
    assert "qa.jsonl, field 'columns.question': the column map names column 'question'" in msg
    assert "its columns: a, q" in msg
    # an absent column stays an error with on_invalid skip
    assert "columns.question" in error_of(path, "sft", columns={"question": "prompt"}, on_invalid="skip")


def test_skip_drops_broken_json_lines_and_counts_reasons(tmp_path):
    path = tmp_path / "x.jsonl"
    lines = [json.dumps(r) for r in PAIRS * 10] + ['{"prompt": "q", "chosen', "[1, 2]"]
    path.write_text("\n".join(lines[:20] + [lines[40]] + lines[20:40] + [lines[41]]) + "\n")
    assert "x.jsonl:21: invalid JSON" in error_of(path)
    got = load_records(path, "preference", on_invalid="skip", max_invalid_fraction=0.05)
    assert len(got) == 40 and [e.line for e in got.skipped] == [21, 42]
    reasons = got.skip_reasons()
    assert sum(reasons.values()) == 2 and any(r.startswith("invalid JSON") for r in reasons)
    assert "expected a JSON object per row, got list" in reasons


def test_skip_stops_when_too_many_rows_are_bad(tmp_path):
    path = tmp_path / "x.jsonl"
    rows = [json.dumps(r) for r in PAIRS] + ["{broken", json.dumps({"prompt": "q"}),
                                             json.dumps({"prompt": "q", "chosen": "a", "rejected": 3})]
    path.write_text("\n".join(rows) + "\n")
    msg = error_of(path, on_invalid="skip")
    assert "3 of 7 rows are invalid (42.9%, more than max_invalid_fraction=0.05)" in msg
    assert "x.jsonl:5: invalid JSON" in msg and "x.jsonl:6, field 'chosen': missing field" in msg
    assert "x.jsonl:7, field 'rejected'" in msg
    assert len(load_records(path, "preference", on_invalid="skip", max_invalid_fraction=0.5)) == 4


def test_malformed_csv_row_names_its_line_and_can_be_skipped(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame(PAIRS).to_csv(path, index=False)
    with open(path, "a") as f:
        f.write("q9,only two\n")
    assert "p.csv: malformed CSV row at line 6 of the file: expected 3 cells, got 2" in error_of(path)
    got = load_records(path, "preference", on_invalid="skip", max_invalid_fraction=0.25)
    assert len(got) == 4 and len(got.skipped) == 1


def test_errors_in_a_source_setting_name_the_recipe_key(tmp_path):
    from posttrain.config import DataSource
    from posttrain.tasks.sources import load_source
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    with pytest.raises(DataError, match=r"field 'data\.train\.format'.*cannot make preference records"):
        load_source(DataSource(path=str(chat), format="messages"), "preference", key="data.train")
    with pytest.raises(DataError, match=r"field 'format'"):  # no key given: the source's own name
        load_source(DataSource(path=str(chat), format="messages"), "preference")
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "a"}])}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"field 'data\.eval\.split'.*splits: train"):
        load_source(DataSource(path=str(folder), split="test"), "prompt", key="data.eval")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "hi", "chosen": "hello", "rejected": "go away"}) + "\n")
    mixture = DataSource(mixture=[DataSource(path=str(pairs), share=0.5),
                                  DataSource(path=str(chat), share=0.5, format="messages")], seed=0)
    with pytest.raises(DataError, match=r"field 'data\.train\[1\]\.format'"):
        load_source(mixture, "preference", key="data.train")
