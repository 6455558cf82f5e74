"""``python -m bench.memory [gpus=N] [run overrides…]`` (``make memory``): the pre-flight memory estimate of a run,
nothing launched (bench.pipeline.estimate)."""

from __future__ import annotations

import logging
import sys

from hydra import compose, initialize_config_dir

from bench.core.paths import CONF_DIR
from bench.pipeline import headroom
from bench.pipeline.estimate import describe, preflight


def main() -> None:
    """``python -m bench.memory [gpus=N] [run overrides…]``: print the estimate of that run, launch nothing."""
    logging.basicConfig(level=logging.WARNING)
    gpus = [a for a in sys.argv[1:] if a.startswith("gpus=")]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[a for a in sys.argv[1:] if a not in gpus])
    world = int(gpus[-1].split("=", 1)[1]) if gpus else 1
    est = preflight(cfg, world)
    print(f"model={cfg.model.name} method={cfg.method.name}: {describe(est)}")  # noqa: T201
    found = headroom.figures(est)
    needed, free, fits = found["needed_bytes"], found["free_bytes"], found["fitting_micro_batch"]
    verdict = "fits" if needed <= free else "does not fit: bench.run refuses it (train.memory_check)"
    print(f"with what the allocator keeps on this machine {needed / headroom.GIB:.2f} GiB; "  # noqa: T201
          f"free now on {found['free_where']}: {free / headroom.GIB:.2f} GiB; this run {verdict}; the largest "
          f"micro-batch that fits at {est['length']} tokens: {fits or 'none'}")


if __name__ == "__main__":
    main()
