"""The locked environment: which lock this machine installs from, and how the installed packages differ from it.

``make setup`` installs ``requirements/cpu.lock`` (no GPU) or ``requirements/cuda.lock`` exactly; ``make lock``
re-resolves them on purpose (README "The locked environment"). Every run records the difference in
``meta_info.lock``; the regression gates and ``python -m bench.environment`` stop on it with one line that names each
package, both versions and the fix, so a library upgrade reads as drift instead of as a changed tiny base.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from bench.core.paths import LOCK_DIR

log = logging.getLogger(__name__)

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#\\]+)")
FIX = ("reinstall from the lock: `make setup`; or move on deliberately: `make lock`, then rebuild the baselines and "
       "the README's tables in the same change (README \"The locked environment\")")


def applies() -> Path:
    """The lock of the torch build installed (``PEFTBENCH_LOCK`` overrides): cpu.lock for a ``+cpu`` build (or no
    torch), cuda.lock otherwise. Read from package metadata, so checking costs no torch import."""
    if os.environ.get("PEFTBENCH_LOCK"):
        return Path(os.environ["PEFTBENCH_LOCK"])
    torch = installed("torch")
    return LOCK_DIR / ("cpu.lock" if torch is None or torch.endswith("+cpu") else "cuda.lock")


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Hydra_Core`` = ``hydra-core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> dict[str, str]:
    """``{package: version}`` of every ``name==version`` line of a pip-compile lock."""
    pins = {}
    for line in path.read_text().splitlines():
        found = PIN.match(line.strip())
        if found:
            pins[normalized(found.group(1))] = found.group(2)
    if not pins:
        raise ValueError(f"{path} pins no package (expected pip-compile's `name==version` lines)")
    return pins


def same(locked: str, installed: str | None) -> bool:
    """Equal releases (``2.13.0+cpu`` against ``2.13.0+cpu``; PEP 440, so ``1.0`` equals ``1.0.0``)."""
    if installed is None:
        return False
    try:
        return Version(locked) == Version(installed)
    except InvalidVersion:
        return locked == installed


def installed(name: str) -> str | None:
    """The installed version of a distribution (None when it is missing)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def drift(path: Path | None = None) -> dict[str, dict[str, str | None]]:
    """Every locked package whose installed version differs: ``{name: {"locked": v, "installed": v or None}}``."""
    path = path or applies()
    found = {}
    for name, version in sorted(pinned(path).items()):
        have = installed(name)
        if not same(version, have):
            found[name] = {"locked": version, "installed": have}
    return found


def describe(differences: dict[str, dict[str, str | None]], path: Path) -> str:
    """One line: what differs from which lock, and the fix (empty where nothing does)."""
    if not differences:
        return ""
    shown = [f"{name} {d['installed'] or '(missing)'} (locked {d['locked']})" for name, d in differences.items()]
    return f"installed packages differ from {path.name}: {', '.join(shown)}; {FIX}"


def digest(path: Path) -> str:
    """Short hash of the lock's pins (comments and the command line that made it left out)."""
    text = "\n".join(f"{k}=={v}" for k, v in sorted(pinned(path).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record(path: Path | None = None) -> dict[str, Any]:
    """What a run stores in ``meta_info.lock``: the lock it was measured against, its digest, and any drift."""
    path = path or applies()
    if not path.is_file():
        return {"file": path.name, "digest": None, "drift": None, "note": f"no lock at {path}"}
    return {"file": path.name, "digest": digest(path), "drift": drift(path)}


def check(path: Path | None = None) -> str:
    """The drift line for this machine's lock, logged as a warning ('' when the environment is the lock)."""
    path = path or applies()
    line = describe(drift(path), path)
    if line:
        log.warning("%s", line)
    return line
