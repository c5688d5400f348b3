"""Where converted models and tokenizer folders live between runs."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "POSTTRAIN_CACHE"


def cache_dir() -> Path:
    """`$POSTTRAIN_CACHE` if set, else `~/.cache/posttrain`. Not created here: writers create what they
    need."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "posttrain"
