#!/usr/bin/env bash
# The GPU performance cases (bench.gpuperf, conf/perf_gpu.yaml) on a machine that has only torch, transformers and
# triton: installs the wheels carried in wheels/ (no index, no dependencies resolved: the list is the run path's
# needs, built by `make wheels`-style commands in docs/performance.md), checks the imports, then runs every case.
# Writes results/perf/gpu.json and results/perf/gpu.md. Sized for ≤ 8 minutes on an H200.
#   scripts/gpu_perf.sh                 on the GPU machine
#   DRY_RUN=1 scripts/gpu_perf.sh       on CPU: the same plumbing, shapes and steps scaled down (no install)
#   PY=python3.12 scripts/gpu_perf.sh   another interpreter (default: python3, or .venv/bin/python for DRY_RUN)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  PY=${PY:-.venv/bin/python}
  # 2 layers of hidden 64 in fp32, 3 steps at batch 4: the launch, replica, bare loop and report paths, not the numbers
  exec "$PY" -m bench.gpuperf perf.dry_run=true perf.steps=3 \
    "perf.shrink=['model.dtype=float32','model.shape.hidden_size=64','model.shape.intermediate_size=128',\
'model.shape.num_hidden_layers=2','model.shape.num_attention_heads=4','model.shape.num_key_value_heads=2',\
'train.micro_batch_size=4','task.generator.n_train=64']" \
    hydra.run.dir=results/perf "$@"
fi
PY=${PY:-python3}
"$PY" -c 'import torch, transformers; assert torch.cuda.is_available(), "no GPU visible"; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))'
ls wheels/*.whl >/dev/null   # carried beside the tree; see docs/performance.md for how they are built
PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --no-index --no-deps --quiet --disable-pip-version-check wheels/*.whl
"$PY" -c 'import hydra, omegaconf, peft, deepspeed, accelerate, psutil, hjson, pydantic; print("deepspeed", deepspeed.__version__, "peft", peft.__version__)'
DS=$(dirname "$(command -v "$PY")")/deepspeed
[[ -x "$DS" ]] || { echo "the deepspeed launcher is not at $DS (bench.perf launches it beside the interpreter)" >&2; exit 1; }
export DS_BUILD_OPS=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 480 "$PY" -m bench.gpuperf hydra.run.dir=results/perf "$@"
