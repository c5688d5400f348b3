"""Sampling behind one seam: `sample(model, tokenizer, prompt ids, params)` -> n samples per prompt (text,
token ids, per-token log-probs, finish reason), served by a backend (`posttrain.generation.backends`):
the HF backend on CPU or GPU (default) or vLLM (optional extra). Every caller — PPO, RSO, `generate`,
the evaluations — goes through `sample`; the backend is chosen by `use_backend` (a recipe's `generation`
section) or by default.

What every backend guarantees:
- each sample has its own random stream, seeded from (seed, prompt id, sample index): a sample does not
  depend on the other prompts in its batch, the batch size, the order, or a resume after a kill;
- `logprobs[t]` is log pi(token_t | prompt, tokens_<t) under the policy's own weights at temperature 1
  with no top-k / top-p filtering: the quantity RL and rejection sampling need. Temperature / top-k /
  top-p only shape the distribution the token is drawn from;
- a sample ends at an end-of-turn token of the tokenizer / generation config ("stop"), at a stop string
  (the text is cut before it, "stop") or at max_new_tokens ("length").

This module holds what the backends share: the parameters and results, the per-sample seeds, the draw
(`draw`: the same token for the same logits and stream in every backend that decodes here) and the
incremental stop-string scan.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from posttrain.config import GenerationSettings
from posttrain.errors import RecipeError


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.n < 1 or self.max_new_tokens < 1:
            raise RecipeError(f"sampling: n and max_new_tokens must be >= 1 "
                              f"(got {self.n}, {self.max_new_tokens})")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise RecipeError("sampling: temperature >= 0, 0 < top_p <= 1 and top_k >= 0 are required "
                              f"(got {self.temperature}, {self.top_p}, {self.top_k})")
        if any(not s for s in self.stop):
            raise RecipeError("sampling: stop strings must be non-empty")


@dataclass
class Sample:
    prompt_id: int
    sample_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (end-of-turn token or stop string) or "length"

    def to_row(self) -> dict:
        return {"prompt_id": self.prompt_id, "sample_index": self.sample_index, "text": self.text,
                "token_ids": self.token_ids, "logprobs": [round(x, 6) for x in self.logprobs],
                "finish_reason": self.finish_reason}


@dataclass
class SamplingStats:
    prompts: int = 0
    samples: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    decode_steps: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def sample_seed(seed: int, prompt_id: int, sample_index: int) -> int:
    """A per-sample seed: splitmix64 of the triple, so neighbouring ids give unrelated streams."""
    x = (seed * 0x9E3779B97F4A7C15 + prompt_id * 0xBF58476D1CE4E5B9 + sample_index * 0x94D049BB133111EB)
    x &= (1 << 64) - 1
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 29
    return x & ((1 << 63) - 1)


def _filter_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus: the smallest set whose mass reaches top_p)."""
    logits = logits / p.temperature
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        # drop a token when the mass strictly before it already reaches top_p (the first always stays)
        drop = (probs.cumsum(-1) - probs) >= p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def stop_ids(tokenizer, model=None) -> set[int]:
    """The tokens that end a turn: the tokenizer's eos and the model's generation-config eos ids (a chat
    model often ends a turn with a token other than its document eos)."""
    ids = {tokenizer.eos_token_id}
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id}


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    x &= _MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(stream: int, step: int) -> float:
    """The stream's draw for a step, in (0, 1]: a counter-based generator (splitmix64 of stream and step),
    so a row's draws need no state and no per-row generator call, and batch the same in any order."""
    return (_mix64(stream + (step + 1) * 0x9E3779B97F4A7C15) >> 11 | 1) / float(1 << 53)


def draw(logits: torch.Tensor, p: SamplingParams, streams: Sequence[int], steps: Sequence[int]) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of `logits` [A, V] (float32) and its log-prob at temperature 1, unfiltered.
    Greedy at temperature 0; else inverse-CDF sampling of the filtered distribution with the row's
    uniform(stream, step): one batched cumsum and search, no per-row call."""
    lse = torch.logsumexp(logits, -1)
    if p.temperature == 0:
        tok = logits.argmax(-1)
    else:
        cdf = torch.softmax(_filter_logits(logits, p), -1).cumsum(-1)
        u = torch.tensor([uniform(s, t) for s, t in zip(streams, steps)], dtype=torch.float64,
                         device=logits.device)
        target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]
        tok = torch.searchsorted(cdf, target).squeeze(1).clamp_max(logits.shape[-1] - 1)
    return tok, logits.gather(1, tok[:, None]).squeeze(1) - lse


class StopScan:
    """Finds the first stop string in a growing token sequence without re-decoding it: only the text the
    newest tokens add is decoded (a token that ends inside a multi-byte character waits for the next)."""

    __slots__ = ("tok", "stops", "longest", "text", "prefix", "read")

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tok, self.stops = tokenizer, tuple(stops)
        self.longest = max(len(s) for s in self.stops)
        self.text, self.prefix, self.read = "", 0, 0

    def feed(self, tokens: list[int]) -> int | None:
        """`tokens`: the whole sequence so far. The index in the decoded text where the first stop
        string begins, or None."""
        before = self.tok.decode(tokens[self.prefix:self.read], skip_special_tokens=True)
        now = self.tok.decode(tokens[self.prefix:], skip_special_tokens=True)
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return None
        new = now[len(before):]
        self.prefix, self.read = self.read, len(tokens)
        start = max(0, len(self.text) - self.longest + 1)
        self.text += new
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        return min(hits) if hits else None


def finished_text(tokenizer, tokens: list[int], stops: Sequence[str]) -> str:
    """The sample's text: the decoded tokens, cut before the first stop string, stripped."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)] if hits else text).strip()


# ---------------------------------------------------------------- the seam



_SETTINGS: contextvars.ContextVar[GenerationSettings] = contextvars.ContextVar("sampling_backend",
                                                                            default=GenerationSettings())


@contextlib.contextmanager
def use_backend(settings: GenerationSettings | None):
    """Within the block, `sample` uses these settings (a run's recipe sets them once)."""
    token = _SETTINGS.set(settings or GenerationSettings())
    try:
        yield
    finally:
        _SETTINGS.reset(token)


def current_settings() -> GenerationSettings:
    return _SETTINGS.get()


def sample(model, tokenizer, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
           prompt_ids: Sequence[int] | None = None, batch_size: int = 16, progress: bool = False,
           on_batch: Callable[[list[Sample]], None] | None = None
           ) -> tuple[list[list[Sample]], SamplingStats]:
    """`params.n` samples for each tokenized prompt (chat template already applied), from `model`'s
    current weights.

    Returns (samples[i] = the n samples of prompts[i], in sample order; stats). `prompt_ids` are the
    stable ids the seeds derive from (default: the position in `prompts`); give the dataset row index
    so a resumed or re-batched run draws the same samples. At most `batch_size` sequences decode at once.
    `on_batch` receives the n samples of each prompt as soon as they are all finished (incremental
    writing)."""
    from posttrain.generation.backends import backend_for
    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} prompt_ids")
    if any(len(x) == 0 for x in prompts):
        raise ValueError("empty prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    backend = backend_for(model, tokenizer, current_settings())
    return backend.sample([list(x) for x in prompts], params, prompt_ids=ids, batch_size=batch_size,
                          progress=progress, on_batch=on_batch)
