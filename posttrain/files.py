"""Files and folders that appear whole or not at all (a run folder's layout is posttrain/checkpoints.py).

Everything is written under a temporary name in the same folder (same filesystem, so the final rename is
atomic) and renamed into place only when complete: a killed run never leaves a half-written file that a
later run would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from posttrain.errors import DataError

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write (any way: text, safetensors, a PNG); on success it
    replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """`fsync`: also force it to disk before the rename (files that a resume trusts line by line)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike, rows, *, fsync: bool = False) -> None:
    """One JSON object a line, written atomically (a killed writer leaves the old file or none)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows), fsync=fsync)


def read_jsonl(path: str | os.PathLike, *, missing: Literal["error", "empty"] = "error") -> list[dict]:
    """The rows of a file written by :func:`write_jsonl` (blank lines skipped). A file that is not there is
    a DataError naming it (`missing="error"`: a stage's input that an earlier stage should have written) or
    no rows (`missing="empty"`: a shard or optional output not written yet)."""
    p = Path(path)
    if not p.is_file():
        if missing == "empty":
            return []
        raise DataError(f"{p} does not exist: the stage that writes it has not finished", file=str(p))
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def file_hash(path: str | os.PathLike) -> str:
    """blake2b of a file's bytes, 16 hex digits: the identity of a stage's input or output file."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

