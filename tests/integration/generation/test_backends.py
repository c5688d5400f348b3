"""The sampling seam: every backend through the same contract (the HF backend, and a fake standing in for
vLLM that drives posttrain.generation.backends.vllm through vLLM's API), then what is particular to the
HF backend: the continuous-batching path ran, equals the generic path, reduced-precision decoding with
exact log-probs, stale weights and switched-off adapters noticed."""
from __future__ import annotations

import types

import pytest
import torch

from posttrain.generation import llama_decode
from posttrain.generation.backends import backend_for, resolve
from posttrain.generation.backends.hf import HFBackend
from posttrain.generation.backends.vllm import VLLMBackend
from posttrain.generation.sampler import GenerationSettings, SamplingParams, StopScan, sample, use_backend
from posttrain.logprobs import completion_logprobs
from tests.helpers import prompts


def teacher_forced(model, prompt, tokens):
    ids = torch.tensor([prompt + tokens])
    labels = torch.tensor([[-100] * len(prompt) + tokens])
    lp, mask = completion_logprobs(model, ids, torch.ones_like(ids), labels)
    return lp[mask]


# ---------------------------------------------------------------- a fake vLLM: vLLM's API over HF sampling

class _FakeLLM:
    """vllm.LLM as the backend uses it: built on a model folder, `generate(requests, params, lora_request)`
    returning RequestOutput-shaped objects. Each request samples with its own seed."""

    def __init__(self, model, seed=0, gpu_memory_utilization=0.5, logprobs_mode=None, enable_lora=False,
                 max_lora_rank=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        assert logprobs_mode == "raw_logprobs"
        self.base = AutoModelForCausalLM.from_pretrained(model).eval()
        self.tok = AutoTokenizer.from_pretrained(model)
        self.loras = {}
        self.enable_lora = enable_lora

    def _model(self, lora_request):
        if lora_request is None:
            return self.base
        assert self.enable_lora
        if lora_request.lora_int_id not in self.loras:
            import copy

            from peft import PeftModel
            self.loras[lora_request.lora_int_id] = PeftModel.from_pretrained(
                copy.deepcopy(self.base), lora_request.lora_path).eval()
        return self.loras[lora_request.lora_int_id]

    def generate(self, requests, params, lora_request=None, use_tqdm=False):
        model = self._model(lora_request)
        outs = []
        for req, sp in zip(requests, params):
            ours = SamplingParams(temperature=sp.temperature, top_p=sp.top_p, top_k=max(sp.top_k, 0),
                                  max_new_tokens=sp.max_tokens, stop=tuple(sp.stop or ()), seed=sp.seed)
            with use_backend(GenerationSettings(backend="hf")):
                ((s,),), _ = sample(model, self.tok, [req["prompt_token_ids"]], ours)
            logprobs = [{t: types.SimpleNamespace(logprob=lp)} for t, lp in zip(s.token_ids, s.logprobs)]
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(
                token_ids=s.token_ids, logprobs=logprobs, finish_reason=s.finish_reason, text=s.text)]))
        return outs


class _FakeSamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16, stop=None,
                 stop_token_ids=None,
                 seed=None, logprobs=None, skip_special_tokens=True):
        # one seeded request per sample, sampled log-prob
        assert n == 1 and logprobs == 0 and seed is not None
        self.temperature, self.top_p, self.top_k, self.max_tokens = temperature, top_p, top_k, max_tokens
        self.stop, self.seed = stop, seed


@pytest.fixture()
def fake_vllm(monkeypatch):
    import sys
    mod = types.ModuleType("fake_vllm")
    mod.LLM, mod.SamplingParams = _FakeLLM, _FakeSamplingParams
    req = types.ModuleType("fake_vllm.lora.request")
    req.LoRARequest = lambda name, int_id, path: types.SimpleNamespace(lora_name=name, lora_int_id=int_id,
                                                                       lora_path=path)
    monkeypatch.setitem(sys.modules, "fake_vllm", mod)
    monkeypatch.setitem(sys.modules, "fake_vllm.lora", types.ModuleType("fake_vllm.lora"))
    monkeypatch.setitem(sys.modules, "fake_vllm.lora.request", req)
    return mod


def make_backend(kind, model, tok, fake):
    if kind == "hf":
        return HFBackend(model, tok)
    backend = VLLMBackend(model, tok, vllm=fake)
    backend.set_policy(model)
    return backend


def run(backend, ps, params, ids=None, batch_size=8):
    ids = list(range(len(ps))) if ids is None else list(ids)
    return backend.sample(ps, params, prompt_ids=ids, batch_size=batch_size)[0]


BACKENDS = ["hf", "vllm"]


# ---------------------------------------------------------------- the contract

@pytest.mark.parametrize("kind", BACKENDS)
def test_contract_shapes_logprobs_and_finish(kind, lm, fake_vllm):
    model, tok = lm
    backend = make_backend(kind, model, tok, fake_vllm)
    ps = prompts(tok)[:3]
    out = run(backend, ps, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=5))
    assert [[(s.prompt_id, s.sample_index) for s in row] for row in out] == [[(j, 0), (j,
                                                                                       1)] for j in range(3)]
    for p, row in zip(ps, out):
        for s in row:
            assert s.finish_reason in ("stop", "length") and len(s.token_ids) == len(s.logprobs) >= 1
            assert s.finish_reason == "stop" or len(s.token_ids) == 8
            assert torch.allclose(teacher_forced(model, p, s.token_ids), torch.tensor(s.logprobs), atol=1e-4)
            assert s.text == tok.decode(s.token_ids, skip_special_tokens=True).strip()


@pytest.mark.parametrize("kind", BACKENDS)
def test_contract_same_seed_same_samples_whatever_the_batching(kind, lm, fake_vllm):
    model, tok = lm
    backend = make_backend(kind, model, tok, fake_vllm)
    ps = prompts(tok)
    params = SamplingParams(n=2, temperature=0.9, top_k=50, max_new_tokens=6, seed=11)
    key = lambda out: [[s.token_ids for s in row] for row in out]  # noqa: E731
    a = run(backend, ps, params, batch_size=12)
    b = run(backend, ps, params, batch_size=3)
    c = run(backend, ps[::-1], params, ids=range(len(ps) - 1, -1, -1), batch_size=5)  # another order
    assert key(a) == key(b) == key(c)[::-1]
    assert key(run(backend, ps, SamplingParams(n=2, temperature=0.9, top_k=50, max_new_tokens=6,
                                               seed=12))) != key(a)


@pytest.mark.parametrize("kind", BACKENDS)
def test_contract_stop_strings(kind, lm, fake_vllm):
    model, tok = lm
    backend = make_backend(kind, model, tok, fake_vllm)
    ps = prompts(tok)[:1]
    (free,), = run(backend, ps, SamplingParams(temperature=1.0, max_new_tokens=20, seed=1))
    stop = free.text[len(free.text) // 2:len(free.text) // 2 + 3]
    assert stop.strip(), free.text
    (cut,), = run(backend, ps, SamplingParams(temperature=1.0, max_new_tokens=20, seed=1, stop=(stop,)))
    assert cut.finish_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)


@pytest.mark.parametrize("kind", BACKENDS)
def test_contract_set_policy_follows_new_weights(kind, lm, fake_vllm):
    from posttrain.models import apply_lora, load_model
    _, tok = lm
    model, _ = load_model("tiny-llama", seed=3)
    model = apply_lora(model, r=4, alpha=8, seed=0)
    backend = make_backend(kind, model, tok, fake_vllm)
    ps = prompts(tok)[:2]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=2)
    before = run(backend, ps, params)
    with torch.no_grad():  # a training step's worth of change to the adapter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.5)
    backend.set_policy(model)
    after = run(backend, ps, params)
    assert [s.token_ids for (s,) in after] != [s.token_ids for (s,) in before]
    model.eval()
    for p, (s,) in zip(ps, after):
        assert torch.allclose(teacher_forced(model, p, s.token_ids), torch.tensor(s.logprobs), atol=1e-4)


# ---------------------------------------------------------------- the HF backend

def test_seam_picks_hf_on_cpu_and_knows_its_backends(lm):
    model, tok = lm
    assert resolve("auto", model) == "hf"
    assert isinstance(backend_for(model, tok, GenerationSettings()), HFBackend)
    from posttrain.errors import RecipeError
    with pytest.raises(RecipeError, match="unknown backend 'tgi'"):
        resolve("tgi", model)
    with pytest.raises(RecipeError, match="decode_dtype"):
        HFBackend(model, tok, decode_dtype="int3")


def test_continuous_path_runs_refills_slots_and_equals_the_generic_path(lm, monkeypatch):
    model, tok = lm
    ps = prompts(tok)
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)
    fast = HFBackend(model, tok)
    calls = []
    real_prefill = HFBackend._prefill
    monkeypatch.setattr(HFBackend, "_prefill", lambda self, *a: calls.append(len(a[3])) or real_prefill(self,
                                                                                                        *a))
    out, stats = fast.sample(ps, params, prompt_ids=list(range(len(ps))), batch_size=4)
    assert stats.extra["path"] == "llama-continuous"
    assert len(calls) > 2 and sum(calls) == len(ps) * 3  # slots were refilled as samples finished
    monkeypatch.setattr(llama_decode, "unsupported_reason", lambda m: "forced for the test")
    slow = HFBackend(model, tok)
    out2, stats2 = slow.sample(ps, params, prompt_ids=list(range(len(ps))), batch_size=4)
    assert stats2.extra["path"].startswith("generic")
    assert [[s.token_ids for s in r] for r in out] == [[s.token_ids for s in r] for r in out2]
    for r1, r2 in zip(out, out2):
        for a, b in zip(r1, r2):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_greedy_is_token_identical_to_generate(lm):
    model, tok = lm
    from posttrain.generation.sampler import stop_ids
    ps = prompts(tok)
    out = run(HFBackend(model, tok), ps, SamplingParams(temperature=0, max_new_tokens=12), batch_size=3)
    eos = sorted(stop_ids(tok, model))
    for p, (s,) in zip(ps, out):
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=12, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id)
        assert s.token_ids == ref[0, len(p):].tolist()


def test_stop_scan_is_incremental_and_agrees_with_a_full_decode(lm):
    _, tok = lm
    text = "Hello wörld, ünïcode 🙂 and more text\n\nEnd"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    scan = StopScan(tok, ["🙂 and", "\n\n"])
    hit = None
    for k in range(1, len(ids) + 1):
        hit = scan.feed(ids[:k])
        if hit is not None:
            break
    full = tok.decode(ids[:k], skip_special_tokens=True)
    assert hit == full.find("🙂 and") and "🙂 and" not in tok.decode(ids[:k - 1], skip_special_tokens=True)


def test_bfloat16_decode_returns_the_float32_policys_logprobs(lm):
    model, tok = lm
    ps = prompts(tok)[:3]
    backend = HFBackend(model, tok, decode_dtype="bfloat16")
    out = run(backend, ps, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=3))
    assert backend.weights().dtype == torch.bfloat16
    for p, row in zip(ps, out):
        for s in row:
            assert torch.allclose(teacher_forced(model, p, s.token_ids), torch.tensor(s.logprobs), atol=1e-4)


def test_stale_weights_and_a_switched_off_adapter_are_noticed(lm):
    from posttrain.models import apply_lora, load_model, reference_model
    _, tok = lm
    base, _ = load_model("tiny-llama", seed=3)
    model = apply_lora(base, r=4, alpha=8, seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.5)
    model.eval()
    ps = prompts(tok)[:2]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=2)
    backend = HFBackend(model, tok)
    first = run(backend, ps, params)
    built = backend.weights()
    assert run(backend, ps, params) == first and backend.weights() is built  # nothing changed: no rebuild
    with reference_model(model):
        ref = run(backend, ps, params)
        for p, (s,) in zip(ps, ref):
            assert torch.allclose(teacher_forced(model, p, s.token_ids), torch.tensor(s.logprobs), atol=1e-4)
    assert [s.token_ids for (s,) in ref] != [s.token_ids for (s,) in first]
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_A" in n).mul_(3.0)
    changed = run(backend, ps, params)
    for p, (s,) in zip(ps, changed):
        assert torch.allclose(teacher_forced(model, p, s.token_ids), torch.tensor(s.logprobs), atol=1e-4)


def test_a_fused_optimizer_step_is_noticed(lm):
    """Fused AdamW updates in place without bumping the version counters: the backend must still see it."""
    from posttrain.models import apply_lora, load_model
    _, tok = lm
    model = apply_lora(load_model("tiny-llama", seed=3)[0], r=4, alpha=8, seed=0)
    ps = prompts(tok)[:2]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=2)
    backend = HFBackend(model, tok)
    run(backend, ps, params)
    trainable = [p for p in model.parameters() if p.requires_grad]
    versions = [p._version for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=0.5, fused=True)
    for p in trainable:
        p.grad = torch.randn_like(p)
    opt.step()
    assert [p._version for p in trainable] == versions  # the counters did not move
    model.eval()
    for p, (s,) in zip(ps, run(backend, ps, params)):
        assert torch.allclose(teacher_forced(model, p, s.token_ids), torch.tensor(s.logprobs), atol=1e-4)


def test_the_backend_cache_does_not_keep_a_model_alive(lm):
    import gc

    from posttrain.generation import backends
    from posttrain.models import load_model
    _, tok = lm
    model, _ = load_model("tiny-llama", seed=5)
    sample(model, tok, prompts(tok)[:1], SamplingParams(temperature=0, max_new_tokens=2))
    assert model in backends._CACHE
    n = len(backends._CACHE)
    del model
    gc.collect()
    assert len(backends._CACHE) == n - 1
