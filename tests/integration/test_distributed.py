"""Issue 20: sampling and evaluations under several processes give the one-process result.

Two ranks are emulated in one process: each rank is a thread, and posttrain.distributed's world / rank /
barrier / gather_objects are replaced by ones that meet across the threads, so the sharded code paths run
as they do under torchrun (each rank waits at the barriers for the other). The launch of real processes
with torchrun is tests/distributed/generation/test_to_file.py."""
from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest

from posttrain import distributed as dist
from posttrain.generation import to_file
from posttrain.generation.to_file import part_path, sample_to_file, source_path
from tests.distributed.dist_sample_worker import PARAMS, QUESTIONS
from tests.helpers import assert_same_samples


class TwoRanks:
    """An emulated 2-process group; `run(fn)` calls fn(rank) on both ranks at once."""

    def __init__(self, monkeypatch):
        self.local = threading.local()
        self.meet = threading.Barrier(2, timeout=120)
        self.slots: list = [None, None]
        monkeypatch.setattr(dist, "world", lambda: 2)
        monkeypatch.setattr(dist, "rank", lambda: self.local.rank)
        monkeypatch.setattr(dist, "barrier", self.meet.wait)
        monkeypatch.setattr(dist, "gather_objects", self.gather)

    def gather(self, obj):
        self.slots[self.local.rank] = obj
        self.meet.wait()
        out = copy.deepcopy(self.slots)  # a copy, as pickling across processes makes
        self.meet.wait()  # neither rank refills its slot before both have read
        return out

    def run(self, fn) -> list:
        results, errors = [None, None], []

        def body(r):
            self.local.rank = r
            try:
                results[r] = fn(r)
            except BaseException as e:  # the other rank must not wait forever at a barrier
                errors.append(e)
                self.meet.abort()
        threads = [threading.Thread(target=body, args=(r,)) for r in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """One model per emulated rank, as each process loads its own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POSTTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
    from posttrain.models import load_model
    yield [load_model("tiny-llama") for _ in range(2)]
    mp.undo()


@pytest.fixture(scope="module")
def records():
    from posttrain.data.records import PromptRecord
    return [PromptRecord.from_row({"prompt": q, "answer": str(i)}) for i, q in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def full(lms, records, tmp_path_factory):
    """The one-process file and return value."""
    model, tok = lms[0]
    out = tmp_path_factory.mktemp("full") / "samples.jsonl"
    done, stats = sample_to_file(model, tok, records, PARAMS, out, progress=False)
    return out, done, stats


@pytest.fixture
def sampled(monkeypatch):
    """(rank, prompt ids) of every sample() call sample_to_file makes."""
    calls = []
    real = to_file.sample

    def spy(*args, prompt_ids, **kw):
        calls.append((dist.rank(), list(prompt_ids)))
        return real(*args, prompt_ids=prompt_ids, **kw)
    monkeypatch.setattr(to_file, "sample", spy)
    return calls


def two_rank_sample(monkeypatch, lms, records, out):
    return TwoRanks(monkeypatch).run(lambda r: sample_to_file(*lms[r], records, PARAMS, out, progress=False))


def test_two_ranks_write_the_one_process_file(monkeypatch, lms, records, full, sampled, tmp_path):
    full_path, full_done, full_stats = full
    calls = sampled
    out = tmp_path / "samples.jsonl"
    results = two_rank_sample(monkeypatch, lms, records, out)
    assert sorted(calls) == [(0, [0, 1, 2]), (1, [3, 4, 5])]  # each rank sampled its contiguous shard
    assert_same_samples(out, full_path)
    assert source_path(out).read_bytes() == source_path(full_path).read_bytes()
    assert not list(tmp_path.glob("*.part-*"))
    for done, stats in results:  # every rank returns the one-process result
        assert_same_samples(done, full_done)
        assert (stats.prompts, stats.samples, stats.new_tokens) == \
            (full_stats.prompts, full_stats.samples, full_stats.new_tokens)
        assert stats.extra["resumed_prompts"] == 0
    # a finished file is resumed by both ranks: nothing to sample, the same bytes
    calls.clear()
    before = out.read_bytes()
    results = two_rank_sample(monkeypatch, lms, records, out)
    assert sorted(calls) == [(0, []), (1, [])]
    assert out.read_bytes() == before
    assert_same_samples(results[1][0], full_done)
    assert results[1][1].extra["resumed_prompts"] == len(records)


def killed_parts(full_path: Path, out: Path) -> None:
    """What killed runs leave: a 2-process run's part 0 with prompt 0 and half of prompt 1, a 4-process
    run's part 3 with prompt 5 and a torn line, and the sidecar."""
    lines = full_path.read_text().splitlines(keepends=True)  # two lines a prompt
    part_path(out, 0).write_text("".join(lines[0:3]))
    part_path(out, 3).write_text("".join(lines[10:12]) + lines[2][:20])
    source_path(out).write_text(source_path(full_path).read_text())


def test_killed_parts_are_resumed_by_two_ranks(monkeypatch, lms, records, full, sampled, tmp_path):
    full_path, full_done, _ = full
    calls = sampled
    out = tmp_path / "samples.jsonl"
    killed_parts(full_path, out)
    results = two_rank_sample(monkeypatch, lms, records, out)
    assert sorted(calls) == [(0, [1, 2]), (1, [3, 4])]  # the prompts left, split in two
    assert_same_samples(out, full_path)
    assert not list(tmp_path.glob("*.part-*"))
    for done, stats in results:
        assert_same_samples(done, full_done)
        assert stats.extra["resumed_prompts"] == 2


def test_killed_parts_are_resumed_by_one_process(lms, records, full, sampled, tmp_path):
    full_path, full_done, _ = full
    calls = sampled
    out = tmp_path / "samples.jsonl"
    killed_parts(full_path, out)
    done, stats = sample_to_file(*lms[0], records, PARAMS, out, progress=False)
    assert calls == [(0, [1, 2, 3, 4])]
    assert_same_samples(out, full_path)
    assert_same_samples(done, full_done)
    assert stats.extra["resumed_prompts"] == 2 and not list(tmp_path.glob("*.part-*"))


def test_one_process_writes_no_part_file(lms, records, tmp_path, monkeypatch):
    """Without parts and with one process, the file itself is appended to, as before issue 20."""
    monkeypatch.setattr(to_file, "part_path", lambda *a: pytest.fail("a part file under one process"))
    done, _ = sample_to_file(*lms[0], records[:2], PARAMS, tmp_path / "s.jsonl", progress=False)
    assert sorted(done) == [0, 1] and not list(tmp_path.glob("*.part-*"))


def test_parts_of_another_source_are_refused(lms, records, full, tmp_path):
    from posttrain.errors import DataError
    full_path, _, _ = full
    out = tmp_path / "samples.jsonl"
    killed_parts(full_path, out)
    source_path(out).unlink()
    with pytest.raises(DataError, match="no samples.jsonl.source.json"):
        sample_to_file(*lms[0], records, PARAMS, out, progress=False)


# ----------------------------------------------------------------------------------------- evaluations


def test_answer_accuracy_on_two_ranks(monkeypatch, lms):
    from posttrain.eval import generation
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[:5]]
    golds = ["1", "4", "red", "hi", "light"]
    one = generation.answer_accuracy(*lms[0], prompts, golds, max_new_tokens=6)
    shards = []
    real = generation.generate_chat
    monkeypatch.setattr(generation, "generate_chat", lambda m, t, ps, **kw: shards.append(len(ps)) or real(m,
                                                                                                           t,
                                                                                                           ps,
                                                                                                           **kw))
    ranks = TwoRanks(monkeypatch)
    results = ranks.run(lambda r: generation.answer_accuracy(*lms[r], prompts, golds, max_new_tokens=6))
    assert sorted(shards) == [2, 3]
    assert results == [one, one]


def test_math_eval_on_two_ranks(monkeypatch, lms, tmp_path):
    """maj@k samples are seeded by the global problem index, so the votes match one process; only rank 0
    writes the report."""
    from posttrain import files
    from posttrain.eval import math as math_eval
    from posttrain.eval.math import MathItem, evaluate, write_results
    from posttrain.generation import sampler
    # rows hold the sampled texts themselves
    monkeypatch.setattr(math_eval, "extract_answer", lambda text: text)
    items = [MathItem(q, str(i), {"level": i % 2}) for i, q in enumerate(QUESTIONS[:5])]
    kw = dict(k=3, temperature=1.0, max_new_tokens=6, seed=2)
    one = evaluate(*lms[0], items, **kw)
    write_results(one, tmp_path / "one", "t")
    ranks = TwoRanks(monkeypatch)
    seen, writers = [], []
    real_sample, real_write = sampler.sample, files.atomic_write_text
    monkeypatch.setattr(sampler, "sample", lambda *a, prompt_ids=None, **k: seen.append(prompt_ids)
                        or real_sample(*a, prompt_ids=prompt_ids, **k))
    monkeypatch.setattr(files, "atomic_write_text", lambda *a,
                        **k: writers.append(dist.rank()) or real_write(*a, **k))

    def rank_run(r):
        res = evaluate(*lms[r], items, **kw)
        return res, write_results(res, tmp_path / "two", "t")
    results = ranks.run(rank_run)
    assert results[0][0] == results[1][0] == one
    assert sorted(seen) == [[0, 1], [0, 1], [2, 3, 4], [2, 3, 4]]  # greedy and votes, per shard
    assert set(writers) == {0} and len(writers) == 2
    for name in ("report.md", "graded.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_tool_eval_on_two_ranks(monkeypatch, lms, tmp_path):
    from posttrain import files
    from posttrain.eval import tools
    from posttrain.generation import sampler
    from posttrain.tools.loaders import ToolExample
    tool = {"name": "get_time", "description": "Time in a zone.",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                           "required": ["timezone"]}}
    examples = [ToolExample(f"e{i}", "bfcl", "simple", [{"role": "user", "content": q}], [tool],
                            possible_answer=[{"get_time": {"timezone": ["UTC"]}}]) for i,
                q in enumerate(QUESTIONS)]
    one = tools.generate_completions(*lms[0], examples, max_new_tokens=6)
    tools.write_results(tools.score(examples, one), tmp_path / "one", "t")
    ranks = TwoRanks(monkeypatch)
    shards, writers = [], []
    real_sample, real_write = sampler.sample, files.atomic_write_text
    monkeypatch.setattr(sampler, "sample", lambda m, t, ps, *a, **k: shards.append(len(ps)) or real_sample(m,
                                                                                                           t,
                                                                                                           ps,
                                                                                                           *a,
                                                                                                           **k))
    monkeypatch.setattr(files, "atomic_write_text", lambda *a,
                        **k: writers.append(dist.rank()) or real_write(*a, **k))

    def rank_run(r):
        texts = tools.generate_completions(*lms[r], examples, max_new_tokens=6)
        return texts, tools.write_results(tools.score(examples, texts), tmp_path / "two", "t")
    results = ranks.run(rank_run)
    assert sorted(shards) == [3, 3]
    assert results[0][0] == results[1][0] == one and len(one) == len(examples)
    assert set(writers) == {0} and len(writers) == 2
    for name in ("report.md", "graded.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
