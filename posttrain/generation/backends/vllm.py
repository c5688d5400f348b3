"""The vLLM backend (`pip install 'posttrain[vllm]'`, a GPU): the policy is handed to a vLLM engine.

- LoRA policies: the base is written once (the adapter removed, not merged) and each policy version is
  a LoRA adapter folder sent with every request (`LoRARequest`), so a training iteration costs one
  adapter save, not an engine restart. An adapter switched off (sampling from the reference) sends none.
- Full fine-tunes: each policy version is written as a model folder and the engine is rebuilt on it
  (minutes on a large model: sample in large rounds).
- Per-sample seeds: one request per sample, seeded with the same (seed, prompt id, sample index) hash
  as the HF backend, so a sample does not depend on its batch. The two backends draw different tokens
  for the same seed (another random generator); each is reproducible on its own.
- Log-probs: the engine is asked for the sampled token's log-prob from the raw logits
  (`logprobs_mode="raw_logprobs"`): temperature 1, no filtering, as the seam promises.
"""
from __future__ import annotations

import copy
import importlib
import shutil
import tempfile
import weakref
from pathlib import Path

from posttrain.errors import RecipeError
from posttrain.generation.sampler import (
    Sample,
    SamplingParams,
    SamplingStats,
    finished_text,
    sample_seed,
    stop_ids,
)
from posttrain.models.fingerprint import weights_version
from posttrain.models.lora import is_lora, merge_and_save, unwrap


def _import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError:
        raise RecipeError("generation.backend: vllm is not installed; pip install 'posttrain[vllm]' "
                          "on a machine with a GPU, or use backend: hf") from None


class VLLMBackend:
    name = "vllm"

    def __init__(self, model, tokenizer, *, gpu_memory_utilization: float = 0.5, vllm=None):
        self.vllm = vllm or _import_vllm()
        self.tokenizer = tokenizer
        self.memory = gpu_memory_utilization
        self.workdir = Path(tempfile.mkdtemp(prefix="posttrain-vllm-"))
        self.llm = None
        self.engine_key = None  # the weights the engine holds (base for LoRA)
        self.version = None
        self.lora = None  # the LoRARequest of the current adapter, or None
        self.n_versions = 0
        self._model = weakref.ref(model)

    @property
    def model(self):
        return self._model()

    def close(self) -> None:
        self.llm = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _engine(self, folder: Path, lora_rank: int | None):
        kw = dict(model=str(folder), seed=0, gpu_memory_utilization=self.memory, logprobs_mode="raw_logprobs")
        if lora_rank is not None:
            kw.update(enable_lora=True, max_lora_rank=max(8, lora_rank))
        return self.vllm.LLM(**kw)

    def set_policy(self, model) -> None:
        version = weights_version(model)
        if version == self.version and model is self.model:
            return
        self._model, self.version = weakref.ref(model), version
        self.n_versions += 1
        if is_lora(model):
            inner = unwrap(model)
            if self.llm is None or self.engine_key != id(inner):
                base_dir = self.workdir / "base"
                merge_and_save(copy.deepcopy(inner).unload(), self.tokenizer, base_dir)
                rank = max(c.r for c in inner.peft_config.values())
                self.llm, self.engine_key = self._engine(base_dir, rank), id(inner)
            enabled = any(not m.disable_adapters for m in inner.modules() if hasattr(m, "lora_A"))
            if enabled:
                folder = self.workdir / f"adapter-{self.n_versions}"
                inner.save_pretrained(str(folder))
                request = importlib.import_module(self.vllm.__name__ + ".lora.request").LoRARequest
                self.lora = request(f"policy-{self.n_versions}", self.n_versions, str(folder))
            else:
                self.lora = None
        else:
            folder = self.workdir / f"model-{self.n_versions}"
            merge_and_save(model, self.tokenizer, folder)
            self.llm, self.engine_key, self.lora = None, None, None
            self.llm = self._engine(folder, None)

    def sample(self, prompts: list[list[int]], p: SamplingParams, *, prompt_ids: list[int], batch_size: int,
               progress: bool = False, on_batch=None) -> tuple[list[list[Sample]], SamplingStats]:
        import time
        stats = SamplingStats(prompts=len(prompts))
        if not prompts:
            return [], stats
        t0 = time.perf_counter()
        eos = sorted(stop_ids(self.tokenizer, self.model))
        requests, params = [], []
        for j, ids in enumerate(prompts):
            for k in range(p.n):
                requests.append({"prompt_token_ids": ids})
                params.append(self.vllm.SamplingParams(
                    n=1, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k if p.top_k else -1,
                    max_tokens=p.max_new_tokens, stop=list(p.stop) or None, stop_token_ids=eos,
                    seed=sample_seed(p.seed, prompt_ids[j], k), logprobs=0, skip_special_tokens=True))
        outs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=progress)
        result: list[list[Sample]] = []
        for j in range(len(prompts)):
            row = []
            for k in range(p.n):
                o = outs[j * p.n + k].outputs[0]
                tokens = list(o.token_ids)
                logps = [float(step[t].logprob) for step, t in zip(o.logprobs, tokens)]
                row.append(Sample(prompt_ids[j], k, finished_text(self.tokenizer, tokens, p.stop), tokens,
                                  logps,
                                  "stop" if o.finish_reason == "stop" else "length"))
                stats.new_tokens += len(tokens)
            result.append(row)
            if on_batch is not None:
                on_batch(list(row))
        stats.samples = len(prompts) * p.n
        stats.seconds = time.perf_counter() - t0
        stats.extra["path"] = "vllm" + (" + LoRA" if self.lora is not None else "")
        return result, stats
