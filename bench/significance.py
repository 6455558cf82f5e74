"""``python -m bench.significance SWEEP_DIR``: which methods are significantly worse than the best, on the same test
records; written to the sweep's significance.json (bench.analysis.significance)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from bench.analysis.significance import write

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write(Path(sys.argv[1]))
