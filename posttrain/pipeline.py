"""One command runs every recipe: a method's stages (e.g. RSO's sample -> pairs -> train), iterated.

Each stage writes its outputs under the iteration's folder (the run folder for the first, `iter-K/` for
iteration K >= 2) and resumes its own partial work (a samples file, training checkpoints).
`<run>/pipeline.json` records, per stage, its fingerprint and whether it finished:
- settings: the recipe keys that decide the stage's output, with their values;
- inputs: hashes of the files it reads from earlier stages;
- start: the identity of the weights it starts from (the model's files, the merged adapter's, and the
  previous iteration's final checkpoint).
Rerunning the command skips finished stages and resumes the one in progress. A recipe change that
invalidates a recorded stage is refused, naming the stage and the key, unless `restart_from` names that
stage (or an earlier one): then it and everything after it are deleted and redone. Raising
`pipeline.iterations` continues a finished run with more iterations; raising a key of `EXTEND_KEYS`
(`train.max_steps`) on the run's last recorded stage continues that stage (training goes on from its last
checkpoint) instead of refusing.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from posttrain import distributed
from posttrain.checkpoints import iteration_dir
from posttrain.contracts import StageDef
from posttrain.errors import RecipeError, TrainingError
from posttrain.files import atomic_write_json, file_hash

STATE_FILE = "pipeline.json"
ALL = "*"  # restart_from: redo every stage
# keys that change how a run is watched or kept, not what it computes
WATCH_KEYS = ("name", "output_dir", "pipeline.iterations", "train.save_every", "train.keep_checkpoints",
              "train.log_every", "train.eval_every", "train.report_to", "data.eval", "generation_eval")
# keys a finished stage may be continued along: raised (and nothing else changed) on the run's last recorded
# stage, the stage runs again and resumes its own work (the engine from its last checkpoint)
EXTEND_KEYS = ("train.max_steps",)


def select(settings: dict[str, Any], prefixes: tuple[str, ...] | None = None,
           exclude: tuple[str, ...] = WATCH_KEYS) -> dict[str, Any]:
    """The keys of a flat recipe under `prefixes` (all when None), without `exclude`d ones."""
    def under(k: str, ps) -> bool:
        return any(k == p or k.startswith(p + ".") for p in ps)
    return {k: v for k, v in settings.items()
            if (prefixes is None or under(k, prefixes)) and not under(k, exclude)}


def stage_key(name: str, t: int) -> str:
    return name if t == 0 else f"iter-{t + 1}/{name}"


class PipelineState:
    def __init__(self, run_dir: Path):
        self.path = run_dir / STATE_FILE
        stages = json.loads(self.path.read_text())["stages"] if self.path.exists() else {}
        self.stages: dict[str, dict] = stages

    def save(self) -> None:
        if distributed.is_main():
            atomic_write_json(self.path, {"stages": self.stages})


def _files_identity(folder: Path) -> dict[str, str]:
    return {f.name: file_hash(f) for f in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}


def _first_difference(old: dict, new: dict) -> str | None:
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<unset>") != new.get(k, "<unset>"):
            return k
    return None


def check_fingerprint(key: str, record: dict, fp: dict) -> None:
    status = "finished" if record["status"] == "done" else "is in progress"
    redo = f"rerun with --restart-from {key} to redo it and every stage after it, or restore the recipe"
    k = _first_difference(record["settings"], fp["settings"])
    if k is not None:
        raise RecipeError(f"stage '{key}' {status} with {k}={record['settings'].get(k, '<unset>')!r}; "
                          f"the recipe now says {fp['settings'].get(k, '<unset>')!r}: {redo}")
    k = _first_difference(record["inputs"], fp["inputs"])
    if k is not None:
        raise RecipeError(f"stage '{key}' {status} on another {k} (the file changed since): {redo}")
    if record["start"] != fp["start"]:
        k = _first_difference(record["start"], fp["start"])
        raise RecipeError(f"stage '{key}' {status} from other starting weights ({k} differs): {redo}")


def extension(key: str, record: dict, fp: dict, later: list[str]) -> dict | None:
    """{key: {"from": old, "to": new}} when the only change to finished stage `key` raises keys of
    EXTEND_KEYS, None when nothing extends it; refused (RecipeError) when a stage recorded after it
    (`later`) would be left built on the shorter one."""
    if record["status"] != "done" or record["inputs"] != fp["inputs"] or record["start"] != fp["start"]:
        return None
    old, new = record["settings"], fp["settings"]
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    if not changed or not changed <= set(EXTEND_KEYS):
        return None
    if not all(isinstance(old.get(k), int) and isinstance(new.get(k), int) and new[k] > old[k]
               for k in changed):
        return None
    if later:
        k = sorted(changed)[0]
        raise RecipeError(f"stage '{key}' finished with {k}={old[k]!r}; raising it to {new[k]!r} would "
                          f"continue it under stage '{later[0]}', already built on it: rerun with "
                          f"--restart-from {key} to redo it and every stage after it, or restore the recipe")
    return {k: {"from": old[k], "to": new[k]} for k in sorted(changed)}


def _remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


@dataclass
class IterationContext:
    """What the stages of one iteration share: its folder, index, and the policy (loaded on first use)."""
    recipe: Any
    iteration: int
    dir: Path
    progress: bool
    load: Callable[[], tuple]
    start: dict  # identity of the starting weights
    _policy: tuple | None = None
    # set while a finished stage is continued (pipeline.EXTEND_KEYS): {key: {"from": old, "to": new}}
    continued: dict | None = None

    def policy(self) -> tuple:
        if self._policy is None:
            self._policy = self.load()
        return self._policy

    @property
    def iterations(self) -> int:
        return self.recipe.pipeline.iterations


def start_identity(recipe, previous_final: Path | None) -> dict:
    m = recipe.model
    ident = {"model": _files_identity(Path(m.name))}
    if m.adapter is not None:  # imported here: the models are heavy to import
        from posttrain.models.start import adapter_folder
        ident["adapter"] = _files_identity(adapter_folder(m.adapter))
    if previous_final is not None:
        ident["previous"] = _files_identity(previous_final)
    return ident


def run_stages(recipe, stages_for: Callable[[IterationContext], list[StageDef]],
               load_iteration: Callable[[int], tuple], *, restart_from: str | None = None,
               until: str | None = None, progress: bool = True,
               final_model: Callable[[Path], Path | None], skipped: list[str] | None = None) -> list[dict]:
    """Run every iteration's stages; returns per iteration {stage name: stats}. The keys of the stages found
    finished and not run again are appended to `skipped` (when given)."""
    run_dir, T = recipe.run_dir, recipe.pipeline.iterations
    state = PipelineState(run_dir)
    restarting = restart_from == ALL
    results: list[dict] = []
    previous_final: Path | None = None
    for t in range(T):
        it_dir = iteration_dir(run_dir, t)
        ctx = IterationContext(recipe, t, it_dir, progress, (lambda t=t: load_iteration(t)),
                               start_identity(recipe, previous_final))
        stats: dict[str, dict] = {}
        stages = stages_for(ctx)
        if t == 0:
            _check_stage_name(restart_from, [st.name for st in stages], T)
        for st in stages:
            key = stage_key(st.name, t)
            if restart_from in (key, f"iter-{t + 1}/{st.name}", st.name if t == 0 else None, f"iter-{t + 1}"):
                restarting = True
            fp = {"settings": {k: st.settings[k] for k in sorted(st.settings)},
                  "inputs": {name: file_hash(it_dir / name) if (it_dir / name).is_file() else "missing"
                             for name in st.inputs},
                  "start": ctx.start if st.uses_weights else {}}
            record = state.stages.get(key)
            continued = None
            if restarting:
                if distributed.is_main():
                    _remove([it_dir / o for o in st.outputs])
                distributed.barrier()
                state.stages.pop(key, None)
                record = None
            if record is not None:
                later = list(state.stages)[list(state.stages).index(key) + 1:]
                continued = extension(key, record, fp, later)
                if continued is None:
                    check_fingerprint(key, record, fp)
                if record["status"] == "done" and continued is None:
                    if skipped is not None:
                        skipped.append(key)
                    stats[st.name] = record.get("stats", {})
                    if until == key or until == st.name:
                        return results + [stats]
                    continue
            state.stages[key] = {"status": "running", **fp}
            if continued is not None:
                # the record says so until it finishes: an interrupted continuation resumes as a plain stage
                state.stages[key]["continues"] = continued
            elif record is not None and "continues" in record:
                continued = record["continues"]
                state.stages[key]["continues"] = continued
            state.save()
            began = time.time()
            ctx.continued = continued
            try:
                out = st.run() if st.parallel else _on_main(st.run, key)
            finally:
                ctx.continued = None
            distributed.barrier()  # the next stage reads this one's files on every rank
            # the wall time of the attempt that finished the stage (a resumed stage's earlier work not
            # counted)
            state.stages[key] = {"status": "done", **fp, "stats": json.loads(json.dumps(out, default=str)),
                                 "wall_time_s": round(time.time() - began, 1)}
            state.save()
            stats[st.name] = out
            if until == key or until == st.name:
                return results + [stats]
        results.append(stats)
        previous_final = final_model(it_dir)
    return results


def _on_main(run: Callable[[], dict], key: str) -> dict:
    """Rank 0 runs the stage; the others get its stats (or its failure) once its files are written."""
    if distributed.world() == 1:
        return run()
    out, error = None, None
    if distributed.is_main():
        try:
            out = run()
        except Exception as e:  # the others must not wait forever for a stage that failed
            error = e
    shared = distributed.broadcast_object({"out": out, "error": None if error is None else str(error)})
    if error is not None:
        raise error
    if shared["error"] is not None:
        raise TrainingError(f"stage '{key}' failed on rank 0: {shared['error']}")
    return shared["out"]


def _check_stage_name(name: str | None, names: list[str], iterations: int) -> None:
    if name in (None, ALL):
        return
    it, _, stage = name.rpartition("/")
    k = it.removeprefix("iter-") if it else (name.removeprefix("iter-") if name.startswith("iter-") else "1")
    stage_ok = stage in names or (not it and name.startswith("iter-"))
    if not (k.isdigit() and 1 <= int(k) <= iterations and (it == "" or it.startswith("iter-")) and stage_ok):
        raise RecipeError(f"--restart-from {name}: no such stage; the stages are {', '.join(names)} "
                          f"(iteration 1), iter-K/<stage> or iter-K for K = 2..{iterations}")
