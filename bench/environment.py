"""``python -m bench.environment [--lock PATH]`` (``make check-env``): are the installed packages the lock's?

One line either way; exit 1 naming each package that differs, both versions and the fix (bench.core.environment).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.core.environment import applies, describe, drift, pinned


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.environment [--lock PATH]``: exit 1 and one line where the installed packages differ."""
    parser = argparse.ArgumentParser(description="Do the installed packages equal the lock?")
    parser.add_argument("--lock", type=Path, default=None, help="the lock to check (default: this machine's)")
    args = parser.parse_args(argv)
    path = args.lock or applies()
    line = describe(drift(path), path)
    sys.stdout.write((line or f"the installed packages are {path.name}'s ({len(pinned(path))} pinned)") + "\n")
    return 1 if line else 0


if __name__ == "__main__":
    sys.exit(main())
