"""`posttrain synth math` with two worker processes (`python -m posttrain`): they write the same
files as one process."""
from __future__ import annotations

import pytest

from posttrain.synth.math import run_synth
from tests.helpers import ROOT, assert_same_samples
from tests.synth_helpers import NARROW, OUTPUTS, SAMPLED
from tests.synth_helpers import inputs as _inputs
from tests.synth_helpers import recipe as _recipe

# ---------------------------------------------------------------- the pipeline


@pytest.mark.slow
def test_two_workers_write_what_one_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)  # the workers run `python -m posttrain`
    one, two = tmp_path / "one", tmp_path / "two"
    for p in (one, two):
        p.mkdir()
        _inputs(p)
    run_synth(_recipe(one, **NARROW), progress=False)
    r2 = _recipe(two, workers=2, **NARROW)
    stats = run_synth(r2, two / "synth.yaml", progress=False)
    assert stats["solutions"]["workers"] == 2
    assert (two / "s" / "solutions.shard-1-of-2.jsonl").exists()
    for f in OUTPUTS:
        if f in SAMPLED:  # a worker's batches hold other rows: log-probs to float rounding
            assert_same_samples(two / "s" / f, one / "s" / f)
        else:
            assert (two / "s" / f).read_bytes() == (one / "s" / f).read_bytes(), f
