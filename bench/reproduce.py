"""``python -m bench.reproduce RUN_DIR [RUN_DIR …] [--batch-size N …] [--plain]`` (``make reproduce RUN=…``):
reload each run's saved weights in this process, regenerate, re-score and compare with what it reported
(bench.pipeline.reload).

One run directory prints its report; several (a whole sweep: ``make reproduce RUN="results/sweeps/ci/*/*/*/seed*"``)
print one object mapping each directory to its report, loading the libraries once instead of once a run.
Exit status 0 when every prediction and quality figure of every run is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench.pipeline.reload import check, load_run


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report(s) as JSON; exit 1 where anything differs."""
    parser = argparse.ArgumentParser(description="Check runs against what they saved.")
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="run_dir")
    parser.add_argument("--batch-size", type=int, action="append", dest="batch_sizes",
                        help="generation batch size (repeatable); default: 1 and the run's eval.batch_size")
    parser.add_argument("--plain", action="store_true", help="also decode one at a time with plain model.generate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from bench.models import kbit

    configs = {run_dir: load_run(run_dir)[0] for run_dir in args.run_dirs}   # each refuses an unsuccessful run
    kbit.leave_bitsandbytes_out(cfg.get("quantization") for cfg in configs.values())
    reports = {}
    for run_dir, cfg in configs.items():
        sizes = args.batch_sizes or [1, int(cfg.eval.batch_size)]
        reports[str(run_dir)] = check(run_dir, batch_sizes=sizes, plain=args.plain)
    single = len(args.run_dirs) == 1
    print(json.dumps(next(iter(reports.values())) if single else reports, indent=2))  # noqa: T201  (the output)
    return 0 if all(report["ok"] for report in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
