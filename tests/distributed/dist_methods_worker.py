"""Every method for a few steps on the tiny model, for tests/distributed/test_methods.py.

`torchrun --nproc_per_node N tests/distributed/dist_methods_worker.py OUT_DIR CASE... [key=value ...]` (or
plain `python` for one process) runs each case's recipe into OUT_DIR/<case>/ with the same GLOBAL batch
whatever N: the micro-batch stays 2 and grad_accum is 4 / N. Arguments with `=` override every case's
recipe (benchmarks/gpu_check.sh: another model, bf16). Rank 0 writes OUT_DIR/world.json with the world it saw
and OUT_DIR/<case>.done after each case (OUT_DIR/<case>.interrupted: the checkpoint a resume began from).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

WORDS = ["cats", "dogs", "rain", "tea", "snow", "maps", "bees", "owls"]
TINY = {"name": "tiny-llama"}
LORA = {"name": "tiny-llama", "lora": {"r": 4, "alpha": 8}}
ARITH = {"synthetic": {"task": "arithmetic", "n": 24, "seed": 1, "options": {"flip_rate": 0.0}}}
TOOLS = [{"name": "get_weather", "description": "Weather now.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def train(steps: int = 2, **kw) -> dict:
    return {"lr": 1e-3, "micro_batch_size": 2, "max_steps": steps, "warmup_steps": 0, "schedule": "constant",
            "log_every": 1, "save_every": steps, **kw}


def prompts(n: int = 8) -> dict:
    return {"path": "prompts.jsonl", "limit": n}


SAMPLING = {"num_candidates": 4, "temperature": 1.0, "top_k": 0, "max_new_tokens": 8, "batch_size": 8}
CASES: dict[str, dict] = {
    "sft": dict(method={"name": "sft"}, model=TINY, data={"train": ARITH, "max_length": 64}),
    "sft_lora_eval": dict(method={"name": "sft"}, model=LORA,
                          data={"train": ARITH, "eval": {"synthetic": {"task": "arithmetic", "n": 6,
                                                                       "seed": 2}},
                                "max_length": 64}, train_extra={"eval_every": 2}),
    "dpo_precomputed": dict(method={"name": "dpo"}, model=LORA, data={"train": ARITH, "max_length": 64}),
    "dpo_live": dict(method={"name": "dpo", "reference_mode": "live"}, model=TINY,
                     data={"train": ARITH, "max_length": 64}),
    "rdpo_concatenated": dict(method={"name": "rdpo", "eps": 0.2, "pair_forward": "concatenated"}, model=LORA,
                              data={"train": ARITH, "max_length": 64}),
    "rpo_live": dict(method={"name": "rpo", "reference_mode": "live"}, model=LORA,
                     data={"train": ARITH, "max_length": 64}),
    "reward_model": dict(method={"name": "reward_model"}, model=LORA, data={"train": ARITH,
                                                                            "max_length": 64}),
    "ift": dict(method={"name": "ift", "lam": 0.2}, model=LORA, data={"train": ARITH, "max_length": 64}),
    "tool_sft": dict(method={"name": "tool_sft", "mae": True, "pkt": True}, model=LORA,
                     data={"train": {"path": "tools.jsonl"}, "max_length": 256}),
    "rso": dict(method={"name": "rso", "loss": "hinge_norm", "sampling": SAMPLING,
                        "reward": {"name": "tests.rso_helpers:LetterReward"}},
                model=LORA, data={"train": prompts(), "max_length": 64}),
    "inpo": dict(method={"name": "inpo", "prompts_per_iteration": 6, "sampling": SAMPLING,
                         "oracle": {"kind": "pairwise", "name": "tests.rso_helpers:LetterPreference"}},
                 model=LORA, data={"train": prompts(), "max_length": 64}),
    "ppo": dict(method={"name": "ppo", "rollout_batch": 8, "ppo_epochs": 1, "max_new_tokens": 6,
                        "reward": {"name": "tests.rso_helpers:VowelReward"}},
                model=LORA, data={"train": prompts(), "max_length": 64}, steps=2),
    # under N > 1 processes killed after its first step (inside the first PPO iteration) and resumed;
    # compared with the uninterrupted one-process run
    "ppo_resumed": dict(method={"name": "ppo", "rollout_batch": 8, "ppo_epochs": 2, "max_new_tokens": 6,
                                "reward": {"name": "tests.rso_helpers:VowelReward"}},
                        model=LORA, data={"train": prompts(), "max_length": 64}, steps=3,
                        train_extra={"save_every": 1}, interrupt_after=1),
    "dapo_step": dict(method={"name": "dapo_step", "beta": 0.05, "min_spread": 0.0, "keep": 2,
                              "completions": 3,
                              "sampling": {**SAMPLING, "batch_size": 16},
                              "reward": {"name": "tests.rso_helpers:EvenLetterReward"},
                              "critic": {"lr": 1e-3, "max_steps": 2, "micro_batch_size": 2, "heldout": 0.25}},
                      model=LORA, data={"train": prompts(4), "max_length": 96}),
}


def write_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt": f"Tell me about {w}.", "answer": "1"}) + "\n" for w in WORDS))
    calls = [json.dumps([{"name": "get_weather", "arguments": {"city": c}}]) for c in ("Paris", "Oslo",
                                                                                       "Rome")]
    convs = [{"tools": TOOLS, "messages": [{"role": "user", "content": f"Weather in {c}?"},
                                           {"role": "assistant", "content": call},
                                           {"role": "tool", "content": json.dumps({"temp_c": 20 + i})},
                                           {"role": "assistant", "content": f"It is {20 + i} degrees."}]}
             for i, (c, call) in enumerate(zip(("Paris", "Oslo", "Rome"), calls))]
    (folder / "tools.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs * 2))


def recipe_file(folder: Path, case: str, world: int) -> Path:
    spec = CASES[case]
    method = dict(spec["method"])
    if "critic" in method:  # step-DAPO's critic is an engine run with its own batch settings
        method["critic"] = {**method["critic"], "grad_accum": 4 // world}
    doc = {"name": case, "seed": 0, "method": method, "model": spec["model"], "data": spec["data"],
           "train": train(spec.get("steps", 2), grad_accum=4 // world, **spec.get("train_extra", {}))}
    path = folder / f"{case}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Interrupted(Exception):
    pass


def interrupted(run, steps: int) -> None:
    """run() with every engine stopping after `steps` steps, as a kill would (checkpoints kept)."""
    from posttrain.engine import Engine
    train = Engine.train

    def stopping(self, **kw):
        train(self, **{**kw, "stop_after": steps})
        raise Interrupted
    Engine.train = stopping
    try:
        run()
    except Interrupted:
        pass
    finally:
        Engine.train = train


def main(out: Path, cases: list[str], overrides: list[str]) -> None:
    import os

    from posttrain import distributed
    from posttrain.checkpoints import latest_checkpoint
    from posttrain.config import load_recipe
    from posttrain.methods.dapo_step import data as dapo_data
    from posttrain.runner import run_recipe
    distributed.init()
    world = distributed.world()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)
    # the tiny random model rarely samples a newline: every third token id counts as one, so DAPO's
    # responses have steps (tests/integration/methods/dapo_step/test_method.py does the same)
    dapo_data.newline_tokens = lambda tok: frozenset(range(0, len(tok), 3))
    if distributed.is_main():
        write_data(out)
    distributed.barrier()
    for case in cases:
        path = recipe_file(out, case, world) if distributed.is_main() else out / f"{case}.yaml"
        distributed.barrier()
        recipe = load_recipe(path, [f"output_dir={out / 'runs'}", *overrides])
        if world > 1 and CASES[case].get("interrupt_after"):
            interrupted(lambda: run_recipe(recipe, show_progress=False), CASES[case]["interrupt_after"])
            if distributed.is_main():  # what the resume starts from: the test checks it
                (out / f"{case}.interrupted").write_text(latest_checkpoint(recipe.run_dir).name)
        run_recipe(recipe, show_progress=False)
        if distributed.is_main():
            (out / f"{case}.done").write_text("")
    if distributed.is_main():
        (out / "world.json").write_text(json.dumps({"world": world}))


if __name__ == "__main__":
    args = sys.argv[2:]
    main(Path(sys.argv[1]).resolve(), [a for a in args if "=" not in a], [a for a in args if "=" in a])
