"""HF-native artifacts: checkpoint model folders and `posttrain export` load with plain transformers, and
with peft on the base the model card names, in a fresh process without posttrain's cache or network."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
from posttrain.models.embedded import GGUF_PRECISION, HUB_ID
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
AMBIENT_CACHE = os.environ.get("POSTTRAIN_CACHE")  # before the module's private one: the embedded model's
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


# ---------------------------------------------------------------- loading elsewhere: a fresh process

# Run with a clean environment: plain transformers loads the merged folder (posttrain not imported), then
# the card's own "How to load" code rebuilds the base and applies the adapter with peft.
FRESH = """
import json, re, sys
from pathlib import Path
import torch
args = json.loads(sys.argv[1])
out, ids = Path(args["out"]), torch.tensor([args["ids"]])
if args.get("merged"):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(args["merged"]).eval()
    assert AutoTokenizer.from_pretrained(args["merged"]).apply_chat_template(
        args["conv"], add_generation_prompt=True, tokenize=True)["input_ids"] == args["ids"]
    with torch.no_grad():
        torch.save(model(input_ids=ids).logits, out / "merged.pt")
    assert "posttrain" not in sys.modules
if args.get("adapter"):
    card = (Path(args["adapter"]) / "README.md").read_text()
    code = re.search(r"## How to load\\n\\n```python\\n(.*?)```", card, re.S).group(1)
    scope = {}
    exec(code.replace('"path/to/this/folder"', repr(args["adapter"])), scope)
    with torch.no_grad():
        torch.save(scope["model"].eval()(input_ids=ids).logits, out / "adapter.pt")
"""


def fresh_process(tmp_path, cache, **args):
    """Logits of the exports in a new interpreter: HF_HUB_OFFLINE, no inherited environment, a private
    home; `cache` is the POSTTRAIN_CACHE the card's rebuild of a posttrain base may use."""
    out = tmp_path / "fresh"
    out.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if cache is not None:
        env["POSTTRAIN_CACHE"] = str(cache)
    args = {k: str(v) if not isinstance(v, list) else v for k, v in args.items()}
    done = subprocess.run([sys.executable, "-c", FRESH, json.dumps({**args, "out": str(out), "conv": CONV})],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {f.stem: torch.load(f) for f in out.glob("*.pt")}


def front_matter(folder):
    text = (folder / "README.md").read_text()
    head = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert head, text[:300]
    return yaml.safe_load(head.group(1)), text


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # inside peft
def test_exports_load_in_a_fresh_process(runs, tmp_path):
    merged = export_run(runs["lora"], tmp_path / "merged", merge=True)
    adapter = export_run(runs["lora"], tmp_path / "adapter")
    # the adapter names its base: the tiny model by its posttrain name, never null or a cache path
    ckpt = sorted((runs["lora"] / "checkpoints").glob("step-*"))[-1] / "model"
    for folder in (adapter, ckpt):  # the export's and the checkpoint's own adapter_config.json
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] \
            == "tiny-llama"

    policy, ptok = rebuilt_policy(runs["lora"])
    ids = encode_prompt(ptok, CONV)
    got = fresh_process(tmp_path, os.environ["POSTTRAIN_CACHE"], merged=merged, adapter=adapter, ids=ids)
    want = logits(policy, ids)
    torch.testing.assert_close(got["merged"], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["adapter"], want)


def test_export_cards_and_generation_configs(runs, tmp_path):
    adapter = export_run(runs["lora"], tmp_path / "adapter")
    merged = export_run(runs["lora"], tmp_path / "merged", merge=True)
    full = export_run(runs["full"], tmp_path / "full")
    for folder, library, run, step in ((adapter, "peft", "lora", 8), (merged, "transformers", "lora", 8),
                                       (full, "transformers", "full", 2)):
        meta, text = front_matter(folder)
        assert meta["base_model"] == "tiny-llama" and meta["library_name"] == library
        assert meta["tags"] == ["posttrain", "sft"]
        assert f"## Final metrics (step {step})" in text and "| loss |" in text
        assert 'load_model("tiny-llama", seed=0)' in text or library == "transformers"
        assert f"# {run}\n" in text and "synthetic `arithmetic` task, n=8, seed=1" in text
        gen = json.loads((folder / "generation_config.json").read_text())
        tok = AutoTokenizer.from_pretrained(folder)
        assert gen["pad_token_id"] == tok.pad_token_id and gen["eos_token_id"] == tok.eos_token_id
    # the card's recipe is the run's recipe, with this machine's folders cut to their names
    from posttrain.export import portable
    recipe = yaml.safe_load(re.search(r"```yaml\n(.*?)```", front_matter(adapter)[1], re.S).group(1))
    written = yaml.safe_load((runs["lora"] / "recipe.yaml").read_text())
    assert recipe == portable(written) and Path(written["output_dir"]).is_absolute()
    machine = str(runs["lora"].resolve().parent)
    for folder in (adapter,):
        assert machine not in (folder / "README.md").read_text()
        info = json.loads((folder / "export.json").read_text())
        assert info["run"] == runs["lora"].name and info["checkpoint"].startswith("checkpoints/step-")


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # inside peft
def test_local_base_is_named_by_its_path_as_given(tmp_path, monkeypatch):
    """A recipe naming a local folder relative to where it runs: the adapter and the card give that path,
    and the card's code loads the base from it (here, from the same working directory)."""
    monkeypatch.chdir(tmp_path)
    base, tok = load_model("tiny-llama", seed=7)
    save_weights(base, tmp_path / "bases" / "mine", tokenizer=tok)
    (tmp_path / "local.yaml").write_text(RECIPE.format(name="local", lora=", lora: {r: 4, alpha: 8}", steps=2,
                                                       lr=2e-2).replace("tiny-llama", "./bases/mine"))
    assert main(["train", "local.yaml", "output_dir=runs", "--quiet"]) == 0
    out = export_run("runs/local", "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "./bases/mine"
    meta, text = front_matter(out)
    assert meta["base_model"] == "./bases/mine" and 'from_pretrained("./bases/mine")' in text

    policy, ptok = rebuilt_policy(tmp_path / "runs" / "local")
    ids = encode_prompt(ptok, CONV)
    got = fresh_process(tmp_path, None, adapter=(tmp_path / "adapter"), ids=ids)
    torch.testing.assert_close(got["adapter"], logits(policy, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # inside peft
def test_embedded_adapter_names_the_hub_model(tmp_path, monkeypatch):
    """The embedded model's adapter names HuggingFaceTB/SmolLM2-135M-Instruct (not a cache path); offline
    that id cannot be downloaded, so the fresh process passes the base explicitly, as the card says."""
    if AMBIENT_CACHE is None:
        monkeypatch.delenv("POSTTRAIN_CACHE")
    else:  # the converted model where the rest of the suite finds it, not a second conversion
        monkeypatch.setenv("POSTTRAIN_CACHE", AMBIENT_CACHE)
    p = tmp_path / "smol.yaml"
    p.write_text(RECIPE.format(name="smol", lora=", lora: {r: 4, alpha: 8}", steps=1, lr=1e-3)
                 .replace("tiny-llama", "smollm2-135m-instruct").replace("n: 8", "n: 4"))
    assert main(["train", str(p), f"output_dir={tmp_path}", "--quiet"]) == 0
    out = export_run(tmp_path / "smol", tmp_path / "adapter")
    ckpt = sorted((tmp_path / "smol" / "checkpoints").glob("step-*"))[-1] / "model"
    for folder in (out, ckpt):
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    meta, text = front_matter(out)
    assert meta["base_model"] == HUB_ID and meta["library_name"] == "peft"
    assert f"dequantised from {GGUF_PRECISION}" in text

    policy, ptok = rebuilt_policy(tmp_path / "smol")
    ids = encode_prompt(ptok, CONV)
    from posttrain.models import cache_dir
    got = fresh_process(tmp_path, cache_dir(), adapter=out, ids=ids)
    torch.testing.assert_close(got["adapter"], logits(policy, ids))
