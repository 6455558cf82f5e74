"""Reported = reloaded, in every precision a GPU trains in: the reduced sweep in fp16 and bf16, then every run reloaded.

``python -m bench.gpucheck [--precisions fp16,bf16] [--out results/gpu-check] [-- run overrides…]`` (``make
gpu-check``) runs ``sweep=ci`` once per precision (concurrently: the cells are small beside a GPU, and the check
must fit ~8 minutes of a lent one), then ``bench.pipeline.reload``'s check on every run: the base in the run's
precision, the adapter through plain ``from_pretrained``, decoding at batch 1, at the eval batch and one record at a
time with plain ``generate``. One line per (precision, method); exit 1 when any run failed or differs from its own
report. First the environment is checked against the lock (``bench.core.environment``): a GPU image's own torch and
transformers are named as drift in the output rather than silently measured. On CPU, ``--precisions bf16`` dry-runs
it.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from bench.core import environment

log = logging.getLogger(__name__)


def sweep(precision: str, out: Path, extra: list[str]) -> subprocess.Popen:
    """The reduced sweep in one precision, in the background, its log beside its results."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.sweep", "sweep=ci", f"sweep_dir={out}", "report=false", "--",
           f"deepspeed={precision}", *extra]
    log.info("%s: %s", precision, " ".join(cmd))
    return subprocess.Popen(cmd, stdout=(out / "gpucheck.log").open("w"), stderr=subprocess.STDOUT)


def line(precision: str, run_dir: Path) -> tuple[bool, str]:
    """Whether a run reproduces, and its table row: method, status, primary metric, identical predictions."""
    from bench.pipeline import reload

    record = json.loads((run_dir / "result.json").read_text())
    method, status = run_dir.parent.name, record["run_info"]["status"]
    if status != "success":
        return False, f"| {precision} | {method} | {status} | | | {record['run_info'].get('error', '')[:80]} |"
    metric = record["task_info"]["primary_metric"]
    report = reload.check(run_dir, batch_sizes=[1, int(record["run_info"]["config"]["eval"]["batch_size"])],
                             plain=True)
    same = ", ".join(f"{name} {s['identical']}/{report['records']}" for name, s in report["setups"].items())
    return report["ok"], (f"| {precision} | {method} | {record['train_info']['precision']} | "
                          f"{metric} {record['eval_info'][metric]:.3f} | {'ok' if report['ok'] else 'DIFFERS'} | "
                          f"{same} |")


def main(argv: list[str] | None = None) -> int:
    """Sweeps, then one line per run; 0 when every run succeeded and reproduces."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", default="fp16,bf16", help="comma-separated DeepSpeed precisions")
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    drift = environment.check()
    start = time.perf_counter()
    precisions = args.precisions.split(",")
    jobs = {p: sweep(p, args.out / p, extra) for p in precisions}
    codes = {p: job.wait() for p, job in jobs.items()}
    log.info("sweeps done in %.0f s: %s", time.perf_counter() - start, codes)
    rows, ok = ["| precision | method | trained in | quality | reloaded | identical predictions |",
                "|---|---|---|---|---|---|"], all(c == 0 for c in codes.values())
    for precision in precisions:
        for run_dir in sorted(p.parent for p in (args.out / precision).glob("*/*/*/seed*/result.json")):
            good, row = line(precision, run_dir)
            ok &= good
            rows.append(row)
    sys.stdout.write("\n".join(rows) + "\n")
    sys.stdout.write(f"environment: {drift or 'the lock'}; {time.perf_counter() - start:.0f} s in all\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
