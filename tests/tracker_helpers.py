"""Readers of what the trackers of train.report_to (posttrain/trackers.py) wrote under a run folder, for the
tests to read a run back from the trackers' own files."""
from __future__ import annotations

import json
import struct
from pathlib import Path


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(path: Path):
    """The records of a .wandb transaction log: a 7-byte header, then LevelDB-style chunks (crc32 4, length 2,
    type 1: full / first / middle / last) in blocks of 32 KiB."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:  # block padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_history(run: Path) -> tuple[dict[int, dict], dict]:
    (path,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = {}, {}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history[row["_step"]] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "run":
            config = {u.key: json.loads(u.value_json) for u in r.run.config.update if u.key != "_wandb"}
    return history, config


def mlflow_run(run: Path):
    """(the MLflow client on the run folder's file store, the one MLflow run in it)."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("posttrain").experiment_id])
    return client, found
