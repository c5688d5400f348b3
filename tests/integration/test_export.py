"""HF-native artifacts: checkpoint model folders and `posttrain export` load with plain transformers."""
import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.cli import main
from posttrain.config import Recipe, validate_section
from posttrain.data.template import encode_prompt
from posttrain.export import export_run
from posttrain.generation.sampler import SamplingParams, sample
from posttrain.models import load_model, load_weights_, save_weights
from posttrain.models.start import load_policy

RECIPE = """
name: {name}
method: {{name: sft}}
model: {{name: tiny-llama{lora}}}
data:
  train: {{synthetic: {{task: arithmetic, n: 8, seed: 1}}}}
  max_length: 96
train: {{lr: {lr}, micro_batch_size: 4, max_steps: {steps}, warmup_steps: 0, schedule: constant}}
"""
CONV = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 12 + 7?"}]
PROMPTS = [CONV, [{"role": "user", "content": "What is 5 * 8?"}], [{"role": "user",
                                                                    "content": "Name a colour."}]]


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """One private cache for the module: the tokenizer folder is built once (~5 s), not per test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained once per module: a LoRA run (far enough from the random start that greedy decoding varies
    with the prompt) and a 2-step full fine-tune."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, lora, steps, lr in (("lora", ", lora: {r: 8, alpha: 16}", 8, 2e-2), ("full", "", 2, 1e-3)):
        p = root / f"{name}.yaml"
        p.write_text(RECIPE.format(name=name, lora=lora, steps=steps, lr=lr))
        assert main(["train", str(p), f"output_dir={root}", "--quiet"]) == 0
        out[name] = root / name
    return out


def rebuilt_policy(run):
    model, tok = load_policy(validate_section(Recipe, yaml.safe_load((run / "recipe.yaml").read_text()),
                                              "test"))
    load_weights_(model, sorted((run / "checkpoints").glob("step-*"))[-1] / "model")
    return model.eval(), tok


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_merged_export_generates_like_posttrain(runs, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", str(runs["lora"]), str(out), "--merge"]) == 0
    assert (not (out / "adapter_config.json").exists()
            and json.loads((out / "export.json").read_text())["step"] == 8)

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template(CONV, add_generation_prompt=True, tokenize=True)["input_ids"]
    policy, ptok = rebuilt_policy(runs["lora"])
    assert ids == encode_prompt(ptok, CONV)

    # the adapter was trained and merged: the export is not the base model
    assert any(p.abs().max() > 0 for n, p in policy.named_parameters() if "lora_B" in n)
    base, _ = load_model("tiny-llama")
    assert not torch.allclose(logits(model, ids), logits(base.eval(), ids), atol=1e-3)
    torch.testing.assert_close(logits(model, ids), logits(policy, ids), atol=1e-4, rtol=1e-4)

    prompts = [encode_prompt(ptok, conv) for conv in PROMPTS]
    samples, _ = sample(policy, ptok, prompts, SamplingParams(temperature=0, max_new_tokens=12), batch_size=1)
    seen = set()
    for ids, (ours,) in zip(prompts, samples):
        hf = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            do_sample=False, max_new_tokens=12)[0, len(ids):].tolist()
        # both stop at <|im_end|> (the tokenizer's eos), so the sequences match in length too
        assert hf == ours.token_ids, (hf, ours.token_ids)
        seen.add(tuple(hf))
    assert len(seen) > 1  # greedy output depends on the prompt: not a degenerate model


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # inside peft
def test_unmerged_export_is_a_peft_adapter_with_tokenizer(runs, tmp_path):
    from peft import PeftModel

    out = export_run(runs["lora"], tmp_path / "adapter")
    info = json.loads((out / "export.json").read_text())
    assert info["format"] == "peft-adapter" and info["base_model"] == "tiny-llama"
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template(CONV, add_generation_prompt=True, tokenize=True)["input_ids"]
    base, _ = load_model("tiny-llama")
    model = PeftModel.from_pretrained(base, out).eval()
    policy, _ = rebuilt_policy(runs["lora"])
    torch.testing.assert_close(logits(model, ids), logits(policy, ids))


def test_full_finetune_checkpoint_is_an_hf_folder(runs, tmp_path):
    folder = sorted((runs["full"] / "checkpoints").glob("step-*"))[-1] / "model"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    policy, ptok = rebuilt_policy(runs["full"])  # load_weights_ ignores the tokenizer files
    for conv in (CONV, CONV + [{"role": "assistant", "content": "19"}, {"role": "user",
                                                                        "content": "And 3 * 4?"}]):
        assert (tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)["input_ids"]
                == ptok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)["input_ids"])
    ids = encode_prompt(ptok, CONV)
    torch.testing.assert_close(logits(model, ids), logits(policy, ids))
    # a full fine-tune exports as a plain model, --merge or not
    out = export_run(runs["full"], tmp_path / "full")
    assert json.loads((out / "export.json").read_text())["format"] == "model"
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out).eval(), ids), logits(policy,
                                                                                                     ids))


def test_save_weights_with_tokenizer_round_trips(tmp_path):
    model, tok = load_model("tiny-llama")
    save_weights(model, tmp_path / "m", tokenizer=tok)
    assert (tmp_path / "m" / "tokenizer_config.json").is_file()
    fresh, _ = load_model("tiny-llama", seed=1)
    load_weights_(fresh, tmp_path / "m")
    ids = encode_prompt(tok, CONV)
    torch.testing.assert_close(logits(fresh, ids), logits(model, ids))


def test_export_errors(runs, tmp_path, capsys):
    (tmp_path / "norun").mkdir()
    rc = main(["export", str(tmp_path / "norun"), str(tmp_path / "o1")])
    assert rc == 2 and "recipe.yaml" in capsys.readouterr().err

    run = tmp_path / "nockpt"
    run.mkdir()
    (run / "recipe.yaml").write_text((runs["lora"] / "recipe.yaml").read_text())
    rc = main(["export", str(run), str(tmp_path / "o2")])
    assert rc == 2 and "no checkpoint" in capsys.readouterr().err and not (tmp_path / "o2").exists()

    rc = main(["export", str(runs["lora"]), str(tmp_path / "o3"), "--checkpoint", "step-0000099"])
    assert rc == 2 and "step-0000099" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    rc = main(["export", str(runs["lora"]), str(busy), "--merge"])
    assert rc == 2 and "--force" in capsys.readouterr().err and (busy / "keep.txt").read_text() == "mine"
    assert main(["export", str(runs["lora"]), str(busy), "--merge", "--force"]) == 0
    assert not (busy / "keep.txt").exists() and (busy / "model.safetensors").is_file()


def test_scalar_head_checkpoint_exports_its_lm(runs, tmp_path):
    """A PPO (value head) or reward-model checkpoint: the export is the language model, head left out."""
    from posttrain.models.value_head import ScalarHeadModel

    policy, tok = rebuilt_policy(runs["lora"])
    run = tmp_path / "ppo"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text((runs["lora"] / "recipe.yaml").read_text())
    folder = run / "checkpoints" / "step-0000001" / "model"
    save_weights(ScalarHeadModel(policy, info={"base_model": "tiny-llama"}), folder, tokenizer=tok)
    assert (folder / "scalar_head.json").is_file() and (folder / "tokenizer_config.json").is_file()
    out = export_run(run, tmp_path / "out", merge=True)
    ids = encode_prompt(tok, CONV)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out).eval(), ids), logits(policy,
                                                                                                     ids),
                               atol=1e-4, rtol=1e-4)
    assert not list(out.glob("scalar_head*"))
