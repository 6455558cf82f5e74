#!/usr/bin/env bash
# Re-resolves requirements/cpu.lock and requirements/cuda.lock from pyproject.toml's ranges with pip-compile.
# Pins the ranges still allow are kept (a new dependency is added, nothing else moves); pass --upgrade to move
# every package to its newest release, or --upgrade-package NAME[==VERSION] for one. A change that moves the lock
# rebuilds the baselines and the README's measured tables in the same commit (README "The locked environment").
set -euo pipefail
compile=(.venv/bin/pip-compile pyproject.toml --extra dev --extra kbit --extra trackers --strip-extras --quiet
         --no-emit-index-url --no-emit-find-links "$@")
# CPU: torch's +cpu build, a local wheel here (TORCH_WHEELS: a folder or page that serves it elsewhere)
"${compile[@]}" --find-links "${TORCH_WHEELS:-/opt/wheels}" --output-file requirements/cpu.lock
# CUDA: PyPI's default torch build and the nvidia-* wheels it needs; this machine's pip settings left out
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
  "${compile[@]}" --output-file requirements/cuda.lock
