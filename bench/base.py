"""``python -m bench.base model=… task=…`` (``make base``): build, or find in the cache, the tiny base of a model
and task (bench.pipeline.tinybase)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

import bench
from bench.core.errors import InputError
from bench.pipeline.tinybase import ensure

log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Build (or find) the base of the configured tiny model and task."""
    try:
        info = ensure(cfg)
    except InputError as err:
        log.error("invalid: %s", err)
        sys.exit(2)
    log.info("base %s at %s (source %s %.3f, built in %.0f s)", info["key"], info["path"], info["source_metric"],
             info["source_score"], info["build_time_s"])
    bench.exit_now(0)   # the sweep waits on this process before its first cell: no teardown of torch


if __name__ == "__main__":
    main()
