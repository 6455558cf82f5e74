"""Result JSON I/O: atomic writes, and the provenance every run records."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.core.paths import ROOT

PACKAGES = ("torch", "transformers", "peft", "deepspeed", "hydra-core", "tokenizers", "safetensors")


def write_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic, human-readable JSON."""
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Atomic JSON Lines."""
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested (resolved) config as dotted keys (``train.steps``); lists and empty sections kept whole."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_hash(config: dict[str, Any], *, world_size: int | None = None) -> str:
    """Stable hash of what a run computes: the resolved config (seed, output location, also where derived, and the
    live loggers, which only mirror the run, left out) and the number of data-parallel ranks, which the config does
    not hold but which multiplies the data every ``train.steps`` sees. ``world_size`` defaults to the launch's
    ``WORLD_SIZE`` (1 outside a launch)."""
    relevant = {k: v for k, v in config.items() if k not in ("seed", "out_dir", "logger")}
    ranks = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    text = json.dumps({"config": relevant, "world_size": ranks}, sort_keys=True, default=str)
    if config.get("out_dir"):
        text = text.replace(json.dumps(str(config["out_dir"]))[1:-1], "<out_dir>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None outside git)."""
    root = ROOT
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def versions() -> dict[str, str | None]:
    """Versions of the packages whose upgrade can change a result."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
