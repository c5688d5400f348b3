"""Every method under 2 real processes (torchrun, gloo on CPU) equals one process with the same global batch:
per-step loss, grad norm, units and tokens of the first steps, to 1e-5 (issue 20); with DDP, with the
parameters, gradients and optimizer state sharded (train.fsdp: FSDP 2), and under DeepSpeed ZeRO-2 and ZeRO-3
(train.zero_stage; those cases skip when deepspeed is not installed).

One launch runs every case (a launch costs ~10 s of imports), once with plain python and once with
torchrun --nproc_per_node 2; each with its own POSTTRAIN_CACHE so the 2-process run computes its
reference log-probs rather than reading the 1-process run's.

Marked slow (five launches, 163 s on 2 quiet cores on 2026-12-02): CI runs it after `make test` (.ci/run).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.dist_methods_worker import CASES
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

WORKER = ROOT / "tests" / "distributed" / "dist_methods_worker.py"
COMPARED = ("loss", "grad_norm", "units", "tokens")


def launch(out: Path, nproc: int, extra: tuple[str, ...] = ()) -> None:
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POSTTRAIN_CACHE": str(out / "cache"),
           "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), *CASES]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), str(out), *CASES, *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    assert json.loads((out / "world.json").read_text())["world"] == nproc  # the processes really ran


HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
# how each multi-process run shards: the launch's overrides
SHARDING = {"ddp": (), "fsdp": ("train.fsdp=true",), "zero2": ("train.zero_stage=2",),
            "zero3": ("train.zero_stage=3",)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dist")
    launch(base / "one", 1)
    for kind, extra in SHARDING.items():
        if kind.startswith("zero") and not HAS_DEEPSPEED:
            continue
        launch(base / kind, 2, extra)
    return {kind: base / kind / "runs" for kind in ("one", *SHARDING) if (base / kind).is_dir()}


def sharded_run(runs: dict[str, Path], kind: str) -> Path:
    if kind not in runs:
        pytest.skip("deepspeed is not installed (make setup installs it; pip install deepspeed)")
    return runs[kind]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-6)


@pytest.mark.parametrize("kind", list(SHARDING))
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one(runs, case, kind):
    one, two = runs["one"], sharded_run(runs, kind)
    logs = sorted(p.relative_to(one / case) for p in (one / case).rglob("metrics.jsonl"))
    assert logs and logs == sorted(p.relative_to(two / case) for p in (two / case).rglob("metrics.jsonl"))
    for log in logs:  # the run's, and an inner engine run's (step-DAPO's critic)
        compare(case, *(history((r / case / log).parent) for r in (one, two)))


@pytest.mark.parametrize("kind", ["fsdp", "zero2", "zero3"])
def test_sharded_runs_checkpoints_hold_the_whole_state(runs, kind):
    import torch
    from safetensors.torch import load_file
    one, ddp, sharded = runs["one"], runs["ddp"], sharded_run(runs, kind)
    for case in ("sft", "reward_model"):
        train = json.loads((sharded / case / "summary.json").read_text())["train"]
        assert (train["processes"], train["sharding"]) == (2, kind)  # the engine really sharded this way
        final = [sorted((r / case / "checkpoints").iterdir())[-1] for r in (one, ddp, sharded)]
        # the optimizer state gathered from the shards, keyed by parameter name (positions without sharding)
        saved = [torch.load(c / "optimizer.pt", weights_only=True) for c in final]
        keys = [list(s["state"]) for s in saved]
        assert all(isinstance(k, int) for k in keys[0] + keys[1]) and all(isinstance(k, str) for k in keys[2])
        assert len(keys[2]) == len(keys[0])
        # whole tensors, the one-process run's Adam moments (by position: the optimizer's parameter order)
        for pos, name in enumerate(keys[2]):
            for m in ("exp_avg", "exp_avg_sq"):
                a, b = saved[0]["state"][pos][m], saved[2]["state"][name][m]
                assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-7), (kind, case, name,
                                                                                           m)
        # the saved weights are whole (not rank 0's shard) and those of the one-process run: Adam's first
        # steps move a weight by ~lr whatever its gradient's size, so a near-zero gradient (the reward head's
        # bias) rounded otherwise can move it by up to lr per step (0.0011 vs 0.0010 measured): atol is 2
        # steps of lr
        for f in sorted(p.name for p in (final[0] / "model").glob("*.safetensors")):
            a, b = load_file(final[0] / "model" / f), load_file(final[2] / "model" / f)
            assert a.keys() == b.keys()
            for k in a:
                assert a[k].shape == b[k].shape and torch.allclose(a[k], b[k], rtol=1e-4, atol=2e-3), (case,
                                                                                                       f, k)


def compare(case: str, one: list[dict], two: list[dict], rel: float = 1e-5) -> None:
    assert len(one) == len(two) >= 2
    for a, b in zip(one, two):
        for k in COMPARED:
            if k in a:
                assert k in b and close(a[k], b[k], rel), (case, a["step"], k, a[k], b[k])
        for k in a:  # every other logged metric too (method metrics, rollout stats, evals)
            if isinstance(a[k], float) and k not in ("tokens_per_s", "step_time", "elapsed", "lr"):
                assert close(a[k], b.get(k, float("nan")), rel), (case, a["step"], k, a[k], b.get(k))


def test_the_reference_was_computed_by_both_runs_and_summaries_agree(runs):
    for r in runs.values():
        s = json.loads((r / "dpo_precomputed" / "summary.json").read_text())
        assert s["data"]["reference_cache"] == "computed"
    one, *others = (json.loads((r / "sft_lora_eval" / "summary.json").read_text()) for r in runs.values())
    for two in others:
        assert close(one["train"]["final"]["eval/loss"], two["train"]["final"]["eval/loss"])


def test_the_two_process_ppo_run_was_resumed_inside_an_iteration(runs):
    # ppo_resumed: 2 optimisation steps per rollout; killed after step 1, its checkpoint holds the buffer
    for kind, two in runs.items():
        if kind != "one":
            assert (two.parent / "ppo_resumed.interrupted").read_text() == "step-0000001"
    # the one-process run is uninterrupted
    assert not (runs["one"].parent / "ppo_resumed.interrupted").exists()


def test_only_rank_zero_wrote_and_resume_files_hold_every_rank(runs):
    two = runs["ddp"]
    ckpt = sorted((two / "sft" / "checkpoints").iterdir())[-1]
    assert (ckpt / "rng.pt").is_file() and (ckpt / "rng-1.pt").is_file()
    leftovers = [p for p in two.rglob("*") if ".tmp-" in p.name or ".rank" in p.name]
    assert not leftovers, leftovers
