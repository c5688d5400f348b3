"""The metrics of a run: what a batch counts, sums over processes turned into means, and the log they
land in (metrics.jsonl and the trackers of posttrain/trackers.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from posttrain import distributed
from posttrain.trackers import Tracker, scalars


def count_tokens(batch: dict[str, Any]) -> int:
    """Tokens the model processed: real tokens of a padded batch, every position of a packed one."""
    attn = batch.get("attention_mask")
    if isinstance(attn, torch.Tensor) and attn.dim() == 2:
        return int(attn.sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 0


def reduce_metrics(sums: dict[str, float], units: float) -> dict[str, float]:
    """Objective metrics are sums over units, reported as means; `*_count` metrics stay totals."""
    return {k: v if k.endswith("_count") else v / max(units, 1e-12) for k, v in sums.items()}


def metric_keys(sums: dict) -> list[str]:
    """The union of every rank's metric names (a rank with no eval batch, or an objective that reports a
    metric only for some batches, has fewer)."""
    if distributed.world() == 1:
        return sorted(sums)
    return sorted({k for part in distributed.gather_objects(sorted(sums)) for k in part})


def sum_metrics(totals: dict[str, float],
                sums: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(`totals`, the objective's metric `sums`), each summed over ranks; every rank calls it (collective)."""
    glob = distributed.sum_over_ranks({**totals, **{f"m/{k}": sums.get(k, 0.0) for k in metric_keys(sums)}})
    return {k: glob[k] for k in totals}, {k[2:]: v for k, v in glob.items() if k.startswith("m/")}


class MetricsLog:
    """metrics.jsonl always, and every tracker of `train.report_to` (posttrain/trackers.py), which the engine
    opens on rank 0 and hands over: each step's scalars go to each of them."""

    def __init__(self, run_dir: Path, resume_step: int, trackers: Sequence[Tracker] = ()):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():
            # a resumed run rewrites history after its checkpoint, so the log has one line per step
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.trackers = list(trackers)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log(values, record["step"])

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
