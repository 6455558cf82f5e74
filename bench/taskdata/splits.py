"""A task's train, validation and test splits, from its files or its generator, the same way for every task.

``task.data`` (conf/task/*.yaml) says where records come from: a file per split (JSON list, JSON Lines, CSV or
TSV), or a split left null and carved from train by a seeded share (``data.holdout``); ``data.fields`` renames
a file's keys to the ones the task reads (``{output: answer}``: the file's ``answer`` is the reference). A task
with a ``generator`` makes every split with its module's ``generate`` instead, each split from its own seed.
The test split is scored once, at the end of a run; the validation split is for choices made before that.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import tasks
from bench.core.errors import DataError

Record = dict[str, str]
SPLITS = ("train", "validation", "test")
REQUIRED = ("train", "test")                 # validation may be empty: nothing in a run needs it
SEED_OFFSET = {"train": 0, "test": 1_000_003, "validation": 2_000_003}   # generated splits never share a record


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a file that cannot be read is a ``DataError`` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {err.start}); save it as UTF-8") from err
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err}); check the path and its permissions") from err


def _json_records(path: Path, text: str) -> list[Any]:
    """A JSON list or JSON Lines; errors name the file and line."""
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; "
                            "fix the file (a JSON list or one JSON object per line)") from err
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: malformed JSON Lines record at line {lineno}, column {err.colno}: "
                                f"{err.msg}; fix that line (one JSON object per line)") from err
    return records


def read_file(path: str | Path, *, fields: dict[str, str], field: str) -> list[Record]:
    """Every record of a data file with its keys renamed by ``fields``; ``field`` is the config key of the path."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{field}={path} is a directory, not a file; point it at a JSON, JSON Lines or CSV file")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; set {field} to an existing file")
    text = _read_text(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        raw: Any = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raw = _json_records(path, text)
    if not isinstance(raw, list):
        raise DataError(f"{path}: the JSON is a {type(raw).__name__}; expected a list of records (or JSON Lines)")
    return [_renamed(r, fields, where=f"{path} record {i}") for i, r in enumerate(raw)]


def _renamed(raw: Any, fields: dict[str, str], *, where: str) -> Record:
    """One record as strings under the task's names; a record without a reference answer is refused."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a {type(raw).__name__}, expected an object of named fields")
    missing = [source for source in fields.values() if source not in raw]
    if missing:
        raise DataError(f"{where}: no field {missing} (keys: {sorted(raw)}); fix task.data.fields={fields}")
    record = {str(k): "" if v is None else str(v) for k, v in raw.items()}
    record.update({name: record[source] for name, source in fields.items()})
    if "output" not in record:
        raise DataError(f"{where}: no 'output' field, the reference answer (keys: {sorted(raw)}); name the file's "
                        "answer field with task.data.fields={output: <its key>}")
    return record


def _generated(task_cfg: Any, split: str) -> list[Record]:
    """The generator's records for ``split``: its own size and seed."""
    gen = task_cfg.generator
    n = int(gen.get(f"n_{split}") or 0)
    if n <= 0 and split in REQUIRED:
        raise DataError(f"task.generator.n_{split}={n} gives an empty {split} split; set it > 0")
    if n <= 0:
        return []
    return tasks.module(task_cfg).generate(task_cfg, n=n, seed=int(gen.seed) + SEED_OFFSET[split])


def _holdout(task_cfg: Any) -> dict[str, list[Record]]:
    """The train file's records dealt into train and the held-out splits that have no file of their own."""
    data = task_cfg.data
    fields = dict(data.get("fields") or {})
    records = read_file(data.train, fields=fields, field="task.data.train")
    shares = {s: float((data.get("holdout") or {}).get(s) or 0.0) for s in ("validation", "test") if not data.get(s)}
    order = list(range(len(records)))
    random.Random(int((data.get("holdout") or {}).get("seed") or 0)).shuffle(order)
    out, start = {}, 0
    for split, share in shares.items():
        count = int(round(share * len(records)))
        out[split] = [records[i] for i in sorted(order[start:start + count])]
        start += count
    out["train"] = [records[i] for i in sorted(order[start:])]
    return out


def load(task_cfg: Any, split: str) -> list[Record]:
    """The records of ``split`` (train, validation or test), capped by ``task.data.max_records``."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    data = task_cfg.data
    if task_cfg.get("generator"):
        records = _generated(task_cfg, split)
    elif split != "train" and data.get(split):
        records = read_file(data[split], fields=dict(data.get("fields") or {}), field=f"task.data.{split}")
    else:
        records = _holdout(task_cfg).get(split, [])
    limit = (data.get("max_records") or {}).get(split)
    records = records[: int(limit)] if limit else records
    if not records and split in REQUIRED:
        if not task_cfg.get("generator") and data.get(split):
            raise DataError(f"task.data.{split}={data[split]} holds no records; the {split} split must not be empty")
        raise DataError(f"task {task_cfg.name}: the {split} split is empty; give task.data.{split} a file or hold "
                        f"out a share of train: task.data.holdout.{split}=0.1")
    return records

