# peftbench front door: every target is one line that calls the package.
PY      ?= .venv/bin/python
MODEL   ?= tiny_llama
TASK    ?= triples_synth
METHOD  ?= lora
GPUS    ?= 1
HOSTFILE ?=
ARGS    ?=
METHODS ?=
SEEDS   ?=
SWEEP_DIR ?=
SWEEP   ?= results/sweeps/default
PRESET  ?=
NAME    ?= embedded
BASELINE ?= results/baselines/embedded.json
# make test's pytest-xdist workers, each handed whole test files (a module's shared runs are made once); each worker
# and what it starts get cores/workers torch threads (tests/conftest.py)
TEST_WORKERS ?= 2

RUN     ?=

.PHONY: help setup setup-browser lock check-env gpu-check run memory base sweep report reproduce perf perf-gpu test test-models test-fast clean baseline compare

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## .venv with everything (CPU torch when no GPU is present)
	bash scripts/setup.sh

setup-browser:  ## Debian's chromium, which tests/test_browser.py drives through Playwright (root; Playwright downloads no browser)
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y chromium; else echo "make setup-browser installs the Debian package chromium and needs root: sudo make setup-browser (or sudo apt-get install -y chromium; elsewhere point PEFTBENCH_CHROMIUM at a chromium binary)" >&2; exit 1; fi

lock:  ## re-resolve requirements/{cpu,cuda}.lock on purpose (ARGS=--upgrade: newest releases), then rebuild baselines
	bash scripts/lock.sh $(ARGS)

check-env:  ## do the installed packages equal the lock? (one line; exit 1 naming each difference and the fix)
	$(PY) -m bench.environment

gpu-check:  ## on a GPU (<= 8 min): sweep=ci in fp16 and bf16, every run reloaded and regenerated, one line per method
	$(PY) -m bench.gpucheck $(if $(PRECISIONS),--precisions $(PRECISIONS)) -- $(ARGS)

run:  ## one run through deepspeed (a run killed by a signal is recorded failed): make run METHOD=lora MODEL=tiny_llama TASK=triples_synth ARGS="train.steps=100" [GPUS=8 HOSTFILE=hosts]
	$(PY) -m bench.launch --num_gpus $(GPUS) $(if $(HOSTFILE),--hostfile $(HOSTFILE)) -- model=$(MODEL) method=$(METHOD) task=$(TASK) $(ARGS)

sweep:  ## the method grid (default: all nine methods on the embedded tiny model), then the report; PRESET=tuned: each at its best LR; PRESET=t5: all nine on the encoder–decoder tiny_t5; PRESET=quant|quant_smollm2: lora on 8-bit and 4-bit bases (a preset picks its model and task unless MODEL or TASK is given)
	$(PY) -m bench.sweep $(if $(PRESET),sweep=$(PRESET)) $(if $(or $(filter-out file default,$(origin MODEL)),$(if $(PRESET),,x)),models=$(MODEL)) $(if $(or $(filter-out file default,$(origin TASK)),$(if $(PRESET),,x)),tasks=$(TASK)) gpus=$(GPUS) $(if $(HOSTFILE),hostfile=$(HOSTFILE)) $(if $(METHODS),methods=$(METHODS)) $(if $(SEEDS),seeds=$(SEEDS)) $(if $(SWEEP_DIR),sweep_dir=$(SWEEP_DIR)) -- $(ARGS)

report:  ## tables and figures of a sweep: make report SWEEP=results/sweeps/default
	$(PY) -m bench.report $(SWEEP)

reproduce:  ## reload a run's saved weights in a fresh process, regenerate, compare: make reproduce RUN=results/sweeps/default/…/seed0
	$(PY) -m bench.reproduce $(RUN) --plain

baseline:  ## summarize a sweep into a committed baseline: make baseline SWEEP=results/sweeps/ci NAME=embedded
	$(PY) -m bench.compare baseline $(SWEEP) --name $(NAME)

compare:  ## regression verdict of a sweep against a baseline (exit 1 on a regression); HTML=1: also as report.html's first section
	$(PY) -m bench.compare compare $(SWEEP) --baseline $(BASELINE) $(if $(HTML),--html)

perf:  ## harness overhead, batched vs per-record generation, padding, a cell's time split -> results/perf/perf.json
	$(PY) -m bench.perf hydra.run.dir=results/perf

perf-gpu:  ## on a GPU: harness vs bare loop on 1.1B and 7B replicas, tokens/s and MFU -> results/perf/gpu.json
	$(PY) -m bench.gpuperf hydra.run.dir=results/perf

memory:  ## pre-flight memory estimate of a run, nothing launched: make memory MODEL=codellama_34b METHOD=lora ARGS="train.micro_batch_size=4"
	$(PY) -m bench.memory model=$(MODEL) method=$(METHOD) task=$(TASK) gpus=$(GPUS) $(ARGS)

base:  ## build (or find) the cached tiny base for MODEL and TASK
	$(PY) -m bench.base model=$(MODEL) task=$(TASK) hydra.run.dir=.cache/peftbench/logs $(ARGS)

test:  ## the test suite (CPU, no network; the model matrix is `make test-models`) on TEST_WORKERS workers; its ten slowest tests
	$(PY) -m pytest -q -m "not matrix" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10

test-models:  ## every method on tiny_codellama, tiny_glm and the real smollm2_135m through the real launcher
	$(PY) -m pytest -q -m matrix

test-fast:  ## unit and config tests only
	$(PY) -m pytest -q -m "not slow"

clean:  ## remove run outputs and cached bases
	rm -rf results/runs .cache/peftbench
