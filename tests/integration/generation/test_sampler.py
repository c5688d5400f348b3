"""The KV-cache sampler on the tiny model: greedy equals transformers' generate, log-probs equal a
teacher-forced forward, seeds make samples independent of batching, stop strings, and resumable sampling to
a file."""
import json

import torch

from posttrain.data.records import PromptRecord
from posttrain.generation.sampler import SamplingParams, sample, stop_ids
from posttrain.generation.to_file import read_samples, sample_to_file, source_path
from posttrain.logprobs import completion_logprobs
from tests.helpers import QUESTIONS, prompts


def test_greedy_matches_transformers_generate(lm):
    model, tok = lm
    ps = prompts(tok)
    out, stats = sample(model, tok, ps, SamplingParams(temperature=0, max_new_tokens=12), batch_size=4)
    eos = sorted(stop_ids(tok, model))
    for p, (s,) in zip(ps, out):
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=12, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id)
        ref_new = ref[0, len(p):].tolist()
        assert s.token_ids == ref_new[:len(s.token_ids)] and len(s.token_ids) == len(ref_new)
    assert stats.new_tokens == sum(len(s.token_ids) for (s,) in out) and stats.tokens_per_s > 0


def test_generate_chat_is_the_sampler_on_chat_prompts(lm):
    from posttrain.generation import generate_chat
    model, tok = lm
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    texts = generate_chat(model, tok, convs, max_new_tokens=10, batch_size=4)
    out, _ = sample(model, tok, prompts(tok), SamplingParams(temperature=0, max_new_tokens=10), batch_size=3)
    assert texts == [s.text.strip() for (s,) in out]
    hot = dict(max_new_tokens=10, temperature=1.0, seed=5)
    assert generate_chat(model, tok, convs, batch_size=2, **hot) == generate_chat(model, tok, convs,
                                                                                  batch_size=5, **hot)


def test_logprobs_equal_a_teacher_forced_forward(lm):
    model, tok = lm
    ps = prompts(tok)[:4]
    out, _ = sample(model, tok, ps, SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=5),
                    batch_size=8)
    for p, samples in zip(ps, out):
        for s in samples:
            ids = torch.tensor([p + s.token_ids])
            labels = torch.tensor([[-100] * len(p) + s.token_ids])
            tok_lp, mask = completion_logprobs(model, ids, torch.ones_like(ids), labels)
            assert torch.allclose(tok_lp[mask], torch.tensor(s.logprobs), atol=1e-4)


def test_same_seed_same_samples_whatever_the_batching(lm):
    model, tok = lm
    ps = prompts(tok)
    params = SamplingParams(n=3, temperature=0.9, top_p=0.95, top_k=50, max_new_tokens=8, seed=11)
    a, _ = sample(model, tok, ps, params, batch_size=18)
    b, _ = sample(model, tok, ps, params, batch_size=3)
    c, _ = sample(model, tok, ps[2:], params, prompt_ids=range(2, len(ps)), batch_size=6)
    key = lambda out: [[s.token_ids for s in row] for row in out]  # noqa: E731
    assert key(a) == key(b) and key(a)[2:] == key(c)
    assert len({tuple(s.token_ids) for s in a[0]}) > 1  # the n samples of a prompt differ
    d, _ = sample(model, tok, ps, SamplingParams(n=3, temperature=0.9, max_new_tokens=8, seed=12),
                  batch_size=18)
    assert key(d) != key(a)


def test_n_greedy_samples_are_identical_and_top_k_1_is_greedy(lm):
    model, tok = lm
    ps = prompts(tok)[:3]
    g, _ = sample(model, tok, ps, SamplingParams(temperature=0, max_new_tokens=8))
    n, _ = sample(model, tok, ps, SamplingParams(n=4, temperature=0, max_new_tokens=8))
    k1, _ = sample(model, tok, ps, SamplingParams(n=2, temperature=1.3, top_k=1, max_new_tokens=8, seed=2))
    for row_g, row_n, row_k in zip(g, n, k1):
        assert all(s.token_ids == row_g[0].token_ids for s in row_n + row_k)


def test_stop_strings_cut_the_text(lm):
    model, tok = lm
    ps = prompts(tok)[:1]
    params = SamplingParams(temperature=1.0, max_new_tokens=20, seed=1)
    (free,), _ = sample(model, tok, ps, params)
    text = free[0].text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip(), text
    (cut,), _ = sample(model, tok, ps, SamplingParams(temperature=1.0, max_new_tokens=20, seed=1, stop=(stop,
                                                                                                        )))
    assert cut[0].finish_reason == "stop" and stop not in cut[0].text
    assert text.startswith(cut[0].text) and len(cut[0].token_ids) <= len(free[0].token_ids)


def test_sampling_to_file_resumes_after_a_kill_without_duplicates(lm, tmp_path):
    model, tok = lm
    records = [PromptRecord.from_row({"prompt": q, "answer": str(i)}) for i, q in enumerate(QUESTIONS)]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=4)
    full = tmp_path / "full.jsonl"
    sample_to_file(model, tok, records, params, full, batch_size=4, progress=False)
    lines = full.read_text().splitlines(keepends=True)
    assert len(lines) == 12
    # a kill: the first 5 lines survived (prompt 2 has 1 of its 2 samples), then a torn line
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:5]) + lines[5][:17])
    source_path(part).write_text(source_path(full).read_text())
    done, dirty = read_samples(part, 2)
    assert dirty and sorted(done) == sorted({json.loads(ln)["prompt_id"] for ln in lines[:4]})
    _, stats = sample_to_file(model, tok, records, params, part, batch_size=4, progress=False)
    assert stats.extra["resumed_prompts"] == 2
    # noqa: E731
    rows = lambda p: sorted((r["prompt_id"], r["sample_index"], r["text"], tuple(r["token_ids"]))
                            for r in map(json.loads, p.read_text().splitlines()))
    assert rows(part) == rows(full)  # same samples, none twice
    row = json.loads(lines[0])
    assert {"prompt", "answer", "meta", "logprobs", "finish_reason"} <= set(row)


def test_cli_generate_to_file(tmp_path, monkeypatch, capsys):
    from posttrain.cli import main
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS[:3]))
    args = ["generate", "--model", "tiny-llama", "--data", str(data), "--out", str(tmp_path / "s.jsonl"),
            "--n", "2", "--max-new-tokens", "4", "--temperature", "0.7", "--quiet"]
    assert main(args) == 0
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 6
    assert main(args) == 0  # a rerun resumes: nothing new
    assert "3 prompts already there" in capsys.readouterr().out
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 6
    assert main(["generate", "--model", "tiny-llama", "--data", str(data)]) == 2


def test_stop_ids_come_from_the_tokenizer_and_the_generation_config(lm):
    model, tok = lm
    assert tok.convert_ids_to_tokens(sorted(stop_ids(tok))) == ["<|im_end|>"]  # SmolLM2's eos ends a turn
    model.generation_config.eos_token_id = [tok.eos_token_id, 7]
    try:
        assert stop_ids(tok, model) == {tok.eos_token_id, 7}
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
