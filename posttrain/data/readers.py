"""Read rows from files and turn them into validated records.

Formats: ``.jsonl``; ``.json`` (a JSON array, a single object, or JSON lines despite the name, as BFCL
ships); either of those gzipped (``.gz``); ``.parquet``; a ``datasets.save_to_disk`` folder (its
``.arrow`` files are read with pyarrow, no ``datasets`` import); a folder of such files.

Positions: JSON-lines rows are numbered by their 1-based file line; rows of every other format by their
0-based row index in the file (as ``dataset[i]`` would). Every error names file, position and field.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from posttrain.errors import DataError

log = logging.getLogger("posttrain.data")

FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".arrow")
KINDS = ("sft", "preference", "prompt", "tool")


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suf in FILE_SUFFIXES:
        if name.endswith(suf):
            return suf
    return None


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _check_object(row: Any, file: str, line: int) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object per row, got {type(row).__name__}", file=file, line=line)
    return row


def _iter_json_lines(lines, file: str, first_line: int = 1) -> Iterator[tuple[int, dict]]:
    for n, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=file, line=n) from None
        yield n, _check_object(row, file, n)


def _iter_json_file(path: Path) -> Iterator[tuple[int, dict]]:
    file = str(path)
    try:
        with _open_text(path) as f:
            if path.name.lower().endswith((".jsonl", ".jsonl.gz")):
                yield from _iter_json_lines(f, file)
                return
            text = f.read()
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as e:
        raise DataError(f"cannot read: {e}", file=file) from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=file, line=e.lineno) from None
        for i, row in enumerate(rows):
            yield i, _check_object(row, file, i)
        return
    # JSON lines in a .json file (BFCL), or one (possibly pretty-printed) object.
    lines = text.splitlines()
    first = next((i for i, t in enumerate(lines) if t.strip()), None)
    if first is None:
        return
    try:
        json.loads(lines[first])
        one_per_line = True
    except json.JSONDecodeError:
        one_per_line = False
    if one_per_line:
        yield from _iter_json_lines(lines, file)
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=file, line=e.lineno) from None
    yield 0, _check_object(obj, file, 0)


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet bytes
        raise DataError(f"cannot read parquet: {e}", file=str(path)) from None
    i = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield i, row
            i += 1


def _iter_arrow(path: Path) -> Iterator[tuple[int, dict]]:
    """One ``.arrow`` file: ``datasets`` writes the IPC stream format; the IPC file format is accepted too."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    try:
        with pa.memory_map(str(path)) as src:
            try:
                reader = ipc.open_stream(src)
                batches = iter(reader)
            except pa.ArrowInvalid:
                reader = ipc.open_file(src)
                batches = (reader.get_batch(k) for k in range(reader.num_record_batches))
            i = 0
            for batch in batches:
                for row in batch.to_pylist():
                    yield i, row
                    i += 1
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read arrow data: {e}", file=str(path)) from None


def _read_one(path: Path) -> Iterator[tuple[int, dict]]:
    suf = _kind_of(path)
    if suf in (".jsonl", ".json", ".jsonl.gz", ".json.gz"):
        return _iter_json_file(path)
    if suf == ".parquet":
        return _iter_parquet(path)
    if suf == ".arrow":
        return _iter_arrow(path)
    raise DataError(f"unsupported file type; expected one of {', '.join(FILE_SUFFIXES)} "
                    "or a folder of them / a datasets.save_to_disk folder", file=str(path))


def _files_of_folder(path: Path) -> list[Path]:
    if (path / "dataset_dict.json").exists():
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
        raise DataError(f"this is a DatasetDict folder with splits {splits}; pass one split's folder, "
                        f"e.g. {path / (splits[0] if splits else 'train')}", file=str(path))
    state = path / "state.json"
    if state.exists():  # datasets.save_to_disk: the order of shards is in state.json
        try:
            files = [path / d["filename"] for d in json.loads(state.read_text())["_data_files"]]
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise DataError(f"unreadable datasets state.json: {e}", file=str(state)) from None
        return files
    files = sorted(p for p in path.iterdir() if p.is_file() and _kind_of(p) is not None)
    if not files:
        raise DataError(f"no data files in folder (looked for {', '.join(FILE_SUFFIXES)})", file=str(path))
    return files


def iter_sourced_rows(path: str | Path) -> Iterator[tuple[str, int, dict]]:
    """Like :func:`iter_rows` but also yields the file each row comes from (folders hold many)."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or folder", file=str(path))
    files = _files_of_folder(p) if p.is_dir() else [p]
    for f in files:
        if not f.exists():
            raise DataError("no such file (listed in the folder's state.json)", file=str(f))
        for n, row in _read_one(f):
            yield str(f), n, row


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(position, row)`` for every row of a file or folder (see the module doc for positions)."""
    for _, n, row in iter_sourced_rows(path):
        yield n, row


class RecordList(list):
    """A list of records that also says what was skipped while loading (``on_invalid="skip"``).

    ``skipped`` holds the DataErrors of dropped rows; ``skip_reasons()`` counts them by reason.
    """

    def __init__(self, items=(), skipped: list[DataError] | None = None):
        super().__init__(items)
        self.skipped: list[DataError] = list(skipped or [])

    def skip_reasons(self) -> Counter:
        return Counter(_reason(e) for e in self.skipped)


def _reason(e: DataError) -> str:
    """The message of a DataError without its file:line prefix (same rows differ only there)."""
    text = str(e)
    if e.file is not None:
        head = f"{e.file}:{e.line}" if e.line is not None else str(e.file)
        for sep in (", ", ": "):
            if text.startswith(head + sep):
                return text[len(head) + len(sep):]
    return text


def load_records(path: str | Path, kind: str, fmt: str = "auto", limit: int | None = None, *,
                 on_invalid: str = "raise", **options) -> RecordList:
    """Read and validate every row of ``path`` into records of ``kind`` ("sft", "preference", "prompt").

    ``fmt`` names the converter (see ``converters.FORMATS``), or "auto" to pick one from the first row's
    fields. ``options`` go to the converter (e.g. ``answer_style="boxed"`` for gsm8k).
    ``on_invalid="raise"`` (default) stops at the first bad row with a DataError naming file, line and
    field; ``"skip"`` drops bad rows, logs a count by reason and keeps them in ``result.skipped``.
    ``limit`` keeps the first N valid records.
    """
    from posttrain.data.converters import FORMATS, detect_format

    if kind not in KINDS:
        raise DataError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}", field="kind")
    if on_invalid not in ("raise", "error", "skip"):  # "error" is the recipes' spelling of "raise"
        raise DataError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}", field="on_invalid")
    out = RecordList()
    convert: Callable | None = None
    for file, n, row in iter_sourced_rows(path):
        if limit is not None and len(out) >= limit:
            break
        if convert is None:
            name = detect_format(row, kind, file=file, line=n) if fmt == "auto" else fmt
            if (kind, name) not in FORMATS:
                known = sorted(f for k, f in FORMATS if k == kind)
                raise DataError(f"format {name!r} cannot make {kind} records; known: {', '.join(known)}",
                                file=file, field="fmt")
            convert = FORMATS[(kind, name)]
        try:
            out.append(convert(row, file=file, line=n, **options))
        except DataError as e:
            if on_invalid != "skip":
                raise
            out.skipped.append(e)
    if out.skipped:
        reasons = ", ".join(f"{c} × {r}" for r, c in out.skip_reasons().most_common())
        log.warning("%s: skipped %d invalid row(s), kept %d: %s", path, len(out.skipped), len(out), reasons)
    return out
