"""A scalar head on a language model's trunk: Bradley-Terry reward models and PPO value heads.

`ScalarHeadModel(lm)` keeps the causal LM (plain or LoRA) and adds `head = Linear(hidden, 1)` on the
final hidden states (after the trunk's last norm). `values(...)` gives one scalar per position;
`last_values(...)` the scalar at each row's last real token (right padding), the reward of a sequence.
The LM head is never run for a reward model; `logits_and_values(...)` runs it (only where
`logits_to_keep` says) for PPO, which needs both from one trunk pass.

Each of these is `forward(..., output=...)`: an objective calls `model(..., output="last_values")`,
never the named method, because the engine may have wrapped the model in DistributedDataParallel, which
only sees (and synchronises the gradients of) passes made through its own forward.

Saved as the LM's own files (adapter or full weights, via save_pretrained) plus `scalar_head.safetensors`
and `scalar_head.json` (base model name, dtype, LoRA settings), so `load_scalar_head_model(path)`
rebuilds it from the folder alone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

from posttrain.checkpoints import latest_checkpoint
from posttrain.distributed import place_like
from posttrain.errors import ModelError
from posttrain.models.lora import is_lora, unwrap

HEAD_WEIGHTS = "scalar_head.safetensors"
HEAD_CONFIG = "scalar_head.json"
OUTPUTS = ("values", "last_values", "logits_and_values")


class ScalarHeadModel(torch.nn.Module):
    def __init__(self, lm, *, info: dict | None = None, init_std: float | None = None, seed: int = 0,
                 logits: bool = False):
        """`logits=False` (a reward model, a critic): forward never runs the LM head, so an untied one is
        frozen; trainable, it would get no gradient, and DDP (without find_unused_parameters) refuses a
        step in which a trainable parameter got none. PPO's policy passes True."""
        super().__init__()
        self.lm = lm
        self.config = unwrap(lm).config
        out = self._causal_lm().get_output_embeddings()
        if (not logits and out is not None
                and out.weight is not self._causal_lm().get_input_embeddings().weight):
            out.requires_grad_(False)
        hidden = self.config.hidden_size
        dtype = next(lm.parameters()).dtype
        self.head = torch.nn.Linear(hidden, 1, dtype=dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            std = init_std if init_std is not None else 1.0 / (hidden + 1) ** 0.5
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * std)
            self.head.bias.zero_()
        self.info = dict(info or {})

    def _causal_lm(self):
        """The transformers CausalLM inside (LoRA layers are injected in place, so they still apply)."""
        lm = unwrap(self.lm)
        return lm.get_base_model() if is_lora(lm) else lm

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        trunk = self._causal_lm().get_decoder()
        return trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state

    def values(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        """[B, T] float32: the head at every position."""
        return self(input_ids, attention_mask, position_ids, output="values")

    def last_values(self, input_ids, attention_mask) -> torch.Tensor:
        """[B] float32: the head at each row's last real token (rows right-padded)."""
        return self(input_ids, attention_mask, output="last_values")

    def logits_and_values(self, input_ids, attention_mask=None, logits_to_keep=None):
        """(logits at the kept positions, [B, T] values) from one trunk pass."""
        return self(input_ids, attention_mask, output="logits_and_values", logits_to_keep=logits_to_keep)

    def forward(self, input_ids, attention_mask=None, position_ids=None, *,
                output: Literal["values", "last_values", "logits_and_values"] = "values",
                logits_to_keep=None):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        h = self.hidden_states(input_ids, attention_mask, position_ids)
        if output == "values":
            return self.head(h).squeeze(-1).float()
        if output == "last_values":
            if attention_mask is None:
                raise ValueError("last_values needs the attention mask (rows are right-padded)")
            last = attention_mask.long().sum(-1) - 1
            if (last < 0).any():
                raise ValueError("a row has no tokens")
            h_last = h[torch.arange(h.shape[0], device=h.device), last]
            return self.head(h_last).squeeze(-1).float()
        kept = h[logits_to_keep] if logits_to_keep is not None else h
        logits = self._causal_lm().get_output_embeddings()(kept)
        return logits, self.head(h).squeeze(-1).float()

    # -- persistence (the engine's checkpoints call save_pretrained / load_weights_) --------------
    def save_pretrained(self, directory, state_dict: dict | None = None) -> None:
        """`state_dict`: this model's whole state (names as in `self.state_dict()`), e.g. gathered from
        shards."""
        directory = Path(directory)
        if state_dict is None:
            unwrap(self.lm).save_pretrained(directory)
            head = self.head.state_dict()
        else:
            unwrap(self.lm).save_pretrained(directory, state_dict={
                k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")})
            head = {k[len("head."):]: v for k, v in state_dict.items() if k.startswith("head.")}
        save_file({k: v.detach().contiguous() for k, v in head.items()}, str(directory / HEAD_WEIGHTS))
        (directory / HEAD_CONFIG).write_text(json.dumps({**self.info, "hidden_size": self.config.hidden_size},
                                                        indent=1))

    def load_weights_(self, directory) -> None:
        from posttrain.models.io import load_weights_

        directory = Path(directory)
        if not (directory / HEAD_WEIGHTS).is_file():
            raise ModelError(f"{directory} has no {HEAD_WEIGHTS}: not a scalar-head (reward/value) "
                             f"checkpoint")
        state = load_file(str(directory / HEAD_WEIGHTS))
        for k, v in self.head.state_dict().items():
            if k not in state or state[k].shape != v.shape:
                raise ModelError(f"{directory / HEAD_WEIGHTS}: '{k}' missing or of another shape than "
                                 f"{tuple(v.shape)}")
        load_weights_(self.lm, directory)
        with torch.no_grad():  # under FSDP the head's parameters are shards
            self.load_state_dict(place_like({f"head.{k}": state[k] for k in self.head.state_dict()},
                                            self.state_dict()), strict=False)


def head_info(model_settings) -> dict:
    """What `load_scalar_head_model` needs to rebuild the LM from a recipe's `model` section."""
    m, lora = model_settings, model_settings.lora
    return {"base_model": m.name, "dtype": m.dtype, "seed": m.seed,
            "lora": None if lora is None else {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
                                               "targets": lora.targets, "rslora": lora.rslora}}


def find_scalar_head_folder(path) -> Path:
    """`path` itself, a run folder (its latest checkpoint's model/), or a checkpoint folder."""
    path = Path(path)
    if (path / HEAD_CONFIG).is_file():
        return path
    if (path / "model" / HEAD_CONFIG).is_file():
        return path / "model"
    ckpt = latest_checkpoint(path, holding=HEAD_CONFIG)
    if ckpt is not None:
        return ckpt / "model"
    raise ModelError(f"no reward/value model at {path}: expected {HEAD_CONFIG} there, in model/, or in "
                     f"checkpoints/step-*/model/")


def load_scalar_head_model(path, *, dtype: str | None = None) -> tuple[ScalarHeadModel, object]:
    """(model in eval mode, tokenizer) from a folder written by ScalarHeadModel.save_pretrained."""
    from posttrain.models import apply_lora, load_model

    folder = find_scalar_head_folder(path)
    info = json.loads((folder / HEAD_CONFIG).read_text())
    if "base_model" not in info:
        raise ModelError(f"{folder / HEAD_CONFIG} does not name its base_model")
    lm, tok = load_model(info["base_model"], dtype=dtype or info.get("dtype", "float32"),
                         seed=info.get("seed", 0))
    if info.get("lora"):
        lm = apply_lora(lm, **info["lora"])
    model = ScalarHeadModel(lm, info=info)
    model.load_weights_(folder)
    return model.eval().requires_grad_(False), tok
