"""A run folder's layout: its training checkpoints (`checkpoints/step-N/`) and its iterations' folders.

The one place that names these folders: the engine writes checkpoints here, resumes, exports and the
loading of a run's models find them here.
"""
from __future__ import annotations

import os
from pathlib import Path

CHECKPOINTS_DIR = "checkpoints"


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """The folder of the checkpoint written after `step` optimizer steps."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:07d}"


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """A run folder's checkpoints (`checkpoints/step-N/`), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    return sorted(folder.glob("step-*"), key=lambda p: p.name) if folder.is_dir() else []


def latest_checkpoint(run_dir: str | os.PathLike, *, holding: str | None = None) -> Path | None:
    """The newest checkpoint, or the newest whose model/ holds the file `holding`."""
    for c in reversed(checkpoints(run_dir)):
        if holding is None or (c / "model" / holding).is_file():
            return c
    return None


def iteration_dir(run_dir: Path, t: int) -> Path:
    """Iteration 1 is the run folder itself (a one-iteration run has the plain layout, and raising
    `pipeline.iterations` later continues it); iteration k >= 2 lives in iter-k/."""
    return run_dir if t == 0 else run_dir / f"iter-{t + 1}"
