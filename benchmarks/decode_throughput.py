"""Decode throughput of posttrain's sampler vs transformers' `generate`, and against the memory-bandwidth
bound. Usage:

    python benchmarks/decode_throughput.py [--batches 1 16 64] [--new-tokens 64] [--threads 2]

Per batch size, both decode the same chat prompts greedily (and our sampler also at temperature 0.7);
the end-of-turn token is suppressed on both sides so every row decodes exactly --new-tokens tokens. A
decode step's time = (time for N new tokens - time for 1 new token) / (N - 1): the prefill is excluded.

The bound: a decode step must read every weight once, so step time >= model bytes / memory bandwidth.
Bandwidth is measured here (a 1 GiB tensor copy: read + write, best of 5). The fraction reported is
bound / measured step time (1.0 = at the bound); at larger batches the step becomes compute-bound
(2 x params x batch FLOPs) and the fraction falls by design, so tokens/s is the figure to compare there.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def bandwidth_gbs() -> float:
    x = torch.empty(1 << 28, dtype=torch.float32).fill_(1.0)  # 1 GiB
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        y.copy_(x)
        best = min(best, time.perf_counter() - t)
    return 2 * x.numel() * 4 / best / 1e9


def prompts(tok, n: int) -> list[list[int]]:
    from posttrain.data.template import encode_prompt
    qs = ["Write a short story about a lighthouse keeper.", "Explain how rain forms.",
          "List some facts about the moon.", "Describe your favourite meal."]
    return [encode_prompt(tok, [{"role": "user", "content": qs[i % len(qs)] + " " * (i // len(qs))}])
            for i in range(n)]


def time_ours(model, tok, ps, new: int, temperature: float, decode_dtype: str | None = None) -> float:
    from posttrain.generation.sampler import GenerationSettings, SamplingParams, sample, use_backend
    t = time.perf_counter()
    with use_backend(GenerationSettings(backend="hf", decode_dtype=decode_dtype)):
        out, _ = sample(model, tok, ps, SamplingParams(temperature=temperature, max_new_tokens=new, seed=0),
                        batch_size=len(ps))
    dt = time.perf_counter() - t
    assert all(len(s.token_ids) == new for row in out for s in row), "a row stopped early"
    return dt


def time_hf(model, tok, ps, new: int, temperature: float = 0.0) -> float:
    width = max(len(p) for p in ps)
    ids = torch.full((len(ps), width), tok.pad_token_id)
    attn = torch.zeros_like(ids)
    for r, p in enumerate(ps):
        ids[r, width - len(p):] = torch.tensor(p)
        attn[r, width - len(p):] = 1
    t = time.perf_counter()
    with torch.no_grad():
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 \
            else dict(do_sample=False)
        out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=new, min_new_tokens=new,
                             pad_token_id=tok.pad_token_id, **sampling)
    dt = time.perf_counter() - t
    assert out.shape[1] == width + new
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from posttrain.generation import sampler
    from posttrain.generation.backends import hf as hf_backend
    from posttrain.models import load_model
    model, tok = load_model("smollm2-135m-instruct")
    model.eval()
    # suppress end-of-turn on both sides: every row decodes exactly N tokens
    eos = sorted(sampler.stop_ids(tok, model))
    hf_backend.stop_ids = lambda tokenizer, model=None: set()
    model.generation_config.eos_token_id = None
    bias = torch.zeros(model.config.vocab_size)
    bias[eos] = -1e9
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda m, i, o: o + bias)
    nbytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    bw = bandwidth_gbs()
    bound_ms = nbytes / (bw * 1e9) * 1e3
    print(json.dumps({"model_bytes": nbytes, "bandwidth_gbs": round(bw, 2),
                      "bound_step_ms": round(bound_ms, 1),
                      "threads": a.threads}), flush=True)
    rows = []
    for b in a.batches:
        ps = prompts(tok, b)
        # warm-up at the measured batch size on both sides: the first call pays page faults for the
        # KV cache and activations (measured: +30% on posttrain's first batch-64 call)
        time_hf(model, tok, ps, 2)
        time_ours(model, tok, ps, 2, 0.0)
        res = {"batch": b}
        for name, fn in (("hf_generate", lambda n: time_hf(model, tok, ps, n)),
                         ("hf_generate_t0.7", lambda n: time_hf(model, tok, ps, n, 0.7)),
                         ("posttrain_greedy", lambda n: time_ours(model, tok, ps, n, 0.0)),
                         ("posttrain_t0.7", lambda n: time_ours(model, tok, ps, n, 0.7)),
                         ("posttrain_t0.7_bf16", lambda n: time_ours(model, tok, ps, n, 0.7, "bfloat16"))):
            t1, tn = fn(1), fn(a.new_tokens)
            step = (tn - t1) / (a.new_tokens - 1)
            res[name] = {"step_ms": round(step * 1e3, 1), "tokens_per_s": round(b / step, 1),
                         "bound_fraction": round(bound_ms / (step * 1e3), 3)}
        print(json.dumps(res), flush=True)
        rows.append(res)
    print("\n| batch | generate greedy tok/s | posttrain greedy tok/s (ratio) | generate T=0.7 tok/s | "
          "posttrain T=0.7 tok/s (ratio) | posttrain T=0.7 bf16 decode tok/s (ratio) | bound tok/s | "
          "posttrain greedy fraction of bound |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = lambda k: r[k]["tokens_per_s"]  # noqa: E731
        print(f"| {r['batch']} | {t('hf_generate')} | {t('posttrain_greedy')} "
              f"({t('posttrain_greedy') / t('hf_generate'):.2f}x) | "
              f"{t('hf_generate_t0.7')} | {t('posttrain_t0.7')} "
              f"({t('posttrain_t0.7') / t('hf_generate_t0.7'):.2f}x) | "
              f"{t('posttrain_t0.7_bf16')} ({t('posttrain_t0.7_bf16') / t('hf_generate_t0.7'):.2f}x) | "
              f"{r['batch'] / (bound_ms / 1e3):.0f} | {r['posttrain_greedy']['bound_fraction']} |")

if __name__ == "__main__":
    main()
