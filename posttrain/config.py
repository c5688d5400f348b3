"""Recipe schema (pydantic), YAML loading and `key.sub=value` overrides.

A recipe is the whole description of a run. Every section forbids unknown keys so a typo is an
error naming the key and listing the allowed ones, not a silently ignored setting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from posttrain.errors import RecipeError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(Section):
    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    rslora: bool = False


class ModelSettings(Section):
    name: str = "smollm2-135m-instruct"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraSettings | None = None  # None: full fine-tuning
    # start from the base with this LoRA adapter merged in (a run folder, or a checkpoint's model/ folder),
    # e.g. PPO from SFT; `lora` (if set) is then a fresh adapter on top, and `reference: start` is that merged
    # model
    adapter: str | None = None
    trust_remote_code: bool = False
    seed: int = 0  # only used by random-init test models


class SyntheticSource(Section):
    task: str
    n: int = Field(gt=0)
    seed: int = 0
    options: dict[str, Any] = {}


class RewardSettings(Section):
    """A reward from posttrain/rewards by name (or "package.module:Class") and its constructor options."""
    name: str = "math"
    options: dict[str, Any] = {}


class NLUSource(Section):
    """A GLUE/SuperGLUE task as generation (posttrain/tasks/nlu.py): `<Judgement>` prompts, label words."""
    task: str
    split: str = "train"
    limit: int | None = Field(None, gt=0)
    shots: int = Field(0, ge=0)  # k demonstrations from the task's train split, balanced over labels
    shots_seed: int = 0
    # default: $POSTTRAIN_SHARED_DATA, else shared/data in the working directory or above
    data_dir: str | None = None


class DataSource(Section):
    """A file/folder (`path` + `format`), a built-in generator (`synthetic`), or an NLU task (`nlu`)."""

    path: str | None = None
    format: str = "auto"
    # drop the first N records (e.g. hold out a file's tail: train limit N, eval skip N)
    skip: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0)
    on_invalid: Literal["raise", "skip"] = "raise"  # skip: drop bad rows, count and log them
    synthetic: SyntheticSource | None = None
    nlu: NLUSource | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.path, self.synthetic, self.nlu)) != 1:
            raise ValueError("give exactly one of 'path', 'synthetic' or 'nlu'")
        return self


class DataSettings(Section):
    train: DataSource
    eval: DataSource | None = None
    max_length: int = Field(512, gt=0)
    max_prompt_length: int | None = Field(None, gt=0)
    on_overflow: Literal["error", "skip"] = "error"
    packing: bool = False
    system_prompt: str | None = None  # None: the model's own template decides
    instruction: str | None = None  # appended to each synthetic question


class TrainSettings(Section):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0)  # sgd only
    micro_batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = False
    # shard parameters, gradients and optimizer state over the processes (FSDP 2); also on under
    # `accelerate launch` with an FSDP config. One process: no effect
    fsdp: bool = False
    # DeepSpeed ZeRO stage (1-3) over the processes (needs deepspeed installed); also on under `accelerate
    # launch` with a DeepSpeed config. 0 = off. One process: no effect
    zero_stage: Literal[0, 1, 2, 3] = 0
    # on CPU: glibc serves every allocation from its heap and keeps freed memory (posttrain/allocator.py):
    # no page faults on each step's activations; measured +33% steps/s, +11% peak memory
    keep_freed_memory: bool = True
    eval_every: int | None = Field(None, gt=0)
    save_every: int | None = Field(None, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _length(self):
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'max_steps' or 'epochs'")
        return self


class GenerationEval(Section):
    """Generate on held-out prompts with gold answers and score exact-answer accuracy."""

    n: int = Field(64, gt=0)
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(16, gt=0)
    at_start: bool = True
    at_end: bool = True
    during: bool = False  # also at every engine evaluation (train.eval_every), logged as eval/accuracy


class PipelineSettings(Section):
    """Iterations of a method's stages (e.g. sample -> pairs -> train, T times). The model after iteration t
    is the sampler and the starting policy of t+1 (a LoRA adapter is merged, a fresh one trains on top)."""
    iterations: int = Field(1, gt=0)
    # fresh: a new optimizer and schedule each iteration; carry: the optimizer's moments and the schedule
    # go on across iterations (one schedule over iterations x train.max_steps)
    optimizer: Literal["fresh", "carry"] = "fresh"


class GenerationSettings(Section):
    """How every sampling stage and evaluation of the run draws (posttrain.generation.backends): the backend
    and its options. Frozen: it keys the backend cache."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: Literal["auto", "hf", "vllm"] = "auto"  # auto: vllm when installed and the model is on a GPU
    # HF backend: decode with a copy of the weights in this dtype (None: the weights' own); log-probs are
    # recomputed with the real weights, so only the draws move (within the copy's rounding)
    decode_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    # vLLM's share of GPU memory; training needs the rest
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)


class Recipe(Section):
    name: str
    seed: int = 0
    output_dir: str = "runs"
    method: dict[str, Any] = {"name": "sft"}  # validated by the method's own schema
    model: ModelSettings = ModelSettings()
    data: DataSettings
    train: TrainSettings
    generation_eval: GenerationEval | None = None
    pipeline: PipelineSettings = PipelineSettings()
    generation: GenerationSettings = GenerationSettings()

    @model_validator(mode="after")
    def _carry_needs_steps(self):
        if self.pipeline.optimizer == "carry" and self.train.max_steps is None:
            raise ValueError("pipeline.optimizer 'carry' needs train.max_steps "
                             "(one schedule over all iterations)")
        return self

    @property
    def method_name(self) -> str:
        return str(self.method.get("name", ""))

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Walk the schema along an error location to list the keys allowed where the bad key stood."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return None
        ann = fields[part].annotation
        current = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                        and issubclass(a, BaseModel)), ann)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def format_validation_error(err: ValidationError, schema: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid recipe"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate_section(schema: type[BaseModel], data: dict, source: str):
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, schema, source)) from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`train.lr=3e-4 model.lora.r=16`: values are parsed as YAML scalars (numbers, bools, lists)."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise RecipeError(f"override {item!r}: empty key segment")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"override {item!r}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def read_recipe(path: str | Path, overrides: list[str] | None, schema: type[BaseModel]):
    """A YAML recipe file with `key.sub=value` overrides applied, validated against `schema`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections")
    return validate_section(schema, apply_overrides(raw, overrides or []), str(path))


def relative_to_recipe(src: DataSource | None, recipe_path: str | Path) -> None:
    """A relative data path is relative to the recipe's folder, so recipes run from any working directory
    (a path that exists from the working directory and not beside the recipe is left as it is)."""
    if src is not None and src.path is not None and not Path(src.path).is_absolute():
        candidate = Path(recipe_path).resolve().parent / src.path
        if candidate.exists() or not Path(src.path).exists():
            src.path = str(candidate)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    recipe = read_recipe(path, overrides, Recipe)
    for src in (recipe.data.train, recipe.data.eval):
        relative_to_recipe(src, path)
    return recipe
