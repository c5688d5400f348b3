"""One-time builds shared between processes (the embedded model's conversion): a lock, and an atomic
folder."""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from posttrain.files import TMP_MARK, atomic_folder

try:  # POSIX only; on other systems two concurrent conversions merely waste time, the rename keeps them safe
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


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
