"""A replica: a model YAML's published ``shape`` (or its ``arch``) with random weights, built on the device.

``model=llama2_7b model.source=replica`` trains and times a model of LLaMA-2-7B's exact architecture without
downloading it and without the tiny base's pre-training: what it measures is cost (memory, step time, tokens/s),
never quality. Its weights are random (seed ``REPLICA_SEED``, the same for every run on a device type), so every run
of it records ``base_info.replica: true`` and ``quality_meaningful: false``, and the report marks its rows.

The tokenizer is the character tokenizer tiny models use (``bench.models.chartok``), built from the task's training
texts, with the shape's ``vocab_size`` as embedding rows (the ids past the characters are rows no text reaches, as a
real tokenizer's unused entries): no file is needed on any machine, and the model keeps its published size. A
character tokenizer makes a text's sequence longer than a BPE tokenizer would; tokens/s is per token either way.
A shape scaled down for a CPU test is a command line away:
``model.shape.num_hidden_layers=2 model.shape.hidden_size=64``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

import tasks
from bench.core.errors import ConfigError
from bench.models import chartok, dtypes
from bench.taskdata import family, splits

REPLICA_SEED = 0   # the replica's weights: the same for every method, seed and task on one device type


def spec(model_cfg: Any) -> dict[str, Any]:
    """The architecture a replica builds: the YAML's ``shape`` where it has one, else its ``arch``."""
    found = model_cfg.get("shape") or model_cfg.get("arch")
    if not found or not found.get("model_type"):
        raise ConfigError(f"model.source=replica builds model.shape (or model.arch) with transformers; "
                          f"model={model_cfg.name} has no such section with a model_type (e.g. llama): a model whose "
                          "architecture is remote code (chatglm_6b) cannot be replicated")
    return dict(found)


def tokenizer(cfg: Any) -> PreTrainedTokenizerBase:
    """The character tokenizer of the task's training texts (prompts and answers)."""
    if cfg.task.get("chat_template"):
        raise ConfigError(f"model={cfg.model.name} model.source=replica: the replica's character tokenizer has no "
                          "chat template; set model.chat_template=false")
    module = tasks.module(cfg.task)
    return chartok.build(module.prompt(r, cfg.task) + r["output"] for r in splits.load(cfg.task, "train"))


def config(model_cfg: Any, tok: PreTrainedTokenizerBase) -> Any:
    """The transformers config of the replica: the spec's sizes, the tokenizer's special ids."""
    arch = spec(model_cfg)
    rows = int(arch.pop("vocab_size", None) or 0)
    if rows and rows < len(tok):
        raise ConfigError(f"model.shape.vocab_size={rows} is smaller than the replica's character tokenizer "
                          f"({len(tok)} tokens from the task's texts); raise it to at least {len(tok)}")
    special = {f"{name}_token_id": getattr(tok, f"{name}_token_id") for name in ("pad", "bos", "eos")}
    return AutoConfig.for_model(arch.pop("model_type"), vocab_size=rows or len(tok),
                                **family.config_ids(model_cfg, special), **arch)


def device() -> torch.device:
    """Where the run's model lives: this rank's GPU where there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def build(cfg: Any, auto_class: type, attention: dict[str, str]
          ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, dict[str, Any]]:
    """Tokenizer, the random-weight replica (on the device, in the YAML's dtype) and the record of what it is."""
    tok = tokenizer(cfg)
    conf = config(cfg.model, tok)
    where = device()
    forked = [where.index] if where.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), where:   # the run's own random numbers are left as they were
        torch.manual_seed(REPLICA_SEED)
        model = auto_class.from_config(conf, dtype=dtypes.dtype_of(cfg.model), **attention)
    info = {"path": None, "key": None, "replica": True, "quality_meaningful": False, "init_seed": REPLICA_SEED,
            "device": str(where), "architecture": spec(cfg.model),
            "vocab_rows": int(conf.vocab_size), "tokenizer": f"character, {len(tok)} tokens (bench.models.chartok)",
            "params": sum(p.numel() for p in model.parameters())}
    return tok, model, info
