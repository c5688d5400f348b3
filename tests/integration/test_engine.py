"""The engine on the tiny random Llama: exact gradient accumulation and resume, checkpoints that survive
a crash, NaN losses, gradient checkpointing, bf16, the grad norm and clipping, rollout runs."""
import json
import math

import pytest
import torch

from posttrain.checkpoints import latest_checkpoint
from posttrain.engine import Engine
from posttrain.errors import TrainingError
from posttrain.methods.sft import SFTObjective
from tests.helpers import engine, pad, random_features, settings, tiny_llama


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_params_close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"max parameter difference {worst}"


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_gradient_accumulation_is_exact(tmp_path, normalization):
    """One step of batch 8 == 4 accumulated micro-batches of 2 (same update), with unequal lengths.

    SGD's update is lr*grad, so equal parameters mean equal accumulated gradients (Adam's first update,
    lr*g/(|g|+eps), amplifies float noise in near-zero gradients and would hide the check)."""
    data = random_features(8, seed=5, min_len=4, max_len=30)
    results = []
    for micro, accum in ((8, 1), (2, 4)):
        cfg = settings(optimizer="sgd", lr=0.05, micro_batch_size=micro, grad_accum=accum, max_steps=1,
                       warmup_steps=0, schedule="constant")
        e = engine(tmp_path, cfg, data=data, objective=SFTObjective(normalization), name=f"{micro}x{accum}")
        before = params(e.model)
        m = e.train_step(e.micro_batches(0))
        after = params(e.model)
        assert any((before[k] - after[k]).abs().max() > 0 for k in before)
        results.append((after, m["loss"]))
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)
    assert_params_close(results[0][0], results[1][0], atol=1e-6)


def test_resume_is_exact(tmp_path):
    """6 steps straight == 3 steps, stop, resume 3 more — with dropout, warmup, cosine and AdamW."""
    cfg = settings(max_steps=6, save_every=3)

    def dropout_model(seed=0):
        m = tiny_llama(seed)
        m.config.attention_dropout = 0.2
        for layer in m.model.layers:
            layer.self_attn.attention_dropout = 0.2
        return m

    straight = engine(tmp_path, cfg, model=dropout_model(), name="straight")
    straight.train()
    interrupted = engine(tmp_path, cfg, model=dropout_model(), name="resumed")
    interrupted.train(stop_after=3)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-0000003"
    torch.manual_seed(1234)  # disturb the global RNG: resume must restore it
    resumed = engine(tmp_path, cfg, model=dropout_model(seed=99), name="resumed")  # other init, overwritten
    res = resumed.train()
    assert res.steps == 6
    assert_params_close(params(straight.model), params(resumed.model), atol=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    ref = [json.loads(x)["loss"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines] == pytest.approx(ref, rel=1e-6)


def test_crash_while_checkpointing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = settings(max_steps=6, save_every=3)
    e = engine(tmp_path, cfg)
    real_save = torch.save

    def failing_save(obj, path, *a, **kw):
        if e.step == 6 and str(path).endswith("rng.pt"):
            raise OSError("disk full (simulated)")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        e.train()
    monkeypatch.setattr(torch, "save", real_save)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-0000003"], ckpts  # no half-written step 6, no temp folder left
    again = engine(tmp_path, cfg, model=tiny_llama(seed=7))
    again.train()
    assert again.step == 6 and latest_checkpoint(tmp_path / "run").name == "step-0000006"


class ExplodingObjective(SFTObjective):
    def __init__(self, at_call):
        super().__init__("token")
        self.calls, self.at_call = 0, at_call

    def __call__(self, model, batch):
        self.calls += 1
        loss_sum, m = super().__call__(model, batch)
        return (loss_sum * float("nan") if self.calls == self.at_call else loss_sum), m


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    e = engine(tmp_path, settings(max_steps=6, save_every=2), objective=ExplodingObjective(at_call=3))
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 3.*step-0000002"):
        e.train()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000002"]


def test_loss_goes_down_on_a_memorisable_set(tmp_path):
    data = random_features(4, seed=11, min_len=8, max_len=12)
    e = engine(tmp_path, settings(lr=1e-2, micro_batch_size=4, max_steps=60, warmup_steps=0,
                                        schedule="constant"), data=data)
    res = e.train()
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.05 * losses[0], losses[::10]


def test_empty_training_set_and_no_trainable_params(tmp_path):
    with pytest.raises(TrainingError, match="empty"):
        engine(tmp_path, settings(), data=[])
    frozen = tiny_llama()
    frozen.requires_grad_(False)
    with pytest.raises(TrainingError, match="no trainable"):
        engine(tmp_path, settings(), model=frozen)


def checkpointing_flag(model) -> bool:
    # transformers >= 5.2 names it is_activation_checkpointing (is_gradient_checkpointing is deprecated)
    flag = getattr(type(model), "is_activation_checkpointing", None)
    return bool(model.is_activation_checkpointing if flag is not None else model.is_gradient_checkpointing)


def forward_calls_per_layer(e) -> list[int]:
    """How often each decoder layer's attention starts during one train_step: once per forward, and once
    more in the backward when activation checkpointing recomputes the layer. (A hook on the layer itself
    stays outside the checkpoint, and torch stops a recompute once the last saved tensor is rebuilt, so
    the hook sits on the layer's first block, before anything is saved.)"""
    layers = e.module.model.layers
    calls = [0] * len(layers)
    hooks = [layer.self_attn.register_forward_pre_hook(lambda mod, args, i=i: calls.__setitem__(i,
                                                                                                calls[i] + 1))
             for i, layer in enumerate(layers)]
    try:
        e.train_step(e.micro_batches(0))
    finally:
        for h in hooks:
            h.remove()
    return calls


def test_gradient_checkpointing_recomputes_and_gives_the_same_update(tmp_path):
    data = random_features(4, seed=3)
    out = []
    for gc in (False, True):
        cfg = settings(optimizer="sgd", lr=0.05, micro_batch_size=4, max_steps=1, warmup_steps=0,
                       gradient_checkpointing=gc)
        e = engine(tmp_path, cfg, data=data, name=f"gc{gc}")
        assert checkpointing_flag(e.module) is gc
        # one micro-batch: each layer runs once in the forward, and again in the backward if checkpointed
        assert forward_calls_per_layer(e) == [2 if gc else 1] * 2
        out.append(params(e.model))
    assert_params_close(out[0], out[1], atol=1e-6)


def linear_output_dtypes(e) -> set[torch.dtype]:
    """The dtypes a Linear layer computes in during one train_step (autocast runs matmuls in bf16)."""
    seen: set[torch.dtype] = set()
    proj = e.module.model.layers[0].mlp.gate_proj
    hook = proj.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    try:
        e.train_step(e.micro_batches(0))
    finally:
        hook.remove()
    return seen


def test_bf16_autocast_trains(tmp_path):
    e = engine(tmp_path, settings(precision="bf16", max_steps=3, lr=1e-2, warmup_steps=0))
    assert linear_output_dtypes(e) == {torch.bfloat16}  # autocast is on during the step
    res = e.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    assert next(e.model.parameters()).dtype == torch.float32  # master weights stay fp32
    fp32 = engine(tmp_path, settings(precision="fp32", max_steps=1), name="fp32")
    assert linear_output_dtypes(fp32) == {torch.float32}  # and off at fp32


def test_epochs_set_the_number_of_steps(tmp_path):
    e = engine(tmp_path, settings(max_steps=None, epochs=1.5, micro_batch_size=4, grad_accum=2),
               data=random_features(20))
    assert e.steps == 4  # ceil(1.5 * 20 / 8)


def test_the_logged_grad_norm_is_the_accurate_one_and_clipping_uses_it(tmp_path, monkeypatch):
    seen = {}
    clip = torch.nn.utils.clip_grads_with_norm_

    def spy(params, max_norm, total_norm, *a, **kw):
        params = list(params)
        seen["exact"] = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in params))
        seen["given"] = float(total_norm)
        clip(params, max_norm, total_norm, *a, **kw)
        seen["after"] = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in params))
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", spy)
    e = engine(tmp_path, settings(max_steps=1, max_grad_norm=1e-3))
    logged = e.train().history[0]["grad_norm"]
    assert seen, "clipping did not run"
    assert math.isclose(seen["given"], seen["exact"], rel_tol=1e-6) and logged == pytest.approx(seen["exact"],
                                                                                                rel=1e-6)
    assert seen["exact"] > 1e-3 and seen["after"] == pytest.approx(1e-3, rel=1e-4)


def test_clipping_leaves_a_gradient_under_the_limit_alone_and_halves_one_twice_over(tmp_path):
    """The test above has only a norm far ABOVE the limit (every gradient saturates at max_norm), so a
    rule that rescales every gradient to max_norm ("normalise" instead of "clip") would pass it. Here the
    limit lies above the norm (nothing may change) and at half of it (a factor 1/2), checked through the
    update itself: plain SGD steps by lr * clipped gradient, so update = lr * g * min(1, c / g)."""
    data = random_features(4, seed=3)

    def one_step(max_norm):
        cfg = settings(optimizer="sgd", lr=0.05, micro_batch_size=4, max_steps=1, warmup_steps=0,
                       schedule="constant", max_grad_norm=max_norm)
        e = engine(tmp_path, cfg, data=data, name=f"clip{max_norm}")
        # named_parameters, not state_dict: the tied embedding / LM head is one parameter, counted once
        before = {n: p.detach().clone() for n, p in e.model.named_parameters()}
        out = e.train_step(e.micro_batches(0))
        delta = torch.cat([(p.detach() - before[n]).flatten().double() for n,
                           p in e.model.named_parameters()])
        return out["grad_norm"], delta

    g, free = one_step(1e9)                    # far above any norm: the unclipped update
    assert 0 < g < 1e9
    assert free.norm().item() == pytest.approx(0.05 * g, rel=1e-4)    # |update| = lr * g, by hand
    g2, above = one_step(2 * g)                # c = 2g: strictly inside, min(1, 2g / g) = 1, unchanged
    assert g2 == pytest.approx(g, rel=1e-6)
    torch.testing.assert_close(above, free, rtol=0, atol=1e-7)
    g3, half = one_step(0.5 * g)               # c = g/2: min(1, (g/2) / g) = 1/2
    assert g3 == pytest.approx(g, rel=1e-6)    # the logged norm is the one before clipping
    assert half.norm().item() == pytest.approx(0.05 * g / 2, rel=1e-4)
    torch.testing.assert_close(half, free / 2, rtol=0, atol=1e-7)


def test_on_cpu_the_engine_keeps_freed_memory_unless_told_not_to(tmp_path, monkeypatch):
    from posttrain import allocator
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    engine(tmp_path, settings(max_steps=1), name="a")
    assert calls == [1]
    engine(tmp_path, settings(max_steps=1, keep_freed_memory=False), name="b")
    assert calls == [1]


class Buffers:
    """A rollout hook that hands a fresh buffer of `buffer_size` examples every 2 steps (counts its calls)."""

    def __init__(self, buffer_size=4):
        self.buffer_size, self.calls, self.given = buffer_size, [], 0

    def __call__(self, model, step):
        from posttrain.contracts import RolloutOutput
        self.calls.append(step)
        if step % 2:
            return None
        self.given += 1
        return RolloutOutput(random_features(self.buffer_size, seed=step), {"rollout/n": float(self.given)})

    def state_dict(self):
        return {"given": self.given}

    def load_state_dict(self, state):
        self.given = state["given"]


def test_a_rollout_run_needs_no_placeholder_data_and_is_sized_by_its_buffers(tmp_path):
    hook = Buffers(buffer_size=4)
    cfg = settings(max_steps=None, epochs=3, micro_batch_size=2)
    e = Engine(tiny_llama(), SFTObjective("token"), None, pad, cfg, run_dir=tmp_path / "r", rollout=hook,
               show_progress=False)
    assert e.steps == 6 and e.plan is None  # 3 epochs of a 4-example buffer in batches of 2
    result = e.train()
    assert hook.calls == list(range(6)) and hook.given == 3
    assert [h["rollout/n"] for h in result.history] == [1, 1, 2, 2, 3, 3]
    assert result.model is e.module and isinstance(result.model, torch.nn.Module)


def test_a_run_without_data_or_hook_and_a_hook_that_gives_nothing_are_refused(tmp_path):
    with pytest.raises(TrainingError, match="no training data and no rollout hook"):
        Engine(tiny_llama(), SFTObjective("token"), None, pad, settings(), run_dir=tmp_path / "a")
    with pytest.raises(TrainingError, match="prepare"):
        Engine(tiny_llama(), SFTObjective("token"), None, pad, settings(), run_dir=tmp_path / "b",
               rollout=Buffers(), prepare=lambda plan: None)

    class Silent(Buffers):
        def __call__(self, model, step):
            return None

    e = Engine(tiny_llama(), SFTObjective("token"), None, pad, settings(), run_dir=tmp_path / "c",
               rollout=Silent(), show_progress=False)
    with pytest.raises(TrainingError, match="step 1: the rollout hook gave no buffer"):
        e.train()
