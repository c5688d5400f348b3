"""Readers: every supported format, and each bad-input error with its file/line/field."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.data import Conversation, PreferencePair, PromptRecord, iter_rows, load_records
from posttrain.errors import DataError

ROWS = [{"prompt": "q1", "chosen": "a1", "rejected": "b1"},
        {"prompt": "q2", "chosen": "a2", "rejected": "b2"}]


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def write_arrow_folder(folder, rows, shards=2):
    """What datasets.save_to_disk writes: IPC *stream* files plus state.json listing them."""
    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    names = []
    per = -(-len(rows) // shards)
    for k in range(shards):
        name = f"data-{k:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.slice(k * per, per))
        names.append(name)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


@pytest.fixture
def files(tmp_path):
    out = {}
    out["jsonl"] = write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "arr.json").write_text(json.dumps(ROWS, indent=2))
    out["json_array"] = tmp_path / "arr.json"
    out["json_lines"] = write_jsonl(tmp_path / "lines.json", ROWS)  # BFCL style
    out["jsonl_gz"] = write_jsonl(tmp_path / "d.jsonl.gz", ROWS, gzip.open)
    with gzip.open(tmp_path / "arr.json.gz", "wt") as f:
        json.dump(ROWS, f)
    out["json_gz"] = tmp_path / "arr.json.gz"
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    out["parquet"] = tmp_path / "d.parquet"
    out["arrow_folder"] = write_arrow_folder(tmp_path / "saved", ROWS)
    folder = tmp_path / "many"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", ROWS[:1])
    write_jsonl(folder / "b.jsonl", ROWS[1:])
    (folder / "notes.txt").write_text("ignored")
    out["folder"] = folder
    return out


@pytest.mark.parametrize("kind", ["jsonl", "json_array", "json_lines", "jsonl_gz", "json_gz", "parquet",
                                  "arrow_folder", "folder"])
def test_each_format_reads_the_same_rows(files, kind):
    rows = [r for _, r in iter_rows(files[kind])]
    assert rows == ROWS
    pairs = load_records(files[kind], "preference")
    assert [type(p) for p in pairs] == [PreferencePair] * 2
    assert pairs[1].prompt == [{"role": "user", "content": "q2"}] and pairs[1].chosen == "a2"


def test_positions_are_file_lines_for_jsonl_and_row_indexes_otherwise(tmp_path, files):
    p = tmp_path / "blank.jsonl"
    p.write_text("\n" + json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    assert [n for n, _ in iter_rows(p)] == [2, 4]
    assert [n for n, _ in iter_rows(files["parquet"])] == [0, 1]
    assert [n for n, _ in iter_rows(files["json_array"])] == [0, 1]


def test_limit_and_kinds(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                         {"role": "assistant", "content": f"a{i}"}]}
                                           for i in range(5)])
    convs = load_records(p, "sft", limit=2)
    assert len(convs) == 2 and isinstance(convs[0], Conversation)
    prompts = load_records(p, "prompt")
    assert isinstance(prompts[0], PromptRecord) and prompts[4].answer == "a4"
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "q", "completion": "a"}])
    assert load_records(pc, "sft")[0].messages == [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "a"}]


def test_implicit_prompt_pairs(tmp_path):
    u = {"role": "user", "content": "q"}
    p = write_jsonl(tmp_path / "i.jsonl", [{"chosen": [u, {"role": "assistant", "content": "good"}],
                                            "rejected": [u, {"role": "assistant", "content": "bad"}]}])
    (pair,) = load_records(p, "preference")
    assert pair.prompt == [u] and pair.chosen == "good" and pair.rejected == "bad"


# ------------------------------------------------------------ errors

def load_error(path, kind="preference", **kw):
    with pytest.raises(DataError) as e:
        load_records(path, kind, **kw)
    return e.value


def test_missing_file(tmp_path):
    e = load_error(tmp_path / "nope.jsonl")
    assert str(e) == f"{tmp_path / 'nope.jsonl'}: no such file or folder"


def test_invalid_json_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{\"prompt\": \"q\", oops}\n")
    e = load_error(p)
    assert e.line == 3 and str(e).startswith(f"{p}:3: invalid JSON")
    arr = tmp_path / "bad.json"
    arr.write_text('[\n {"prompt": "q"},\n {"prompt": }\n]')
    assert str(load_error(arr)).startswith(f"{arr}:3: invalid JSON")


@pytest.mark.parametrize("row, field, message", [
    ({"prompt": "q", "chosen": "a"}, "rejected", "missing field"),
    ({"prompt": "q", "chosen": ["a"], "rejected": "b"}, "chosen[0]", "expected a message object"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt", "expected a list of messages, got int"),
    ({"prompt": "q", "chosen": "   ", "rejected": "b"}, "chosen", "empty response"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected", "identical"),
])
def test_bad_rows_name_file_line_field(tmp_path, row, field, message):
    p = write_jsonl(tmp_path / "x.jsonl", [ROWS[0], row])
    e = load_error(p)
    assert (e.file, e.line, e.field) == (str(p), 2, field)
    assert str(e).startswith(f"{p}:2, field '{field}': ") and message in str(e)


def test_bad_row_in_parquet_uses_row_index(tmp_path):
    p = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([ROWS[0], {"prompt": "q", "chosen": "z", "rejected": "z"}]), p)
    assert str(load_error(p)).startswith(f"{p}:1, field 'rejected': chosen and rejected are identical")


def test_skip_invalid_rows_counts_reasons(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [ROWS[0], {"prompt": "q", "chosen": "z", "rejected": "z"},
                                           {"prompt": "q", "chosen": "", "rejected": "z"}, ROWS[1]])
    got = load_records(p, "preference", on_invalid="skip", max_invalid_fraction=0.5)
    assert len(got) == 2 and [e.line for e in got.skipped] == [2, 3]
    reasons = got.skip_reasons()
    assert sum(reasons.values()) == 2 and any("identical" in r for r in reasons)


def test_not_an_object_and_unknown_format(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("[1, 2]\n")
    assert "expected a JSON object per row, got list" in str(load_error(p))
    q = write_jsonl(tmp_path / "y.jsonl", [{"body": "hello"}])
    assert "cannot tell the format of sft data from fields ['body']" in str(load_error(q, "sft"))
    assert "format 'gsm8k' cannot make preference records" in str(load_error(q, fmt="gsm8k"))
    assert "unknown record kind" in str(load_error(q, "rl"))
    t = tmp_path / "z.tsv"
    t.write_text("a\tb\n")
    assert "unsupported file type" in str(load_error(t))


def test_real_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")  # dev extra only; the reader itself never imports it
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert [r for _, r in iter_rows(tmp_path / "ds")] == ROWS
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_records(tmp_path / "dd", "preference")) == 2  # split train by default
    assert len(load_records(tmp_path / "dd", "preference", split="test")) == 1
    assert len(load_records(tmp_path / "dd" / "train", "preference")) == 2


def test_datasetdict_folder_names_its_splits(tmp_path):
    root = tmp_path / "dd"
    root.mkdir()
    write_arrow_folder(root / "validation", ROWS)
    (root / "dataset_dict.json").write_text('{"splits": ["validation"]}')
    assert "no 'train' split; name one with split:; splits: validation" in str(load_error(root))
    assert "no split 'dev'; splits: validation" in str(load_error(root, split="dev"))
    assert len(load_records(root, "preference", split="validation")) == 2


def test_read_jsonl_names_a_missing_stage_file_or_reads_it_as_empty(tmp_path):
    from posttrain.errors import DataError
    from posttrain.files import read_jsonl, write_jsonl
    missing = tmp_path / "states.jsonl"
    with pytest.raises(DataError,
                       match="states.jsonl does not exist: the stage that writes it has not finished"):
        read_jsonl(missing)
    assert read_jsonl(missing, missing="empty") == []
    write_jsonl(missing, [{"a": 1}, {"b": [2]}])
    assert read_jsonl(missing) == read_jsonl(missing, missing="empty") == [{"a": 1}, {"b": [2]}]
