"""``python -m bench.report SWEEP_DIR [--no-figures]`` (``make report``): the tables and figures of a sweep
(bench.analysis.tables) and its one-page report.html (bench.analysis.html_report), built from its result JSONs only."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.analysis.tables import write_report

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """The ``SWEEP_DIR`` argument shared by the report and plots CLIs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("sweep_dir", type=Path, help="folder holding <model>/<task>/<method>/seed<k>/result.json")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report SWEEP_DIR``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv, "Tables and figures of a sweep's result JSONs.")
    try:
        written = write_report(args.sweep_dir, figures=not args.no_figures)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    log.info("%d runs (%d not successful)\ntables: %s\nfigures: %s\npage: %s (%.1f MB; opens offline)",
             written["runs"], written["failed"],
             ", ".join(str(written[k]) for k in ("table.md", "table.csv", "table.tex")),
             args.sweep_dir / "report" / "figures" if written["figures"] else "(skipped)", written["report.html"],
             written["report.html"].stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
