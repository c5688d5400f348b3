"""The sample stage that online methods share (docs/methods.md "RSO", "INPO and iterative DPO", "Direct
Advantage Policy Optimization"): candidates from the iteration's starting policy, and training on the pairs
an earlier stage made of them.

- `SamplingSettings`: a method's `sampling:` section (candidates per prompt, decoding, where they go);
- `samples_file`, `sample_candidates`, `SAMPLE_KEYS`: the resumable `sample` stage, its file and the recipe
  keys its output depends on (RSO, INPO and step-level DAPO each declare the stage with these);
- `write_pairs`, `build_on_pairs`: the outputs of a `pairs` stage and the preference build on them (RSO,
  INPO).
What a method does with its candidates (RSO's acceptance sampling, INPO's oracle, DAPO's states) is its own.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import Field

from posttrain.config import DataSource, Section
from posttrain.contracts import Built, RunInfo
from posttrain.errors import DataError, RecipeError
from posttrain.files import atomic_write_text, write_jsonl
from posttrain.generation.sampler import SamplingParams
from posttrain.generation.to_file import sample_to_file
from posttrain.methods import preference
from posttrain.methods.base import recipe_records

log = logging.getLogger(__name__)


class SamplingSettings(Section):
    num_candidates: int = Field(16, ge=2)  # paper: 64
    temperature: float = Field(0.7, ge=0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(128, gt=0)
    stop: list[str] = []
    batch_size: int = Field(16, gt=0)
    seed: int = 0
    # where the candidates go (default <run>/samples.jsonl); runs that share the prompts and these
    # settings may share one file, e.g. to compare selections on the same candidates
    samples_file: str | None = None


SAMPLE_KEYS = ("model", "data.train", "data.instruction", "data.system_prompt", "data.max_prompt_length",
               "method.sampling", "generation.backend", "generation.decode_dtype")


def samples_file(params, ctx) -> Path:
    """Where the iteration's candidates go; `params.sampling` is a SamplingSettings."""
    s = params.sampling
    # a shared samples_file serves the first iteration; later ones sample another policy
    return Path(s.samples_file) if s.samples_file and ctx.iteration == 0 else ctx.dir / "samples.jsonl"


def sample_candidates(recipe, params, ctx, records: list | None = None) -> dict:
    """Stage `sample`: `num_candidates` samples per prompt (default: every prompt of data.train) from the
    iteration's starting policy (resumable). Shared by every method whose params have a `sampling:
    SamplingSettings` (RSO, INPO, step-level DAPO)."""
    s = params.sampling
    model, tokenizer = ctx.policy()
    sp = SamplingParams(n=s.num_candidates, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                        max_new_tokens=s.max_new_tokens, stop=tuple(s.stop), seed=s.seed)
    records = recipe_records(recipe) if records is None else records
    _, st = sample_to_file(model, tokenizer, records, sp, samples_file(params, ctx),
                           batch_size=s.batch_size, max_prompt_length=recipe.data.max_prompt_length,
                           progress=ctx.progress)
    return {"sampling_tokens_per_s": round(st.tokens_per_s, 1), "sampling_new_tokens": st.new_tokens,
            "resumed_prompts": st.extra.get("resumed_prompts", 0)}


def write_pairs(folder: Path, rows: list[dict], stats: dict, stats_file: str, empty: str) -> dict:
    """The pairs stage's outputs: the stats file always (it says why there are no pairs), pairs.jsonl when
    there are pairs; none is an error (`empty`, with the stats file named)."""
    atomic_write_text(folder / stats_file, json.dumps(stats, indent=1))
    log.info("%s: %s", stats_file, stats)
    if not rows:
        raise DataError(f"{empty}; see {folder / stats_file}")
    write_jsonl(folder / "pairs.jsonl", rows)
    return stats


def build_on_pairs(recipe, params: preference.PreferenceParams, model, tokenizer, run: RunInfo | None,
                   stats_file: str) -> Built:
    """The preference build on the pairs.jsonl an earlier stage of the iteration wrote (RSO, INPO)."""
    folder = run.dir if run is not None else recipe.run_dir
    path = folder / "pairs.jsonl"
    if not path.is_file():
        raise RecipeError(f"{path} does not exist: run the recipe with `posttrain train`, which samples and "
                          f"pairs before training")
    pairs_recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"train": DataSource(path=str(path)), "instruction": None})})
    built = preference.build(pairs_recipe, params, model, tokenizer, run)
    # in place: the build's prepare() adds the reference-cache status to this same dict later
    built.stats[stats_file.split("_")[0]] = json.loads((folder / stats_file).read_text())
    return built
