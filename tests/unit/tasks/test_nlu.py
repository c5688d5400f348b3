"""NLU as generation (METHODS.md §4): task specs, loaders on the real GLUE/SuperGLUE files, prompts with
the real SmolLM2 template, k-shot sampling, SFT/prompt rows and accuracy."""
import json
from collections import Counter

import pytest

from posttrain.data.records import Conversation, PromptRecord
from posttrain.data.template import (
    IGNORE_INDEX,
    TruncationStats,
    encode_conversation,
    encode_conversations,
    encode_prompt,
    render,
)
from posttrain.errors import DataError
from posttrain.tasks import nlu
from posttrain.tasks.nlu import (
    ASSISTANT_PREFIX,
    TASKS,
    NLUExample,
    build_messages,
    load_file,
    load_task,
    nlu_accuracy,
    prompt_rows,
    sample_shots,
    sft_rows,
    task_file,
)
from tests.data_helpers import require_data

REAL = {  # task: (validation rows, train rows)
    "sst2": (872, 60614),
    "boolq": (3270, 32),
    "rte": (277, 32),
    "cb": (56, 32),
    "copa": (100, 32),
}


@pytest.fixture(scope="session")
def data_dir():
    return require_data()


def ex(task, label, text="some text", index=0):
    return NLUExample(text, label, task, index)


# ---------------------------------------------------------------- task specs


def test_task_specs():
    assert set(TASKS) == {"sst2", "rte", "boolq", "cb", "copa", "wic", "wsc"}
    assert TASKS["sst2"].labels == ("Positive", "Negative")
    for t in ("rte", "boolq", "wsc"):
        assert TASKS[t].labels == ("Yes", "No")
    assert TASKS["cb"].labels == ("Entailment", "Contradiction", "Neutral")
    assert TASKS["copa"].labels == ("Option one", "Option two")
    assert TASKS["wic"].labels == ("Same", "Different")
    assert nlu.get_task("SST-2") is TASKS["sst2"]
    with pytest.raises(DataError,
                       match="unknown NLU task 'mnli'; known tasks: sst2, rte, boolq, cb, copa, wic, wsc"):
        nlu.get_task("mnli")


@pytest.mark.parametrize("task,row,text,label", [
    ("sst2", {"sentence": "a gem . ", "label": "1"}, "Text: a gem .", "Positive"),
    ("sst2", {"sentence": "dull", "label": 0}, "Text: dull", "Negative"),
    ("rte", {"premise": "P.", "hypothesis": "H.", "label": "not_entailment"}, "Premise: P.\nHypothesis: H.",
     "No"),
    ("rte", {"sentence1": "P.", "sentence2": "H.", "label": "entailment"}, "Premise: P.\nHypothesis: H.",
     "Yes"),
    ("boolq", {"question": "is it", "passage": "It is.", "label": True}, "Passage: It is.\nQuestion: is it?",
     "Yes"),
    ("boolq", {"question": "is it?", "passage": "No.", "label": "false"}, "Passage: No.\nQuestion: is it?",
     "No"),
    ("cb", {"premise": "P", "hypothesis": "H", "label": "neutral"}, "Premise: P\nHypothesis: H", "Neutral"),
    ("copa", {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 0},
     "Premise: P.\nWhich is the more likely cause?\nOption one: A.\nOption two: B.", "Option one"),
    ("copa", {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "effect", "label": 1},
     "Premise: P.\nWhich is the more likely effect?\nOption one: A.\nOption two: B.", "Option two"),
    ("wic", {"word": "bank", "sentence1": "S1.", "sentence2": "S2.", "label": False},
     "Word: bank\nSentence 1: S1.\nSentence 2: S2.", "Different"),
    ("wic", {"word": "bank", "sentence1": "S1.", "sentence2": "S2.", "label": True},
     "Word: bank\nSentence 1: S1.\nSentence 2: S2.", "Same"),
    ("wsc", {"text": "Mark told Pete he won.", "target": {"span1_text": "Pete", "span2_text": "he",
                                                          "span1_index": 3, "span2_index": 4}, "label": True},
     'Sentence: Mark told Pete he won.\nDoes the pronoun "he" refer to "Pete"?', "Yes"),
    ("wsc", {"text": "T.", "span1_text": "A", "span2_text": "it", "label": 0},
     'Sentence: T.\nDoes the pronoun "it" refer to "A"?', "No"),
])
def test_convert_rows(task, row, text, label):
    assert TASKS[task].convert(row) == (text, label)


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize("task", sorted(REAL))
def test_real_files_counts_and_labels(task, data_dir):
    n_val, n_train = REAL[task]
    val = load_task(task, "validation", data_dir=data_dir)
    train = load_task(task, "train", data_dir=data_dir)
    assert (len(val), len(train)) == (n_val, n_train)
    for split in (val, train):
        assert [e.index for e in split[:5]] == list(range(min(5, len(split))))
        assert all(e.task == task and e.label in TASKS[task].labels and e.text.strip() for e in split)
        counts = Counter(e.label for e in split)
        # every label occurs; none dominates absurdly (CB's train has 3 neutral of 32; BoolQ val 62% yes)
        assert set(counts) == set(TASKS[task].labels)
        assert max(counts.values()) / len(split) < 0.7
    assert val[0].line == (2 if task == "sst2" else 1) and val[0].file.endswith(("dev.tsv", "val.jsonl"))
    assert load_task(task, "dev", data_dir=data_dir, limit=3) == val[:3]


def test_real_file_details(data_dir):
    sst = load_task("sst2", "validation", data_dir=data_dir, limit=2)
    assert sst[0] == NLUExample("Text: it 's a charming and often affecting journey .", "Positive", "sst2", 0)
    assert sst[1].label == "Negative"
    assert Counter(e.label for e in load_task("sst2", "validation", data_dir=data_dir)) == \
        {"Positive": 444, "Negative": 428}
    assert Counter(e.label for e in load_task("cb", "validation", data_dir=data_dir)) == \
        {"Contradiction": 28, "Entailment": 23, "Neutral": 5}
    copa = load_task("copa", "validation", data_dir=data_dir, limit=1)[0]
    assert copa.text.startswith("Premise: The man turned on the faucet.\nWhich is the more likely effect?")
    assert copa.label == "Option two"
    boolq = load_task("boolq", "validation", data_dir=data_dir, limit=1)[0]
    assert boolq.text.startswith("Passage: Ethanol fuel") and boolq.text.endswith("?")
    # the task folder itself works as data_dir too
    assert task_file("rte", "val",
                     data_dir / "superglue" / "RTE") == data_dir / "superglue" / "RTE" / "val.jsonl"


def test_unknown_split_and_missing_files(data_dir, tmp_path):
    with pytest.raises(DataError, match="unknown split 'test'; known splits: train, validation"):
        load_task("sst2", "test", data_dir=data_dir)
    with pytest.raises(DataError, match="no validation file for task 'wic'; looked for: .*WiC/dev.tsv"):
        load_task("wic", "validation", data_dir=data_dir)
    with pytest.raises(DataError, match="no such data folder"):
        load_task("sst2", "train", data_dir=tmp_path / "nowhere")


def test_default_data_dir_is_found_from_the_working_directory_not_the_package(tmp_path, monkeypatch):
    from posttrain.tasks.nlu import default_data_dir
    monkeypatch.delenv("POSTTRAIN_SHARED_DATA", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    deep = tmp_path / "project" / "sub"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert default_data_dir() == tmp_path / "shared" / "data"  # found in a parent of the working directory
    monkeypatch.setenv("POSTTRAIN_SHARED_DATA", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("POSTTRAIN_SHARED_DATA")
    lonely = tmp_path.parent / (tmp_path.name + "-lonely")
    lonely.mkdir()
    monkeypatch.chdir(lonely)
    if any((f / "shared" / "data").is_dir() for f in lonely.parents):
        pytest.skip("a shared/data folder lies above the temp folder")
    with pytest.raises(DataError, match="no such data folder: pass data_dir .*POSTTRAIN_SHARED_DATA"):
        load_task("sst2", "train")


# ---------------------------------------------------------------- bad rows


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("lines,line,field,message", [
    (["sentence\tlabel", "good .\t1", "bad .\t2"], 3, "label", "expected 0 or 1, got '2'"),
    (["sentence\tlabel", "good .\t1", "", "no label here"], 4, "label", "expected 2 tab-separated columns"),
    (["sentence\tlabel", "a\tb\t1"], 2, None, "got 3 .a tab inside a field"),
    (["sentence\tlabel", " \t0"], 2, "sentence", "empty string"),
])
def test_bad_tsv_row(tmp_path, lines, line, field, message):
    (tmp_path / "sst2").mkdir()
    f = _write(tmp_path / "sst2" / "dev.tsv", lines)
    with pytest.raises(DataError, match=message) as e:
        load_task("sst2", "validation", data_dir=tmp_path)
    assert (e.value.file, e.value.line, e.value.field) == (str(f), line, field)
    assert f"{f}:{line}" in str(e.value)


@pytest.mark.parametrize("task,row,field,message", [
    ("rte", {"premise": "P", "hypothesis": "H", "label": 0}, "label", "integer codes are refused"),
    ("rte", {"premise": "P", "label": "entailment"}, "hypothesis", "missing field"),
    ("cb", {"premise": "P", "hypothesis": "H", "label": "maybe"}, "label", "expected one of 'entailment'"),
    ("boolq", {"question": "q", "passage": "p", "label": -1}, "label", "unlabelled test data"),
    ("boolq", {"question": 3, "passage": "p", "label": True}, "question", "expected a string, got int"),
    ("copa", {"premise": "P", "choice1": "a", "choice2": "b", "question": "why", "label": 0}, "question",
     "cause"),
    ("copa", {"premise": "P", "choice1": "a", "choice2": "b", "question": "cause", "label": True}, "label",
     "expected 0 or 1"),
    ("wsc", {"text": "T", "target": {"span1_text": "A"}, "label": True}, "target.span2_text",
     "missing field"),
])
def test_bad_jsonl_row(tmp_path, task, row, field, message):
    good = {"rte": {"premise": "P", "hypothesis": "H", "label": "entailment"},
            "cb": {"premise": "P", "hypothesis": "H", "label": "neutral"},
            "boolq": {"question": "q", "passage": "p", "label": False},
            "copa": {"premise": "P", "choice1": "a", "choice2": "b", "question": "effect", "label": 1},
            "wsc": {"text": "T", "span1_text": "A", "span2_text": "it", "label": False}}[task]
    f = _write(tmp_path / "val.jsonl", [json.dumps(good), "", json.dumps(row)])
    with pytest.raises(DataError, match=message) as e:
        load_file(task, f)
    assert (e.value.file, e.value.line, e.value.field) == (str(f), 3, field)
    assert len(load_file(task, f, limit=1)) == 1  # rows after the limit are not read


def test_bad_json_line(tmp_path):
    f = _write(tmp_path / "val.jsonl", ['{"premise": "P", "hypothesis": "H", "label": "entailment"}',
                                        "{oops"])
    with pytest.raises(DataError, match="invalid JSON") as e:
        load_file("rte", f)
    assert e.value.line == 2


# ---------------------------------------------------------------- prompts


def test_build_messages_zero_shot():
    spec = TASKS["cb"]
    msgs = build_messages("cb", ex("cb", "Neutral", "Premise: P\nHypothesis: H"))
    assert [m["role"] for m in msgs] == ["user"]
    content = msgs[0]["content"]
    assert content == (f"{spec.instruction}\n"
                       "Answer with exactly one of: <Judgement>Entailment</Judgement> or "
                       "<Judgement>Contradiction</Judgement> or <Judgement>Neutral</Judgement>.\n\n"
                       "Premise: P\nHypothesis: H")
    assert build_messages("cb", "raw text", system="Be brief.")[0] == {"role": "system",
                                                                       "content": "Be brief."}


def test_build_messages_k_shot():
    shots = [ex("sst2", "Negative", "Text: bad", 1), ex("sst2", "Positive", "Text: good", 2)]
    msgs = build_messages("sst2", ex("sst2", "Positive", "Text: query"), shots)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "<Judgement>Negative</Judgement>"
    assert msgs[3]["content"] == "<Judgement>Positive</Judgement>"
    assert msgs[0]["content"].endswith("Text: bad") and msgs[4]["content"].endswith("Text: query")
    assert msgs[0]["content"].split("\n\n")[0] == msgs[4]["content"].split("\n\n")[0]  # same header each turn
    with pytest.raises(ValueError, match="is a 'rte' example, not 'sst2'"):
        build_messages("sst2", ex("sst2", "Positive"), [ex("rte", "Yes")])
    with pytest.raises(ValueError, match="not one of"):
        build_messages("sst2", ex("sst2", "Positive"), [ex("sst2", "Yes")])


def prefilled_text(tok, messages):
    return tok.decode(encode_prompt(tok, messages, assistant_prefix=ASSISTANT_PREFIX))


def test_prompt_text_real_template(tok, data_dir):
    example = load_task("sst2", "validation", data_dir=data_dir, limit=1)[0]
    msgs = build_messages("sst2", example)
    text = prefilled_text(tok, msgs)
    assert text == render(tok, msgs, add_generation_prompt=True) + ASSISTANT_PREFIX
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nDecide whether the sentiment of the text is positive or negative.\n"
        "Answer with exactly one of: <Judgement>Positive</Judgement> or <Judgement>Negative</Judgement>.\n\n"
        "Text: it 's a charming and often affecting journey .<|im_end|>\n"
        "<|im_start|>assistant\n<Judgement>")
    for task in REAL:
        train = load_task(task, "train", data_dir=data_dir)
        query = load_task(task, "validation", data_dir=data_dir, limit=1)[0]
        shots = sample_shots(train, 2, seed=0)
        text = prefilled_text(tok, build_messages(task, query, shots))
        assert text.endswith("<|im_start|>assistant\n" + ASSISTANT_PREFIX)
        assert text.count(TASKS[task].instruction) == 3 and text.count(TASKS[task].answer_form) == 3
        assert query.text in text and all(s.text in text for s in shots)
        assert text.count("</Judgement><|im_end|>") == 2  # the two demonstrations' replies
        ids = encode_prompt(tok, build_messages(task, query, shots), assistant_prefix=ASSISTANT_PREFIX)
        assert tok.decode(ids) == text
        assert encode_prompt(tok, build_messages(task, query), max_length=8,
                             assistant_prefix=ASSISTANT_PREFIX) == \
            encode_prompt(tok, build_messages(task, query), assistant_prefix=ASSISTANT_PREFIX)[-8:]


# ---------------------------------------------------------------- k-shot sampling


def _pool():
    return [ex("cb", lab, f"t{i}", i) for i, lab in
            enumerate(["Entailment"] * 10 + ["Contradiction"] * 6 + ["Neutral"] * 2)]


def test_sample_shots_deterministic_and_balanced():
    pool = _pool()
    a = sample_shots(pool, 6, seed=3)
    assert a == sample_shots(pool, 6, seed=3)
    assert a != sample_shots(pool, 6, seed=4)
    assert Counter(e.label for e in a) == {"Entailment": 2, "Contradiction": 2, "Neutral": 2}
    assert len({e.index for e in a}) == 6
    b = sample_shots(pool, 4, seed=0)  # remainder to one label
    assert sorted(Counter(e.label for e in b).values()) == [1, 1, 2]
    c = sample_shots(pool, 9, seed=0)  # Neutral has only 2: the rest is filled from the others
    counts = Counter(e.label for e in c)
    assert counts["Neutral"] == 2 and sum(counts.values()) == 9 and len({e.index for e in c}) == 9
    assert sample_shots(pool, 0, seed=0) == []
    assert len(sample_shots(pool, 18, seed=0)) == 18
    plain = sample_shots(pool, 5, seed=1, balanced=False)
    assert plain == sample_shots(list(pool), 5, seed=1, balanced=False) and len(plain) == 5
    with pytest.raises(ValueError, match="cannot draw 19 shots from 18"):
        sample_shots(pool, 19, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        sample_shots(pool, -1, seed=0)


def test_sample_shots_order_varies_with_seed():
    pool = [ex("sst2", "Positive" if i % 2 else "Negative", f"t{i}", i) for i in range(20)]
    firsts = {sample_shots(pool, 2, seed=s)[0].label for s in range(20)}
    assert firsts == {"Positive", "Negative"}


# ---------------------------------------------------------------- rows for SFT / RL


def test_sft_rows_are_valid_conversations():
    examples = [ex("copa", "Option two", "Premise: P\nOption one: a\nOption two: b", 7)]
    rows = sft_rows("copa", examples, shots=[ex("copa", "Option one", "Premise: Q", 0)])
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "<Judgement>Option two</Judgement>"}
    conv = Conversation.from_row(rows[0], file="nlu", line=1)
    assert conv.meta == {"task": "copa", "label": "Option two", "index": 7}
    assert conv.assistant_prefix == ASSISTANT_PREFIX == "<Judgement>"
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "user", "assistant"]


def test_prompt_rows_are_valid_prompt_records_and_feed_the_reward():
    from posttrain.rewards.label import LabelReward
    examples = [ex("rte", "Yes", "Premise: A\nHypothesis: B", 0), ex("rte", "No", "Premise: C\nHypothesis: D",
                                                                     1)]
    rows = prompt_rows("rte", examples)
    recs = [PromptRecord.from_row(r, file="nlu", line=i + 1) for i, r in enumerate(rows)]
    assert recs[1].meta == {"label": "No", "labels": ["Yes", "No"], "task": "rte", "index": 1}
    assert recs[1].assistant_prefix == "<Judgement>"
    assert recs[0].prompt[-1]["role"] == "user" and recs[0].answer is None
    assert LabelReward().score(["p", "p"], ["Yes</Judgement>", "yes</Judgement>"],
                               [r.meta for r in recs]) == \
        [1.0, -1.0]


def test_sft_encodings_with_real_template(tok):
    row = sft_rows("sst2", [ex("sst2", "Negative", "Text: dull", 0)])[0]
    full = encode_conversation(tok, row["messages"], max_length=512)
    supervised = [t for t, lab in zip(full["input_ids"], full["labels"]) if lab != IGNORE_INDEX]
    # no prefix: prefix supervised
    assert tok.decode(supervised) == "<Judgement>Negative</Judgement><|im_end|>"
    label_only = encode_conversation(tok, row["messages"], max_length=512,
                                     assistant_prefix=row["assistant_prefix"])
    assert label_only["input_ids"] == full["input_ids"]
    supervised = [t for t, lab in zip(label_only["input_ids"], label_only["labels"]) if lab != IGNORE_INDEX]
    assert tok.decode(supervised) == "Negative</Judgement><|im_end|>"  # the paper's SFT: label tokens only
    n_prompt = label_only["labels"].index(next(lab for lab in label_only["labels"] if lab != IGNORE_INDEX))
    assert label_only["input_ids"][:n_prompt] == encode_prompt(tok, row["messages"][:-1],
                                                                assistant_prefix=ASSISTANT_PREFIX)
    # the record carries the prefix: encode_conversations applies it per record
    conv = Conversation.from_row(row, file="nlu", line=1)
    assert encode_conversations(tok, [conv], max_length=512)[0] == [label_only]
    # with shots, only the final reply is supervised
    shot_row = sft_rows("sst2", [ex("sst2", "Negative", "Text: dull", 0)],
                        shots=[ex("sst2", "Positive", "Text: ok")])[0]
    enc = encode_conversation(tok, shot_row["messages"], max_length=512, assistant_prefix=ASSISTANT_PREFIX)
    assert tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]) == \
        "Negative</Judgement><|im_end|>"
    n_sup = sum(lab != IGNORE_INDEX for lab in enc["labels"])
    # truncation: the prompt (up to and including the prefix) loses tokens from the left, the label stays
    stats = TruncationStats()
    short = encode_conversation(tok, shot_row["messages"], max_length=20, max_prompt_length=20 - n_sup,
                                assistant_prefix=ASSISTANT_PREFIX, stats=stats)
    assert short == {"input_ids": enc["input_ids"][-20:], "labels": enc["labels"][-20:]}
    assert (stats.prompt_truncated, stats.response_truncated) == (1, 0)
    # ... never silently: without max_prompt_length the overflow is an error, or a counted skip
    with pytest.raises(DataError, match="nlu:4, field 'messages': the prompt takes .* of max_length=20"):
        encode_conversation(tok, shot_row["messages"], max_length=20, assistant_prefix=ASSISTANT_PREFIX,
                            file="nlu", line=4)
    with pytest.raises(DataError, match="leaving room for 3 response token"):
        encode_conversation(tok, shot_row["messages"], max_length=3, max_prompt_length=0,
                            min_response_tokens=n_sup, assistant_prefix=ASSISTANT_PREFIX)
    assert encode_conversation(tok, shot_row["messages"], max_length=20, assistant_prefix=ASSISTANT_PREFIX,
                               on_overflow="skip", stats=stats) is None and stats.skipped == 1
    with pytest.raises(DataError, match="the last message must be an assistant reply starting with it"):
        encode_conversation(tok, shot_row["messages"][:-1], max_length=512, assistant_prefix=ASSISTANT_PREFIX)
    with pytest.raises(DataError,
                       match="nlu:2, field 'messages': with assistant_prefix '<Judgement>' the last"):
        Conversation.from_row({**shot_row, "messages": shot_row["messages"][:-1]}, file="nlu", line=2)


# ---------------------------------------------------------------- accuracy


def test_nlu_accuracy():
    examples = [ex("sst2", "Positive"), ex("sst2", "Negative"), ex("sst2", "Positive"), ex("sst2",
                                                                                           "Negative")]
    completions = ["Positive</Judgement>", "Positive</Judgement>", "Positive", " negative </Judgement>"]
    assert nlu_accuracy(completions, examples) == {"accuracy": 0.5, "invalid_rate": 0.25, "n": 4}
    meta = [{"label": e.label, "labels": ["Positive", "Negative"]} for e in examples]
    assert nlu_accuracy(completions, meta) == {"accuracy": 0.5, "invalid_rate": 0.25, "n": 4}
    assert nlu_accuracy(completions, [{"label": e.label,
                                       "task": "sst2"} for e in examples])["accuracy"] == 0.5
    assert nlu_accuracy(completions, [{"label": e.label} for e in examples], ["Positive",
                                                                              "Negative"])["n"] == 4
    assert nlu_accuracy([], []) == {"accuracy": 0.0, "invalid_rate": 0.0, "n": 0}
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        nlu_accuracy(["a", "b"], examples[:1])
    with pytest.raises(ValueError, match="no label words"):
        nlu_accuracy(["a"], [{"label": "Positive"}])
