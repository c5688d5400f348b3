"""Samples files know their source: `<out>.source.json` holds the weights hash, tokenizer and sampling
settings; resuming with another model or other settings is refused, naming what differs."""
import json
import re

import pytest

from posttrain.data.records import PromptRecord
from posttrain.errors import DataError
from posttrain.generation.sampler import SamplingParams
from posttrain.generation.to_file import sample_to_file, sampled_weights_hash, source_path

QUESTIONS = ["Hello there", "What is 2+2?", "Name a colour.", "Hi", "Why is the sky blue?"]
PARAMS = SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=4, stop=("\n\n",))


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("POSTTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
    from posttrain.models import load_model
    yield [load_model("tiny-llama", seed=s) for s in (3, 4)]
    mp.undo()


@pytest.fixture(scope="module")
def records():
    return [PromptRecord.from_row({"prompt": q, "answer": str(i)}) for i, q in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def full(lms, records, tmp_path_factory):
    (model, tok), _ = lms
    out = tmp_path_factory.mktemp("full") / "samples.jsonl"
    sample_to_file(model, tok, records, PARAMS, out, batch_size=4, progress=False)
    return out


def killed_copy(full, tmp_path, k=5):
    """A run killed after k lines: its file and sidecar."""
    part = tmp_path / "part.jsonl"
    part.write_text("".join(full.read_text().splitlines(keepends=True)[:k]))
    source_path(part).write_text(source_path(full).read_text())
    return part


def assert_same_samples(a, b):
    """Equal samples; logprobs to 1e-5, since float rounding depends on the batch's shape (padding,
    rows), and the file's line order follows the batches."""
    rows = lambda p: sorted(map(json.loads, p.read_text().splitlines()),  # noqa: E731
                            key=lambda r: (r["prompt_id"], r["sample_index"]))
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert {**x, "logprobs": None} == {**y, "logprobs": None}
        assert x["logprobs"] == pytest.approx(y["logprobs"], abs=1e-5)


def test_sidecar_records_weights_tokenizer_and_settings(lms, full):
    (model, _), (other, _) = lms
    src = json.loads(source_path(full).read_text())
    assert source_path(full).name == "samples.jsonl.source.json"
    assert src["weights"] == sampled_weights_hash(model) != sampled_weights_hash(other)
    assert src["sampling"] == {"n": 2, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 5,
                               "stop": ["\n\n"], "seed": 4}
    assert src["max_prompt_length"] is None and len(src["tokenizer"]) == 16


def test_resume_with_same_source_completes_byte_for_byte(lms, records, full, tmp_path):
    (model, tok), _ = lms
    part = killed_copy(full, tmp_path)
    _, stats = sample_to_file(model, tok, records, PARAMS, part, batch_size=4, progress=False,
                              weights=sampled_weights_hash(model))
    assert stats.extra["resumed_prompts"] == 2
    assert part.read_bytes() == full.read_bytes()


def test_resume_with_another_batch_size_is_accepted(lms, records, full, tmp_path):
    (model, tok), _ = lms
    part = killed_copy(full, tmp_path)
    _, stats = sample_to_file(model, tok, records, PARAMS, part, batch_size=3, progress=False)
    assert stats.extra["resumed_prompts"] == 2
    assert_same_samples(part, full)


def test_resume_with_other_weights_is_refused(lms, records, full, tmp_path):
    (model, _), (other, tok) = lms
    part = killed_copy(full, tmp_path)
    before = part.read_bytes()
    with pytest.raises(DataError, match=f"other weights \\(weights hash {sampled_weights_hash(model)}, "
                                        f"this model {sampled_weights_hash(other)}\\)"):
        sample_to_file(other, tok, records, PARAMS, part, batch_size=4, progress=False)
    assert part.read_bytes() == before


@pytest.mark.parametrize("change,expect", [({"temperature": 0.7},
                                            "temperature=1.0, this run has temperature=0.7"),
                                           ({"n": 3}, "n=2, this run has n=3"),
                                           ({"seed": 5}, "seed=4, this run has seed=5"),
                                           ({"stop": ()}, "stop=['\\n\\n'], this run has stop=[]")])
def test_resume_with_other_settings_is_refused(lms, records, full, tmp_path, change, expect):
    (model, tok), _ = lms
    part = killed_copy(full, tmp_path)
    params = SamplingParams(**{**PARAMS.__dict__, **change})
    with pytest.raises(DataError, match=re.escape(expect)):
        sample_to_file(model, tok, records, params, part, progress=False)
    with pytest.raises(DataError, match="max_prompt_length=None, this run has max_prompt_length=64"):
        sample_to_file(model, tok, records, PARAMS, part, max_prompt_length=64, progress=False)


def test_file_without_sidecar_is_refused_and_empty_file_starts_fresh(lms, records, full, tmp_path):
    (model, tok), (other, _) = lms
    part = killed_copy(full, tmp_path)
    source_path(part).unlink()
    with pytest.raises(DataError, match="no part.jsonl.source.json, so its source .* is unknown"):
        sample_to_file(model, tok, records, PARAMS, part, progress=False)
    # deleting the samples file (not its sidecar) is enough to start again, with any model
    part.write_text("")
    source_path(part).write_text(source_path(full).read_text())
    sample_to_file(other, tok, records[:1], PARAMS, part, progress=False)
    assert json.loads(source_path(part).read_text())["weights"] == sampled_weights_hash(other)


def test_a_fresh_lora_adapter_resumes_its_base_and_a_trained_one_does_not(lms, records, full, tmp_path):
    """A run that wraps the model in a new adapter (RSO with LoRA, any seed) reuses the base's samples."""
    import torch

    from posttrain.models import load_model
    from posttrain.models.lora import apply_lora
    model, tok = load_model("tiny-llama", seed=3)
    model = apply_lora(model, r=2, seed=1)
    part = killed_copy(full, tmp_path)
    sample_to_file(model, tok, records, PARAMS, part, batch_size=4, progress=False)
    assert_same_samples(part, full)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.01)
    with pytest.raises(DataError, match="other weights"):
        sample_to_file(model, tok, records, PARAMS, killed_copy(full, tmp_path), progress=False)


def test_cli_generate_refuses_other_settings_cleanly(lms, tmp_path, capsys):
    from posttrain.cli import main
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS[:2]))
    args = ["generate", "--model", "tiny-llama", "--data", str(data), "--out", str(tmp_path / "s.jsonl"),
            "--max-new-tokens", "3", "--temperature", "0.7", "--quiet"]
    assert main([*args, "--seed", "1"]) == 0
    assert main([*args, "--seed", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "s.jsonl: was sampled with seed=1, this run has seed=2" in err
    greedy = [*args[:6], str(tmp_path / "g.jsonl"), "--max-new-tokens", "3", "--quiet"]
    assert main([*greedy, "--seed", "1"]) == 0
    assert main([*greedy, "--seed", "2", "--top-k", "5"]) == 0  # greedy never draws: seed and top_k unused
