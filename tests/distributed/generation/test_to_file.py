"""Sampling to a file under two real processes (torchrun, gloo on CPU) gives the one-process file
(issue 20). The sharded code paths on two ranks emulated in one process:
tests/integration/test_distributed.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.distributed.dist_sample_worker import QUESTIONS, run
from tests.helpers import ROOT, assert_same_samples


def test_torchrun_two_processes_write_the_one_process_file(tmp_path, monkeypatch):
    """Two real processes (gloo on CPU): the file has the one-process bytes, every rank returns it."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    one = tmp_path / "one"
    one.mkdir()
    done, _ = run(one)
    two = tmp_path / "two"
    two.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "distributed" / "dist_sample_worker.py"), str(two)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_samples(two / "samples.jsonl", one / "samples.jsonl")
    assert not list(two.glob("*.part-*"))
    want = json.loads(json.dumps(done))  # prompt ids as JSON keys
    for r in (0, 1):
        got = json.loads((two / f"returned-{r}.json").read_text())
        assert_same_samples(got["done"], want)
        assert got["world"] == 2 and got["samples"] == 2 * len(QUESTIONS)
