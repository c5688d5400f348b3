"""Where a run's step metrics go besides metrics.jsonl: the trackers of `train.report_to`, behind one
interface (`Tracker`: `log(metrics, step)`, `close()`), each writing under the run folder and nowhere else.

- `tensorboard`: event files in `<run>/tensorboard/` (a resumed run purges the events after its checkpoint);
- `mlflow`: MLflow's file store in `<run>/mlruns/` (tracking URI `file:<run>/mlruns`, no server; experiment
  "posttrain", the run named after the run folder; a resumed run logs into the same MLflow run, where the
  steps after the checkpoint keep their earlier values beside the new ones: MLflow has no purge);
- `wandb`: an offline Weights & Biases run in `<run>/wandb/` (`wandb sync <run>/wandb/offline-run-*` uploads
  it; a resumed run reuses the id, kept in `<run>/wandb/posttrain-run-id`).

A tracker that is asked for and not installed is an error naming the extra to install (`check_installed`,
called when a recipe is run and when an engine starts), never a silent JSONL-only run. Only rank 0 opens
trackers (the engine's metrics log lives there alone).
"""
from __future__ import annotations

import importlib.util
import os
import time
import uuid
from pathlib import Path
from typing import Protocol, Sequence

import yaml

from posttrain.config import flat
from posttrain.errors import RecipeError

# tracker name -> (the module it needs, the posttrain extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
            "wandb": ("wandb", "wandb")}
PROJECT = "posttrain"  # MLflow's experiment, W&B's project


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalar metrics of optimisation step `step` (1-based)."""

    def close(self) -> None:
        ...


def missing(names: Sequence[str]) -> list[str]:
    """The trackers among `names` whose package is not installed."""
    out = []
    for name in names:
        if name not in TRACKERS:
            raise RecipeError(f"train.report_to: unknown tracker {name!r}; the trackers are "
                              f"{', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name][0]) is None:
            out.append(name)
    return out


def check_installed(names: Sequence[str]) -> None:
    """Raise, naming the extra to install, if a tracker of `train.report_to` is not installed."""
    absent = missing(names)
    if absent:
        extras = ",".join(TRACKERS[n][1] for n in absent)
        raise RecipeError(f"train.report_to asks for {', '.join(absent)}, which "
                          f"{'is' if len(absent) == 1 else 'are'} not installed: pip install "
                          f"'posttrain[{extras}]' (or drop {'it' if len(absent) == 1 else 'them'} from "
                          f"train.report_to)")


def run_settings(run_dir: Path, fallback: dict) -> dict:
    """The settings a tracker records with the run: the recipe the runner saved in the run folder (flat
    `section.key` names), else `fallback` (the train settings of an engine used on its own)."""
    path = run_dir / "recipe.yaml"
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {"train": fallback}
    return flat(raw or {})


def scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker:
    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter
        # a resumed run redoes the steps after its checkpoint: their old events are dropped
        self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step > 0 else None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, run_dir: Path, resume_step: int, settings: dict):
        # MLflow 3 keeps its file store for those who ask for it; the run folder is that store
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
        self.metric_type = Metric
        self.client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
        exp = self.client.get_experiment_by_name(PROJECT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(PROJECT)
        runs = self.client.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=1) \
            if resume_step > 0 else []
        if runs:
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in sorted(settings.items())]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.metric_type(k, v, now, step)
                                                    for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    ID_FILE = "posttrain-run-id"

    def __init__(self, run_dir: Path, resume_step: int, settings: dict):
        import wandb
        folder = run_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / self.ID_FILE
        resumed = resume_step > 0 and id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        self.run = wandb.init(mode="offline", dir=str(run_dir), project=PROJECT, name=run_dir.name, id=run_id,
                              resume="allow", config=settings, reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                                      disable_git=True, save_code=False))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()
        import wandb
        wandb.teardown()  # waits for wandb-core to write the run out: the file is whole when this returns


def open_trackers(names: Sequence[str], run_dir: Path, *, resume_step: int = 0,
                  settings: dict | None = None) -> list[Tracker]:
    """The trackers of `names`, writing under `run_dir` (rank 0 only); `resume_step` > 0: the run resumes
    after that step."""
    check_installed(names)
    run_dir.mkdir(parents=True, exist_ok=True)
    recorded = run_settings(run_dir, settings or {}) if set(names) & {"mlflow", "wandb"} else {}
    out: list[Tracker] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            out.append(TensorBoardTracker(run_dir, resume_step))
        elif name == "mlflow":
            out.append(MLflowTracker(run_dir, resume_step, recorded))
        else:
            out.append(WandbTracker(run_dir, resume_step, recorded))
    return out
