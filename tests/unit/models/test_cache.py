"""The model cache folder follows POSTTRAIN_CACHE."""
from __future__ import annotations

from pathlib import Path

from posttrain.models import cache_dir


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("POSTTRAIN_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "posttrain"
