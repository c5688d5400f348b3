"""Decode throughput of posttrain's sampler vs transformers' `generate`, and against the memory-bandwidth
bound. Usage:

    python benchmarks/decode_throughput.py [--batches 1 8 32] [--new-tokens 64] [--threads 2]

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


def time_ours(model, tok, ps, new: int, temperature: float) -> float:
    from posttrain.generation.sampler import SamplingParams, sample
    t = time.perf_counter()
    out, _ = sample(model, tok, ps, SamplingParams(temperature=temperature, max_new_tokens=new, seed=0),
                    batch_size=len(ps))
    dt = time.perf_counter() - t
    assert all(len(s.token_ids) == new for row in out for s in row), "a row stopped early"
    return dt


def time_hf(model, tok, ps, new: int) -> float:
    width = max(len(p) for p in ps)
    ids = torch.full((len(ps), width), tok.pad_token_id)
    attn = torch.zeros_like(ids)
    for r, p in enumerate(ps):
        ids[r, width - len(p):] = torch.tensor(p)
        attn[r, width - len(p):] = 1
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, pad_token_id=tok.pad_token_id)
    dt = time.perf_counter() - t
    assert out.shape[1] == width + new
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from posttrain.generation import sampler
    from posttrain.models import load_model
    model, tok = load_model("smollm2-135m-instruct")
    model.eval()
    # suppress end-of-turn on both sides: every row decodes exactly N tokens
    sampler_stop = sampler.stop_ids
    sampler.stop_ids = lambda tokenizer: set()
    eos = sorted(sampler_stop(tok))
    model.generation_config.eos_token_id = None
    bias = torch.zeros(model.config.vocab_size)
    bias[eos] = -1e9
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda m, i, o: o + bias)
    nbytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    bw = bandwidth_gbs()
    bound_ms = nbytes / (bw * 1e9) * 1e3
    print(json.dumps({"model_bytes": nbytes, "bandwidth_gbs": round(bw, 2), "bound_step_ms": round(bound_ms, 1),
                      "threads": a.threads}), flush=True)
    rows = []
    for b in a.batches:
        ps = prompts(tok, b)
        time_ours(model, tok, ps[:1], 4, 0.0)  # warm-up
        res = {"batch": b}
        for name, fn in (("hf_generate", lambda n: time_hf(model, tok, ps, n)),
                         ("posttrain_greedy", lambda n: time_ours(model, tok, ps, n, 0.0)),
                         ("posttrain_t0.7", lambda n: time_ours(model, tok, ps, n, 0.7))):
            t1, tn = fn(1), fn(a.new_tokens)
            step = (tn - t1) / (a.new_tokens - 1)
            res[name] = {"step_ms": round(step * 1e3, 1), "tokens_per_s": round(b / step, 1),
                         "bound_fraction": round(bound_ms / (step * 1e3), 3)}
        print(json.dumps(res), flush=True)
        rows.append(res)
    print("\n| batch | HF generate tok/s (step ms) | posttrain greedy tok/s (step ms) | posttrain T=0.7 tok/s "
          "(step ms) | bound tok/s | posttrain greedy fraction of bound |\n|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f = lambda k: f"{r[k]['tokens_per_s']} ({r[k]['step_ms']})"  # noqa: E731
        print(f"| {r['batch']} | {f('hf_generate')} | {f('posttrain_greedy')} | {f('posttrain_t0.7')} | "
              f"{r['batch'] / (bound_ms / 1e3):.0f} | {r['posttrain_greedy']['bound_fraction']} |")


if __name__ == "__main__":
    main()
