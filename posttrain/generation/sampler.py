"""Batched sampling with a KV cache: n samples per prompt, with the log-prob of every sampled token.

Why our own decode loop rather than `model.generate`: every sample gets its own random stream, seeded
from (seed, prompt id, sample index), so a sample does not depend on which other prompts share its
batch, on the batch size, or on a resume after a kill; finished rows leave the batch (the cache is
compacted) instead of decoding padding; the prompt is prefilled once and its cache repeated for the n
samples; and the log-probs come straight from the logits that produced each token.

`logprobs[t]` is log pi(token_t | prompt, tokens_<t) under the model itself (temperature 1, no top-k /
top-p filtering): the quantity RL and rejection sampling need. Temperature / top-k / top-p only shape
the distribution the token is drawn from.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

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
            raise RecipeError(f"sampling: n and max_new_tokens must be >= 1 (got {self.n}, {self.max_new_tokens})")
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


def _cache_arg() -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, then goes in 5.40)."""
    import inspect

    from transformers import LlamaForCausalLM
    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


_CACHE_ARG = _cache_arg()


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class _Row:
    __slots__ = ("prompt_id", "sample_index", "gen", "tokens", "logps", "finish", "text")

    def __init__(self, prompt_id: int, sample_index: int, seed: int):
        self.prompt_id, self.sample_index = prompt_id, sample_index
        self.gen = torch.Generator().manual_seed(seed)
        self.tokens: list[int] = []
        self.logps: list[float] = []
        self.finish: str | None = None
        self.text: str | None = None


@torch.no_grad()
def _run_batch(model, tokenizer, prompts: list[tuple[int, list[int]]], p: SamplingParams, eos: set[int],
               pad_id: int, on_tokens: Callable[[int], None]) -> tuple[list[Sample], int]:
    device = next(model.parameters()).device
    width = max(len(ids) for _, ids in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, (_, toks) in enumerate(prompts):
        ids[r, width - len(toks):] = torch.tensor(toks)
        attn[r, width - len(toks):] = 1
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos.to(device),
                use_cache=True, logits_to_keep=1)
    cache, logits = _cache_of(out), out.logits[:, -1].float()
    if p.n > 1:  # one prefill per prompt, its cache repeated for the n samples
        cache.batch_repeat_interleave(p.n)
        logits = logits.repeat_interleave(p.n, 0)
        attn = attn.repeat_interleave(p.n, 0)
    attn = attn.to(device)
    rows = [_Row(pid, k, sample_seed(p.seed, pid, k)) for pid, _ in prompts for k in range(p.n)]
    active = list(range(len(rows)))
    next_pos = attn.sum(-1, keepdim=True)
    steps = 0
    for step in range(p.max_new_tokens):
        steps += 1
        logp = torch.log_softmax(logits, -1)
        if p.temperature == 0:
            chosen = logits.argmax(-1).tolist()
        else:
            probs = torch.softmax(_filter_logits(logits, p), -1)
            chosen = [int(torch.multinomial(probs[j], 1, generator=rows[i].gen)) for j, i in enumerate(active)]
        keep = []
        for j, i in enumerate(active):
            row, tok = rows[i], chosen[j]
            row.tokens.append(tok)
            row.logps.append(float(logp[j, tok]))
            if tok in eos:
                row.finish = "stop"
            elif p.stop:
                text = tokenizer.decode(row.tokens, skip_special_tokens=True)
                hit = [text.find(s) for s in p.stop if s in text]
                if hit:
                    row.finish, row.text = "stop", text[:min(hit)]
            if row.finish is None and step == p.max_new_tokens - 1:
                row.finish = "length"
            if row.finish is None:
                keep.append(j)
        on_tokens(len(active))
        if not keep:
            break
        if len(keep) < len(active):
            sel = torch.tensor(keep, device=device)
            cache.batch_select_indices(sel)
            attn, next_pos = attn[sel], next_pos[sel]
            active = [active[j] for j in keep]
            chosen = [chosen[j] for j in keep]
        attn = torch.cat([attn, attn.new_ones(len(active), 1)], -1)
        step_ids = torch.tensor(chosen, device=device)[:, None]
        out = model(input_ids=step_ids, attention_mask=attn, position_ids=next_pos, use_cache=True,
                    **{_CACHE_ARG: cache})
        cache, logits = _cache_of(out), out.logits[:, -1].float()
        next_pos = next_pos + 1
    samples = []
    for row in rows:
        text = row.text if row.text is not None else tokenizer.decode(row.tokens, skip_special_tokens=True)
        samples.append(Sample(row.prompt_id, row.sample_index, text.strip(), row.tokens, row.logps,
                              row.finish or "length"))
    return samples, steps


def sample(model, tokenizer, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
           prompt_ids: Sequence[int] | None = None, batch_size: int = 16, progress: bool = False,
           on_batch: Callable[[list[Sample]], None] | None = None) -> tuple[list[list[Sample]], SamplingStats]:
    """`params.n` samples for each tokenized prompt (chat template already applied).

    Returns (samples[i] = the n samples of prompts[i], in sample order; stats). `prompt_ids` are the
    stable ids the seeds derive from (default: the position in `prompts`); give the dataset row index
    so a resumed or re-batched run draws the same samples. Prompts are bucketed by length; a batch holds
    up to `batch_size` sequences (batch_size // n prompts). `on_batch` receives each finished batch's
    samples (for incremental writing).
    """
    from tqdm import tqdm

    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} prompt_ids")
    if any(len(x) == 0 for x in prompts):
        raise ValueError("empty prompt")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = stop_ids(tokenizer, model)
    per_batch = max(1, batch_size // params.n)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[Sample]] = [[] for _ in prompts]
    stats = SamplingStats(prompts=len(prompts))
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts) * params.n, unit="sample", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()

    def count(n_tokens: int) -> None:
        stats.new_tokens += n_tokens
        dt = time.perf_counter() - t0
        if progress and dt > 0:
            bar.set_postfix(tok_s=f"{stats.new_tokens / dt:.0f}", refresh=False)

    try:
        for s in range(0, len(order), per_batch):
            idx = order[s:s + per_batch]
            batch, steps = _run_batch(model, tokenizer, [(ids[i], list(prompts[i])) for i in idx], params, eos,
                                      pad_id, count)
            stats.decode_steps += steps
            for j, i in enumerate(idx):  # samples come back prompt by prompt, in `idx` order
                out[i] = batch[j * params.n:(j + 1) * params.n]
            stats.samples += len(batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch)
    finally:
        model.train(was_training)
        bar.close()
    stats.seconds = time.perf_counter() - t0
    return out, stats
