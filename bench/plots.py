"""``python -m bench.plots SWEEP_DIR``: a sweep's figures only (bench.analysis.plots)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.analysis.plots import write_figures
from bench.core.metrics import load_runs

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.plots SWEEP_DIR``: figures only."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Figures of a sweep's result JSONs.")
    parser.add_argument("sweep_dir", type=Path, help="folder holding <model>/<task>/<method>/seed<k>/result.json")
    args = parser.parse_args(argv)
    pngs = write_figures(load_runs(args.sweep_dir), args.sweep_dir / "report" / "figures")
    log.info("figures: %s", ", ".join(map(str, pngs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
