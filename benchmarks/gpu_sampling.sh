#!/usr/bin/env bash
# Sampling on one GPU, under 5 minutes: posttrain's HF backend on CUDA (temperature > 0, bf16) on a
# random-initialised ~0.5B Llama-shaped model — log-probs within 1e-2 of a teacher-forced forward, tokens/s
# against transformers' generate at the same batch — and, where vLLM is installed, HF vs vLLM tokens/s.
# A machine without vLLM and without a network cannot install it: the script says so, and the contract
# tests (tests/integration/generation/test_backends.py, a fake standing in for vLLM) are the check.
#
#   bash benchmarks/gpu_sampling.sh [batch] [new_tokens]      # from the checkout root
set -euo pipefail
BATCH="${1:-64}" NEW="${2:-128}" python3 - "$@" <<'EOF'
import importlib.util, json, os, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM

assert torch.cuda.is_available(), "no CUDA device"
from posttrain.generation.sampler import GenerationSettings, SamplingParams, sample, use_backend
from posttrain.logprobs import completion_logprobs

batch, new = int(os.environ["BATCH"]), int(os.environ["NEW"])


class Tok:  # throughput does not depend on text: ids stand in for words
    eos_token_id, pad_token_id, unk_token_id = 2, 0, None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=2048,
                  tie_word_embeddings=True, eos_token_id=2, pad_token_id=0)
model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
model.generation_config.eos_token_id = None  # random weights: decode the full length
params = sum(p.numel() for p in model.parameters())
tok = Tok()
prompts = [torch.randint(3, 49152, (32 + (i % 7) * 8,)).tolist() for i in range(batch)]
report = {"gpu": torch.cuda.get_device_name(), "params": params, "batch": batch, "new_tokens": new}

with use_backend(GenerationSettings(backend="hf")):
    sample(model, tok, prompts[:2], SamplingParams(temperature=1.0, max_new_tokens=4))  # warm-up
    torch.cuda.synchronize(); t = time.perf_counter()
    out, stats = sample(model, tok, prompts, SamplingParams(temperature=1.0, max_new_tokens=new, seed=1),
                        batch_size=batch)
    torch.cuda.synchronize(); dt = time.perf_counter() - t
report["hf_backend"] = {"tokens_per_s": round(stats.new_tokens / dt, 1), "path": stats.extra.get("path")}
worst = 0.0
for p, (s,) in list(zip(prompts, out))[:8]:
    ids = torch.tensor([p + s.token_ids], device="cuda")
    labels = torch.tensor([[-100] * len(p) + s.token_ids], device="cuda")
    with torch.no_grad():
        lp, mask = completion_logprobs(model, ids, torch.ones_like(ids), labels)
    worst = max(worst, float((lp[mask].float().cpu() - torch.tensor(s.logprobs)).abs().max()))
report["logprob_max_abs_diff_vs_teacher_forced"] = worst
report["logprobs_ok"] = worst <= 1e-2

width = max(map(len, prompts))
ids = torch.zeros((batch, width), dtype=torch.long)
attn = torch.zeros_like(ids)
for r, p in enumerate(prompts):
    ids[r, width - len(p):], attn[r, width - len(p):] = torch.tensor(p), 1
torch.cuda.synchronize(); t = time.perf_counter()
with torch.no_grad():
    model.generate(input_ids=ids.cuda(), attention_mask=attn.cuda(), do_sample=True, temperature=1.0, top_k=0,
                   max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
torch.cuda.synchronize()
report["hf_generate"] = {"tokens_per_s": round(batch * new / (time.perf_counter() - t), 1)}
report["ratio_backend_over_generate"] = round(report["hf_backend"]["tokens_per_s"] / report["hf_generate"]["tokens_per_s"], 2)

if importlib.util.find_spec("vllm") is None:
    report["vllm"] = "not installed (no network on this machine to install it); contract tests stand in"
else:
    with use_backend(GenerationSettings(backend="vllm", gpu_memory_utilization=0.4)):
        sample(model, tok, prompts[:2], SamplingParams(temperature=1.0, max_new_tokens=4))
        t = time.perf_counter()
        _, vstats = sample(model, tok, prompts, SamplingParams(temperature=1.0, max_new_tokens=new, seed=1),
                           batch_size=batch)
        report["vllm"] = {"tokens_per_s": round(vstats.new_tokens / (time.perf_counter() - t), 1)}
print(json.dumps(report, indent=1))
EOF
