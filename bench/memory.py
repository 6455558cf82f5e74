"""``python -m bench.memory [gpus=N] [run overrides…]`` (``make memory``): the pre-flight memory estimate of a run,
nothing launched (bench.pipeline.estimate)."""

from __future__ import annotations

import logging
import sys

from hydra import compose, initialize_config_dir

from bench.core.paths import CONF_DIR
from bench.pipeline.estimate import describe, preflight


def main() -> None:
    """``python -m bench.memory [gpus=N] [run overrides…]``: print the estimate of that run, launch nothing."""
    logging.basicConfig(level=logging.WARNING)
    gpus = [a for a in sys.argv[1:] if a.startswith("gpus=")]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[a for a in sys.argv[1:] if a not in gpus])
    world = int(gpus[-1].split("=", 1)[1]) if gpus else 1
    print(f"model={cfg.model.name} method={cfg.method.name}: {describe(preflight(cfg, world))}")  # noqa: T201


if __name__ == "__main__":
    main()
