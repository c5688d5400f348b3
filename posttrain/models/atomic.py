"""Folders that appear whole or not at all, and one-time builds shared between processes.

A killed run must never leave a half-written model folder that a later run would trust, so every folder
is written under a temporary name in the same parent (same filesystem, so the final rename is atomic)
and renamed into place only when complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

try:  # POSIX only; on other systems two concurrent conversions merely waste time, the rename keeps them safe
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target`, on error it is removed.

    An existing `target` is moved aside first (a rename cannot replace a non-empty folder) and deleted
    only after the new one is in place, so at every moment `target` is either the old or the new folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: mkdtemp makes the folder private (0700), and it becomes the shared cache folder
    tmp = target.parent / f".{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}{TMP_MARK}old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, released when the process dies (so a killed run never blocks the next)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Return `target`, building it with `build(tmp_folder)` unless a complete copy exists.

    The lock makes a second process wait for the first and then reuse its result instead of converting
    again. Leftovers of killed builds are removed while holding the lock (nobody else can be writing them).
    """
    if is_complete(target):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target):
            return target
        for stale in target.parent.glob(f".{target.name}{TMP_MARK}*"):
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_folder(target) as tmp:
            build(tmp)
    return target
