"""Building a cache folder once: locked and atomic (posttrain/models/atomic.py)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from posttrain.models.atomic import build_once
from tests.helpers import no_temp_folders


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
