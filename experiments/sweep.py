"""Run one base recipe under several sets of overrides and collect what each run measured.

Every run is an ordinary `posttrain train` of the base recipe plus its overrides (each row records
them), so any single cell of a result table can be reproduced by hand. Finished runs are reused:
a sweep killed halfway continues where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

from posttrain.config import load_recipe
from posttrain.files import atomic_write_text
from posttrain.runner import read_history, run_recipe


def run_variant(base: Path, overrides: list[str], *, show_progress: bool = False,
                collect: bool = False) -> dict | None:
    """Train one variant (or read its summary if that run already finished) and return one row.
    `collect`: never train; None for a run that has not finished (a report over what is there)."""
    recipe = load_recipe(base, overrides)
    summary_path = recipe.run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
    elif collect:
        return None
    else:
        summary = run_recipe(recipe, resume=True, show_progress=show_progress)
    history = read_history(recipe.run_dir)
    row = {"name": recipe.name, "overrides": overrides, "seed": recipe.seed,
           "steps": summary["train"]["steps"],
           "wall_time_s": summary["wall_time_s"], "train_time_s": summary["train"]["wall_time_s"],
           "history": history}
    for phase in ("before", "after"):
        if phase in summary:
            row[f"{phase}_accuracy"] = summary[phase]["accuracy"]
            row["eval_n"] = summary[phase]["n"]
    last_eval = next((h for h in reversed(history) if any(k.startswith("eval/") for k in h)), {})
    row.update({k: v for k, v in last_eval.items() if k.startswith("eval/")})
    return row


def curve(row: dict, key: str) -> tuple[list[int], list[float]]:
    pts = [(h["step"], h[key]) for h in row["history"] if key in h]
    return [p[0] for p in pts], [p[1] for p in pts]


READING_HEADER = "## Reading"


def kept_reading(path: Path) -> list[str]:
    """The `## Reading` section of the page at `path` (from its header to the end), as lines to append to a
    regenerated page; [] when there is none. A reading is written by a person after the numbers, never by
    the script that writes the tables, so regenerating a page must not delete it."""
    if not path.exists():
        return []
    text = path.read_text()
    i = text.find("\n" + READING_HEADER)
    return [text[i + 1:].rstrip("\n"), ""] if i >= 0 else []


def publish(path: Path, text: str) -> int:
    """Write a report atomically with the hand-written `## Reading` of the page it replaces kept at its end,
    say where, and return the exit status of an experiment's main."""
    reading = kept_reading(path) if "\n" + READING_HEADER not in text else []
    if reading:
        text = "\n".join([text.rstrip("\n"), "", *reading])
    atomic_write_text(path, text)
    print(path)
    return 0
