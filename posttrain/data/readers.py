"""Read rows from files and turn them into validated records.

Formats: ``.jsonl``; ``.json`` (a JSON array, a single object, or JSON lines despite the name, as BFCL
ships); either of those gzipped (``.gz``); ``.parquet``; ``.csv`` (with a header row); a
``datasets.save_to_disk`` folder of a Dataset, or of a DatasetDict (``split`` picks one, default
``train``) (its ``.arrow`` files are read with pyarrow, no ``datasets`` import); a folder of such files;
and a Hub dataset id, read only from the local ``datasets`` cache (offline: nothing is downloaded).

Positions: JSON-lines rows are numbered by their 1-based file line; rows of every other format by their
0-based row index in the file (as ``dataset[i]`` would). Every error names file, position and field.
A row that cannot be read (a broken JSON line) is an error like any invalid row: ``on_invalid="skip"``
skips and counts it.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from posttrain.errors import DataError

log = logging.getLogger("posttrain.data")

FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".arrow", ".csv")
KINDS = ("sft", "preference", "prompt", "tool", "unpaired")


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


def _check_object(row: Any, file: str, line: int) -> dict | DataError:
    if not isinstance(row, dict):
        return DataError(f"expected a JSON object per row, got {type(row).__name__}", file=file, line=line)
    return row


def _iter_json_lines(lines, file: str, first_line: int = 1) -> Iterator[tuple[int, dict | DataError]]:
    """A broken line is yielded as its DataError (the caller raises it or, with on_invalid skip, counts it
    and reads on)."""
    for n, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            yield n, DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=file, line=n)
            continue
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


def _iter_csv(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    """A CSV file with a header row (pyarrow.csv: types inferred per column, empty cells of a text column
    stay empty strings). A malformed row (wrong number of cells) is yielded as its DataError, after the
    good rows (pyarrow reports it while parsing), naming its line in the file."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    bad: list[DataError] = []

    def invalid(row) -> str:
        at = f"line {row.number}" if row.number is not None else "a row"
        bad.append(DataError(f"malformed CSV row at {at} of the file: expected {row.expected_columns} cells, "
                             f"got {row.actual_columns}: {row.text[:60]!r}", file=str(path)))
        return "skip"
    try:
        table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=False),  # lines are known
                              parse_options=pcsv.ParseOptions(invalid_row_handler=invalid))
    except (pa.ArrowInvalid, OSError) as e:
        if "Empty CSV file" in str(e):
            return
        raise DataError(f"cannot read CSV: {e}", file=str(path)) from None
    for i, row in enumerate(table.to_pylist()):
        yield i, row
    for k, e in enumerate(bad):
        yield table.num_rows + k, e


def _read_one(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    suf = _kind_of(path)
    if suf in (".jsonl", ".json", ".jsonl.gz", ".json.gz"):
        return _iter_json_file(path)
    if suf == ".parquet":
        return _iter_parquet(path)
    if suf == ".arrow":
        return _iter_arrow(path)
    if suf == ".csv":
        return _iter_csv(path)
    raise DataError(f"unsupported file type; expected one of {', '.join(FILE_SUFFIXES)} "
                    "or a folder of them / a datasets.save_to_disk folder", file=str(path))


def dataset_dict_splits(path: Path) -> list[str] | None:
    """The splits of a ``DatasetDict.save_to_disk`` folder, None for any other path."""
    marker = path / "dataset_dict.json"
    if not marker.is_file():
        return None
    try:
        splits = json.loads(marker.read_text())["splits"]
    except (KeyError, TypeError, json.JSONDecodeError):
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
    return [str(x) for x in splits]


def pick_split(splits: list[str], split: str | None, where: str) -> str:
    """``split`` (default ``train``) checked against the splits there are; DataError listing them."""
    name = split if split is not None else "train"
    if name not in splits:
        why = f"no split {name!r}" if split is not None else "no 'train' split; name one with split:"
        raise DataError(f"{why}; splits: {', '.join(splits) or 'none'}", file=where, field="split")
    return name


def _files_of_folder(path: Path, split: str | None = None) -> list[Path]:
    splits = dataset_dict_splits(path)
    if splits is not None:  # DatasetDict.save_to_disk: one Dataset folder per split
        return _files_of_folder(path / pick_split(splits, split, str(path)))
    if split is not None:
        raise DataError(f"split {split!r} given, but this is not a DatasetDict folder (no dataset_dict.json)"
                        "; drop split:", file=str(path), field="split")
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


# ---------------------------------------------------------------- the datasets cache (hub ids, offline)


def datasets_cache_dir() -> Path:
    """Where ``datasets`` keeps prepared data: $HF_DATASETS_CACHE, else $HF_HOME/datasets, else
    $XDG_CACHE_HOME/huggingface/datasets (``~/.cache`` when unset)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "datasets"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "huggingface" / "datasets"


def hub_files(hub_id: str, split: str | None = None, cache: Path | None = None) -> list[Path]:
    """The ``.arrow`` files of one split of a Hub dataset as ``datasets.load_dataset`` prepared them in the
    local cache (``<cache>/<org>___<name>/<config>/<version>/<hash>/<builder>-<split>[-NNNNN-of-NNNNN].arrow``
    beside a ``dataset_info.json``), newest preparation first. Offline by design (HF_DATASETS_OFFLINE=1
    semantics): nothing is downloaded; a dataset that is not cached is a DataError naming the id."""
    cache = datasets_cache_dir() if cache is None else cache
    where = f"hub:{hub_id}"
    if hub_id.count("/") > 1 or not hub_id.strip("/"):
        raise DataError(f"expected a Hub dataset id 'org/name' or 'name', got {hub_id!r}", file=where,
                        field="hub")
    root = cache / hub_id.replace("/", "___")
    infos = sorted(root.glob("*/*/*/dataset_info.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not infos:
        raise DataError(f"Hub dataset {hub_id!r} is not in the local datasets cache ({cache}); data is never "
                        f"downloaded here: run datasets.load_dataset({hub_id!r}) once where the Hub is "
                        "reachable (same HF_DATASETS_CACHE / HF_HOME), or save it and give its path",
                        file=where, field="hub")
    folder = infos[0].parent
    by_split: dict[str, list[Path]] = {}
    for f in sorted(folder.glob("*.arrow")):
        m = re.fullmatch(r".+?-(\w+?)(?:-\d{5}-of-\d{5})?\.arrow", f.name)
        if m:
            by_split.setdefault(m.group(1), []).append(f)
    try:  # the split names as datasets recorded them (a split name may hold '-')
        recorded = list(json.loads(infos[0].read_text()).get("splits") or {})
    except (json.JSONDecodeError, AttributeError):
        recorded = []
    for name in recorded:
        files = sorted(f for f in folder.glob("*.arrow")
                       if re.fullmatch(rf".+?-{re.escape(name)}(?:-\d{{5}}-of-\d{{5}})?\.arrow", f.name))
        if files:
            by_split[name] = files
    return by_split[pick_split(sorted(by_split), split, f"{where} ({folder})")]


def iter_sourced_rows(path: str | Path | None, *, split: str | None = None, hub: str | None = None,
                      bad_rows: str = "raise") -> Iterator[tuple[str, int, dict | DataError]]:
    """Like :func:`iter_rows` but also yields the file each row comes from (folders hold many).

    ``split`` picks one split of a DatasetDict folder or of a Hub dataset; ``hub`` reads a Hub dataset id
    from the local ``datasets`` cache instead of ``path``. With ``bad_rows="yield"`` an unreadable row (a
    broken JSON line, a row that is not an object) is yielded as its DataError instead of raised."""
    if hub is not None:
        files = hub_files(hub, split)
    else:
        p = Path(path)
        if not p.exists():
            raise DataError("no such file or folder", file=str(path))
        if p.is_dir():
            files = _files_of_folder(p, split)
        elif split is not None:
            raise DataError(f"split {split!r} given for a single file; drop split:", file=str(path),
                            field="split")
        else:
            files = [p]
    for f in files:
        if not f.exists():
            raise DataError("no such file (listed in the folder's state.json)", file=str(f))
        for n, row in _read_one(f):
            if isinstance(row, DataError) and bad_rows != "yield":
                raise row
            yield str(f), n, row


def iter_rows(path: str | Path, **kwargs) -> Iterator[tuple[int, dict]]:
    """Yield ``(position, row)`` for every row of a file or folder (see the module doc for positions)."""
    for _, n, row in iter_sourced_rows(path, **kwargs):
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


def invalid_rows(records) -> dict[str, int]:
    """{"invalid_rows": {reason: count}} for records loaded with rows skipped (``on_invalid: skip``), else {}:
    what a method adds to its data stats so the run's summary counts the skipped rows."""
    skipped = getattr(records, "skipped", None)
    return {"invalid_rows": dict(records.skip_reasons())} if skipped else {}


def _reason(e: DataError) -> str:
    """The message of a DataError without its file:line prefix (same rows differ only there)."""
    text = str(e)
    if e.file is not None:
        head = f"{e.file}:{e.line}" if e.line is not None else str(e.file)
        for sep in (", ", ": "):
            if text.startswith(head + sep):
                return text[len(head) + len(sep):]
    return text


def rename_columns(row: dict, columns: dict[str, str], file: str, line: int, checked: set) -> dict:
    """``row`` with its fields renamed by ``columns`` (file field -> expected field). The first row of each
    file is checked: a mapped column absent from it is a DataError naming the column and the file."""
    if file not in checked:
        missing = [k for k in columns if k not in row]
        if missing:
            raise DataError(f"the column map names column {missing[0]!r}, which the file does not have "
                            f"(its columns: {', '.join(sorted(map(str, row))) or 'none'})", file=file,
                            field=f"columns.{missing[0]}")
        checked.add(file)
    return {columns.get(k, k): v for k, v in row.items()}


def _too_many_invalid(out: RecordList, seen: int, max_fraction: float, where: str) -> DataError:
    first = "; ".join(str(e) for e in out.skipped[:3])
    bad = len(out.skipped)
    return DataError(f"{bad} of {seen} rows are invalid ({bad / seen:.1%}, more than "
                     f"max_invalid_fraction={max_fraction:g}); the first: {first}", file=where)


def load_records(path: str | Path | None, kind: str, fmt: str = "auto", limit: int | None = None, *,
                 on_invalid: str = "raise", columns: dict[str, str] | None = None, split: str | None = None,
                 hub: str | None = None, max_invalid_fraction: float = 0.05, **options) -> RecordList:
    """Read and validate every row of ``path`` (or of the cached Hub dataset ``hub``) into records of
    ``kind`` ("sft", "preference", "prompt", "tool", "unpaired").

    ``fmt`` names the converter (see ``converters.FORMATS``), or "auto" to pick one from the first row's
    fields. ``options`` go to the converter (e.g. ``answer_style="boxed"`` for gsm8k). ``columns`` renames
    fields (file field -> expected field) before conversion; ``split`` picks a DatasetDict's / Hub dataset's
    split.
    ``on_invalid="raise"`` (default) stops at the first bad row with a DataError naming file, line and
    field; ``"skip"`` drops bad rows (broken JSON lines included), logs a count by reason and keeps them in
    ``result.skipped``, but stops with the first three errors when more than ``max_invalid_fraction`` of the
    rows read are bad. ``limit`` keeps the first N valid records. No row at all is a DataError.
    """
    from posttrain.data.converters import FORMATS, detect_format

    if kind not in KINDS:
        raise DataError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}", field="kind")
    if on_invalid not in ("raise", "error", "skip"):  # "error" is the recipes' spelling of "raise"
        raise DataError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}", field="on_invalid")
    where = f"hub:{hub}" if hub is not None else str(path)
    out = RecordList()
    convert: Callable | None = None
    checked: set = set()
    seen = 0
    for file, n, row in iter_sourced_rows(path, split=split, hub=hub, bad_rows="yield"):
        if limit is not None and len(out) >= limit:
            break
        seen += 1
        try:
            if isinstance(row, DataError):
                raise row
            if columns:
                row = rename_columns(row, columns, file, n, checked)
            if convert is None:
                name = detect_format(row, kind, file=file, line=n) if fmt == "auto" else fmt
                if (kind, name) not in FORMATS:
                    known = sorted(f for k, f in FORMATS if k == kind)
                    raise DataError(f"format {name!r} cannot make {kind} records; known: {', '.join(known)}",
                                    file=file, field="format")
                convert = FORMATS[(kind, name)]
            out.append(convert(row, file=file, line=n, **options))
        except DataError as e:
            if on_invalid != "skip" or e.field in ("format", "split", "hub") or \
                    (e.field or "").startswith("columns."):
                raise
            out.skipped.append(e)
    if not seen:
        raise DataError("no rows: the data is empty", file=where)
    if out.skipped:
        if len(out.skipped) > max_invalid_fraction * seen:
            raise _too_many_invalid(out, seen, max_invalid_fraction, where)
        reasons = ", ".join(f"{c} × {r}" for r, c in out.skip_reasons().most_common())
        log.warning("%s: skipped %d invalid row(s), kept %d: %s", where, len(out.skipped), len(out), reasons)
    return out
