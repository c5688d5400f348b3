"""Recipe schema (pydantic), YAML loading and `key.sub=value` overrides.

A recipe is the whole description of a run. Every section forbids unknown keys so a typo is an
error naming the key and listing the allowed ones, not a silently ignored setting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    """Where records come from (docs/data.md): a file/folder (`path` + `format`), a Hub dataset from the
    local `datasets` cache (`hub`), a built-in generator (`synthetic`), an NLU task (`nlu`), or a mixture
    of sources (`mixture`; in a recipe, `data.train` given as a list of sources)."""

    path: str | None = None
    hub: str | None = None  # a Hub dataset id, read offline from the local datasets cache
    split: str | None = None  # a DatasetDict folder's or a Hub dataset's split (default: train)
    format: str = "auto"
    columns: dict[str, str] = {}  # rename fields before conversion: file field -> expected field
    # drop the first N records (e.g. hold out a file's tail: train limit N, eval skip N)
    skip: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0)
    on_invalid: Literal["raise", "skip"] = "raise"  # skip: drop bad rows, count and log them
    # with on_invalid skip: stop when more than this fraction of the rows read is bad
    max_invalid_fraction: float = Field(0.05, ge=0, le=1)
    synthetic: SyntheticSource | None = None
    nlu: NLUSource | None = None
    mixture: list["DataSource"] | None = None
    # a mixture member's part: a fraction of the mixture (all members' shares sum to 1) or a record count
    share: float | None = Field(None, gt=0, le=1)
    count: int | None = Field(None, gt=0)
    seed: int | None = None  # a mixture's draw and shuffle (None: the recipe's seed)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.path, self.hub, self.synthetic, self.nlu, self.mixture)) != 1:
            raise ValueError("give exactly one of 'path', 'synthetic' or 'nlu' "
                             "(or 'hub', or a list of sources)")
        if self.mixture is not None:
            check_mixture(self.mixture)
        return self


def check_mixture(members: list[DataSource]) -> None:
    """Every member has a `share` (together 1, within 1e-6) or every member a `count`; no nesting."""
    if not members:
        raise ValueError("a mixture needs at least one source")
    for i, m in enumerate(members):
        if m.mixture is not None:
            raise ValueError(f"[{i}]: a mixture member cannot be a mixture itself")
        if (m.share is None) == (m.count is None):
            raise ValueError(f"[{i}]: give each source of a mixture exactly one of 'share' or 'count'")
    kinds = {m.share is None for m in members}
    if len(kinds) > 1:
        raise ValueError("give every source of a mixture a 'share', or every source a 'count', not both")
    if members[0].share is not None:
        total = sum(m.share for m in members)
        if abs(total - 1) > 1e-6:
            parts = ", ".join(f"[{i}].share={m.share:g}" for i, m in enumerate(members))
            raise ValueError(f"the shares must sum to 1 (within 1e-6), got {total:g}: {parts}")


class DataSettings(Section):
    train: DataSource  # a source, or (in YAML) a list of sources with `share` / `count`: a mixture
    eval: DataSource | None = None
    max_length: int = Field(512, gt=0)
    max_prompt_length: int | None = Field(None, gt=0)
    on_overflow: Literal["error", "skip"] = "error"
    packing: bool = False
    system_prompt: str | None = None  # None: the model's own template decides
    instruction: str | None = None  # appended to each synthetic question

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _list_is_a_mixture(cls, value):
        return {"mixture": value} if isinstance(value, list) else value


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
    # where each step's metrics go besides metrics.jsonl (posttrain/trackers.py): any of tensorboard,
    # mlflow (a local file store in the run folder) and wandb (offline, in the run folder); [] for JSONL only
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = ["tensorboard"]

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

    @model_validator(mode="after")
    def _mixture_seed(self):
        # a mixture is drawn and shuffled by the recipe's seed unless it names its own
        for src in (self.data.train, self.data.eval):
            if src is not None and src.mixture is not None and src.seed is None:
                src.seed = self.seed
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


def format_validation_error(err: ValidationError, schema: type[BaseModel], source: str,
                            section: str | None = None) -> str:
    """One line per error, naming the key as the recipe spells it (`section.key.sub` when `schema` is the
    schema of one section, e.g. a method's params under `method`)."""
    lines = [f"{source}: invalid recipe"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in ((section,) if section else ()) + loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate_section(schema: type[BaseModel], data: dict, source: str, section: str | None = None):
    """`data` validated against `schema`; errors name keys under `section` (e.g. "method") when given."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, schema, source, section)) from None


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


def yaml_error_message(path: Path, err: yaml.YAMLError) -> str:
    """`recipe.yaml:3:7: not valid YAML: <problem>` (line and column 1-based, as editors count), quoting the
    line, and the line where the construct it was inside began (an unclosed `{` is noticed only later)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is None:
        return f"{path}: not valid YAML: {err}"
    lines = path.read_text().splitlines()
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if context and context_mark is not None:
        problem = f"{problem} ({context} started at line {context_mark.line + 1})"
    quoted = "".join(f"\n  {n + 1} | {lines[n]}"
                     for n in sorted({mark.line, *([context_mark.line] if context_mark else [])})
                     if n < len(lines))
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}{quoted}"


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as `section.key` -> value (how stages, trackers and comparisons name settings)."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def read_recipe(path: str | Path, overrides: list[str] | None, schema: type[BaseModel]):
    """A YAML recipe file with `key.sub=value` overrides applied, validated against `schema`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(yaml_error_message(path, e)) from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections")
    return validate_section(schema, apply_overrides(raw, overrides or []), str(path))


def relative_to_recipe(src: DataSource | None, recipe_path: str | Path) -> None:
    """A relative data path is relative to the recipe's folder, so recipes run from any working directory
    (a path that exists from the working directory and not beside the recipe is left as it is)."""
    # a DataSource may be a mixture of sources; synthesis test sets (DecontamSet) have paths but no mixture
    for member in getattr(src, "mixture", None) or []:
        relative_to_recipe(member, recipe_path)
    if src is not None and src.path is not None and not Path(src.path).is_absolute():
        candidate = Path(recipe_path).resolve().parent / src.path
        if candidate.exists() or not Path(src.path).exists():
            src.path = str(candidate)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    recipe = read_recipe(path, overrides, Recipe)
    for src in (recipe.data.train, recipe.data.eval):
        relative_to_recipe(src, path)
    return recipe


def recipe_sources(recipe: Recipe) -> list[tuple[str, DataSource]]:
    """(recipe key, source) of every data source a recipe names: `data.train`, `data.eval`, and a mixture's
    members in its place (`data.train[i]`)."""
    out = []
    for key, src in (("data.train", recipe.data.train), ("data.eval", recipe.data.eval)):
        if src is not None and src.mixture:
            out += [(f"{key}[{i}]", m) for i, m in enumerate(src.mixture)]
        elif src is not None:
            out.append((key, src))
    return out


def check_inputs(recipe: Recipe) -> None:
    """The files a recipe reads (`data.train.path`, `data.eval.path`, a mixture's `data.train[i].path`,
    `model.adapter`) exist: a missing one is reported as missing, naming its key, before any stage is
    resumed or its fingerprint compared."""
    paths = [("model.adapter", recipe.model.adapter)] + [(f"{key}.path", src.path)
                                                          for key, src in recipe_sources(recipe)]
    missing = [f"{key}: {value} does not exist" for key, value in paths
               if value is not None and not Path(value).exists()]
    if missing:
        raise RecipeError(f"recipe {recipe.name}: missing input " + "; ".join(missing))
