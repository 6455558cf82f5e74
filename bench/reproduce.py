"""``python -m bench.reproduce RUN_DIR [--batch-size N …] [--plain]`` (``make reproduce RUN=…``): reload a run's
saved weights in this process, regenerate, re-score and compare with what it reported (bench.pipeline.reload).

Exit status 0 when every prediction and quality figure is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench.pipeline.reload import check, load_run


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report as JSON; exit 1 where anything differs."""
    parser = argparse.ArgumentParser(description="Check a run against what it saved.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-size", type=int, action="append", dest="batch_sizes",
                        help="generation batch size (repeatable); default: 1 and the run's eval.batch_size")
    parser.add_argument("--plain", action="store_true", help="also decode one at a time with plain model.generate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sizes = args.batch_sizes or [1, int(load_run(args.run_dir)[0].eval.batch_size)]
    report = check(args.run_dir, batch_sizes=sizes, plain=args.plain)
    print(json.dumps(report, indent=2))  # noqa: T201  (the command's output)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
