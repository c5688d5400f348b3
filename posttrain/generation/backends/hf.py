"""The HF backend: samples with the model in this process (CPU or GPU).

Llama-shaped models (SmolLM2, the tiny test models) decode through posttrain.generation.llama_decode with
continuous batching: up to `batch_size` sequences decode together in slots of a preallocated KV cache;
a finished sequence frees its slot at once and the next queued sample is prefilled into it (a prompt's
cache is computed once per admission and copied to its other samples); draws, end-of-turn checks and
log-probs are batched with one host transfer per step; stop strings are scanned incrementally. Other
architectures decode through the model's own forward in static batches that shrink as rows finish.

Memory: the fast path keeps one fused, transposed copy of the policy's effective weights per sampled
model (about the model's own size: 540 MB for the embedded model in float32), rebuilt when the weights
change, plus a KV cache of batch_size x (longest prompt + max_new_tokens) positions per call.

`decode_dtype: bfloat16` decodes with a bfloat16 copy of the weights (half the memory traffic; on CPUs
with AVX512-BF16 the matmuls run faster too). Then the tokens are drawn from the bfloat16 model's
distribution, and the returned log-probs are recomputed after decoding by one float32 teacher-forced pass
of the real weights, so they stay the trained policy's: a consumer that weights by them (RSO's acceptance,
PPO's ratio — which PPO recomputes anyway) sees the policy's numbers, while the draws come from a model
within bfloat16 rounding of it.
"""
from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from typing import Callable

import torch

from posttrain.errors import RecipeError
from posttrain.generation import llama_decode
from posttrain.generation.sampler import (
    Sample,
    SamplingParams,
    SamplingStats,
    StopScan,
    draw,
    finished_text,
    sample_seed,
    stop_ids,
)
from posttrain.models.fingerprint import weights_version

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _Seq:
    """One sample being decoded."""
    __slots__ = ("job", "prompt_id", "index", "stream", "prompt", "tokens", "logps", "finish", "scan")

    def __init__(self, job: int, prompt_id: int, index: int, seed: int, prompt: list[int], scan):
        self.job, self.prompt_id, self.index = job, prompt_id, index
        self.stream = sample_seed(seed, prompt_id, index)
        self.prompt = prompt
        self.tokens: list[int] = []
        self.logps: list[float] = []
        self.finish: str | None = None
        self.scan = scan

    def take(self, token: int, logp: float, eos: set[int], max_new: int) -> bool:
        """Append a drawn token; True when the sequence is finished."""
        self.tokens.append(token)
        self.logps.append(logp)
        if token in eos:
            self.finish = "stop"
        elif self.scan is not None and self.scan.feed(self.tokens) is not None:
            self.finish = "stop"
        elif len(self.tokens) >= max_new:
            self.finish = "length"
        return self.finish is not None


class _Results:
    """Collects finished samples and hands on each prompt's n samples, in prompt order, once they and every
    earlier prompt's are finished (so a file written from them has the same bytes however the decoding
    interleaved)."""

    def __init__(self, n_jobs: int, n: int, on_batch):
        self.out: list[list[Sample | None]] = [[None] * n for _ in range(n_jobs)]
        self.left = [n] * n_jobs
        self.on_batch = on_batch
        self.emitted = 0

    def add(self, seq: _Seq, tokenizer, p: SamplingParams) -> None:
        text = finished_text(tokenizer, seq.tokens, p.stop)
        self.out[seq.job][seq.index] = Sample(seq.prompt_id, seq.index, text, seq.tokens, seq.logps,
                                              seq.finish)
        self.left[seq.job] -= 1
        while self.emitted < len(self.out) and self.left[self.emitted] == 0:
            if self.on_batch is not None:
                self.on_batch(list(self.out[self.emitted]))
            self.emitted += 1


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, decode_dtype: str | None = None):
        if decode_dtype is not None and decode_dtype not in DTYPES:
            raise RecipeError(f"generation.decode_dtype: {decode_dtype!r}; allowed: {', '.join(DTYPES)}")
        self.tokenizer = tokenizer
        self.decode_dtype = DTYPES.get(decode_dtype)
        # the backend cache is keyed weakly by the model: no cycle back to it
        self._model = weakref.ref(model)
        self._weights = None
        self.fast_reason = llama_decode.unsupported_reason(model)

    @property
    def model(self):
        return self._model()

    def set_policy(self, model) -> None:
        if model is not self.model:
            self._model, self._weights = weakref.ref(model), None
            self.fast_reason = llama_decode.unsupported_reason(model)

    def weights(self) -> llama_decode.LlamaWeights:
        key = weights_version(self.model)
        if self._weights is None or self._weights.key != key:
            self._weights = None  # free the stale copy before building the next
            self._weights = llama_decode.LlamaWeights(self.model, self.decode_dtype, key=key)
        return self._weights

    @property
    def fast(self) -> bool:
        return self.fast_reason is None

    def sample(self, prompts: list[list[int]], p: SamplingParams, *, prompt_ids: list[int], batch_size: int,
               progress: bool = False,
               on_batch: Callable | None = None) -> tuple[list[list[Sample]], SamplingStats]:
        from tqdm import tqdm
        stats = SamplingStats(prompts=len(prompts))
        bar = tqdm(total=len(prompts) * p.n, unit="sample", disable=not progress, dynamic_ncols=True)
        t0 = time.perf_counter()

        def count(n_tokens: int) -> None:
            stats.new_tokens += n_tokens
            stats.decode_steps += 1
            dt = time.perf_counter() - t0
            if progress and dt > 0:
                bar.set_postfix(tok_s=f"{stats.new_tokens / dt:.0f}", refresh=False)

        results = _Results(len(prompts), p.n, on_batch)
        if not prompts:
            return [], stats
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self.fast:
                    self._continuous(prompts, prompt_ids, p, batch_size, results, count, bar)
                else:
                    self._static(prompts, prompt_ids, p, batch_size, results, count, bar)
            if self.decode_dtype is not None and self.fast:
                self._exact_logprobs(prompts, results, batch_size)
        finally:
            self.model.train(was_training)
            bar.close()
        stats.samples = sum(len(r) for r in results.out)
        stats.seconds = time.perf_counter() - t0
        stats.extra["path"] = "llama-continuous" if self.fast else f"generic ({self.fast_reason})"
        return results.out, stats

    # ------------------------------------------------------------ continuous batching (Llama)

    def _continuous(self, prompts, prompt_ids, p, slots, results: _Results, count, bar) -> None:
        tok = self.tokenizer
        w = self.weights()
        eos = stop_ids(tok, self.model)
        device = w.device
        queue = deque((j, k) for j in range(len(prompts)) for k in range(p.n))
        slots = min(slots, len(queue))
        cache = w.new_cache(slots, max(len(x) for x in prompts) + p.max_new_tokens)
        active: list[_Seq] = []
        logits = None  # [len(active), V] for the next draw
        while queue or active:
            if queue and len(active) < slots:
                new = [queue.popleft() for _ in range(min(slots - len(active), len(queue)))]
                seqs = [_Seq(j, prompt_ids[j], k, p.seed, prompts[j],
                             StopScan(tok, p.stop) if p.stop else None)
                        for j, k in new]
                new_logits = self._prefill(w, cache, len(active), seqs)
                active += seqs
                logits = new_logits if logits is None else torch.cat([logits, new_logits])
            chosen, logp = draw(logits, p, [s.stream for s in active], [len(s.tokens) for s in active])
            chosen, logp = chosen.tolist(), logp.tolist()
            count(len(active))
            done = [i for i, s in enumerate(active) if s.take(chosen[i], logp[i], eos, p.max_new_tokens)]
            for i in done:
                results.add(active[i], tok, p)
            bar.update(len(done))
            # compaction: the last live sequence moves into each freed slot, so live slots stay 0..A-1
            src = list(range(len(active)))
            for i in reversed(done):
                last = len(active) - 1
                if last != i:
                    cache.move(last, i, len(active[last].prompt) + len(active[last].tokens) - 1)
                    active[i], src[i] = active[last], src[last]
                active.pop()
                src.pop()
            if not active:
                logits = None
                continue
            ids = torch.tensor([[chosen[r]] for r in src], device=device)
            pos = torch.tensor([[len(s.prompt) + len(s.tokens) - 1] for s in active], device=device)
            logits = llama_decode.forward(w, cache, ids, pos, 0)

    def _prefill(self, w, cache, first: int, seqs: list[_Seq]) -> torch.Tensor:
        """Prefill the prompts of `seqs` (slots first, first + 1, ...): each distinct prompt once, its cache
        copied to its other samples. Returns their logits [len(seqs), V]."""
        device = w.device
        firsts: dict[int, int] = {}
        for i, s in enumerate(seqs):
            firsts.setdefault(s.job, i)
        uniq = list(firsts.values())
        # the distinct prompts take the first slots; repeats are copies made after the forward
        order = uniq + [i for i in range(len(seqs)) if i not in set(uniq)]
        seqs[:] = [seqs[i] for i in order]
        n_u = len(uniq)
        width = max(len(seqs[i].prompt) for i in range(n_u))
        ids = torch.zeros((n_u, width), dtype=torch.long)
        for r in range(n_u):
            ids[r, :len(seqs[r].prompt)] = torch.tensor(seqs[r].prompt)
        pos = torch.arange(width).expand(n_u, width)
        last = torch.tensor([len(seqs[r].prompt) - 1 for r in range(n_u)])
        logits_u = llama_decode.forward(w, cache, ids.to(device), pos.to(device), first, last.to(device))
        src = {seqs[r].job: r for r in range(n_u)}
        rows = []
        for i, s in enumerate(seqs):
            r = src[s.job]
            if i >= n_u:
                cache.move(first + r, first + i, len(s.prompt))
            rows.append(r)
        return logits_u[torch.tensor(rows, device=device)]

    # ------------------------------------------------------------ static batches (any model)

    def _static(self, prompts, prompt_ids, p, batch_size, results: _Results, count, bar) -> None:
        per_batch = max(1, batch_size // p.n)
        order = list(range(len(prompts)))
        eos = stop_ids(self.tokenizer, self.model)
        for s in range(0, len(order), per_batch):
            jobs = order[s:s + per_batch]
            seqs = [_Seq(j, prompt_ids[j], k, p.seed, prompts[j],
                         StopScan(self.tokenizer,
                                  p.stop) if p.stop else None) for j in jobs for k in range(p.n)]
            for seq in _run_batch(self.model, self.tokenizer, seqs, p, eos, count):
                results.add(seq, self.tokenizer, p)
            bar.update(len(seqs))

    # ------------------------------------------------------------ exact log-probs after a reduced-precision
    # decode

    def _exact_logprobs(self, prompts, results: _Results, batch_size: int) -> None:
        from posttrain.data.collate import pad_collate
        from posttrain.logprobs import completion_logprobs
        flat = [(j, s) for j, row in enumerate(results.out) for s in row]
        dev = next(self.model.parameters()).device
        for b in range(0, len(flat), batch_size):
            chunk = flat[b:b + batch_size]
            feats = [{"input_ids": prompts[j] + s.token_ids, "labels": [-100] * len(prompts[j]) + s.token_ids}
                     for j, s in chunk]
            batch = pad_collate(feats, self.tokenizer.pad_token_id or 0)
            lp, mask = completion_logprobs(self.model, batch["input_ids"].to(dev),
                                           batch["attention_mask"].to(dev),
                                           batch["labels"].to(dev))
            for r, (_, s) in enumerate(chunk):
                s.logprobs = lp[r][mask[r]].float().tolist()


def _cache_arg() -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, then goes in 5.40)."""
    import inspect

    from transformers import LlamaForCausalLM
    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


_CACHE_ARG = _cache_arg()


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _run_batch(model, tokenizer, seqs: list[_Seq], p: SamplingParams, eos: set[int], count) -> list[_Seq]:
    """Decode `seqs` (each prompt's n samples consecutive) with the model's own forward and cache: one
    prefill per prompt, its cache repeated for the n samples; finished rows leave the batch."""
    device = next(model.parameters()).device
    uniq = seqs[::p.n]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(s.prompt) for s in uniq)
    ids = torch.full((len(uniq), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(uniq), width), dtype=torch.long)
    for r, s in enumerate(uniq):
        ids[r, width - len(s.prompt):] = torch.tensor(s.prompt)
        attn[r, width - len(s.prompt):] = 1
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos.to(device),
                use_cache=True, logits_to_keep=1)
    cache, logits = _cache_of(out), out.logits[:, -1].float()
    if p.n > 1:
        cache.batch_repeat_interleave(p.n)
        logits = logits.repeat_interleave(p.n, 0)
        attn = attn.repeat_interleave(p.n, 0)
    attn = attn.to(device)
    next_pos = attn.sum(-1, keepdim=True)
    active = list(seqs)
    while active:
        chosen, logp = draw(logits, p, [s.stream for s in active], [len(s.tokens) for s in active])
        chosen, logp = chosen.tolist(), logp.tolist()
        count(len(active))
        keep = [i for i, s in enumerate(active) if not s.take(chosen[i], logp[i], eos, p.max_new_tokens)]
        if not keep:
            break
        if len(keep) < len(active):
            sel = torch.tensor(keep, device=device)
            cache.batch_select_indices(sel)
            attn, next_pos = attn[sel], next_pos[sel]
            active = [active[i] for i in keep]
            chosen = [chosen[i] for i in keep]
        attn = torch.cat([attn, attn.new_ones(len(active), 1)], -1)
        out = model(input_ids=torch.tensor(chosen, device=device)[:, None], attention_mask=attn,
                    position_ids=next_pos, use_cache=True, **{_CACHE_ARG: cache})
        cache, logits = _cache_of(out), out.logits[:, -1].float()
        next_pos = next_pos + 1
    return seqs


__all__ = ["HFBackend", "DTYPES"]
