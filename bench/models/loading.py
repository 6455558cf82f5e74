"""Tokenizer and base model from a model YAML: a hub id, a local folder, a tiny cached base, or a replica of a
published shape with random weights (bench.models.replica)."""

from __future__ import annotations

import logging
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from bench.core.errors import ConfigError, input_errors
from bench.models import dtypes
from bench.taskdata import family

log = logging.getLogger(__name__)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    """The pad/bos/eos ids a model config must agree on with its tokenizer."""
    return {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}


def tiny_config(model_cfg: Any, vocab_size: int, special: dict[str, int | None] | None = None) -> Any:
    """The transformers config of the YAML's architecture (``arch``); ``special``: its tokenizer's ids.

    ``vocab_size`` is the tokenizer's size; an ``arch.vocab_size`` is a floor on the embedding rows, so a tiny
    stand-in can carry a real model's vocabulary size (tiny_codellama: 32016) with a character tokenizer.
    """
    arch = dict(model_cfg.arch)
    rows = max(vocab_size, int(arch.pop("vocab_size", None) or 0))
    return AutoConfig.for_model(arch.pop("model_type"), vocab_size=rows,
                                **family.config_ids(model_cfg, special or {}), **arch)


def build_tiny(model_cfg: Any, vocab_size: int, seed: int, special: dict[str, int | None] | None = None
               ) -> PreTrainedModel:
    """A randomly initialised model of ``tiny_config``, with the language-model head of its family."""
    config = tiny_config(model_cfg, vocab_size, special)
    torch.manual_seed(seed)
    return auto_class(model_cfg).from_config(config, attn_implementation=model_cfg.attn_implementation,
                                             dtype=dtypes.dtype_of(model_cfg))


def skeleton(model_cfg: Any) -> Any:
    """A tiny model's architecture on the meta device: its module names and config, no weights, no base."""
    import torch


    # transformers refuses an architecture its family's Auto class does not map (a T5 as CAUSAL_LM) with a ValueError
    with input_errors(f"model={model_cfg.name} (model.task_type={model_cfg.task_type}: transformers' "
                      f"{auto_class(model_cfg).__name__}) cannot build model.arch"), \
            torch.random.fork_rng(devices=[]), torch.device("meta"):     # build_tiny seeds: leave the run's RNG be
        return build_tiny(model_cfg, vocab_size=2**18, seed=0)   # a vocab past any default pad id


def auto_class(model_cfg: Any) -> type:
    """The transformers Auto class that loads the YAML's model: ``auto_class`` where the YAML names one.

    By default its family's (``task_type``): AutoModelForCausalLM or AutoModelForSeq2SeqLM. ChatGLM-6B's config
    maps only ``AutoModel`` (and ``AutoModelForSeq2SeqLM``) to its ``ChatGLMForConditionalGeneration``, so its
    YAML says ``auto_class: AutoModel``.
    """
    default = family.of(model_cfg).auto_class
    name = model_cfg.get("auto_class") or default
    if not name.startswith("Auto") or not hasattr(transformers, name):
        raise ConfigError(f"model.auto_class={name} is not a transformers Auto class; use {default} "
                          f"or the class the model's config.json maps in its auto_map (e.g. AutoModel)")
    return getattr(transformers, name)


def attention(model_cfg: Any) -> dict[str, str]:
    """``attn_implementation`` for transformers where the YAML names one (remote code may take none)."""
    return {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}


def load_pretrained(path: str, model_cfg: Any, quantization: Any = None
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and weights from a hub id or folder; remote code only where the model YAML opts in.

    Both come from the YAML's ``revision`` (a hub commit; null: the latest), so remote code runs only as reviewed.
    ``quantization``: a ``BitsAndBytesConfig`` (bench.models.kbit) for a k-bit base.
    """
    extra = {"quantization_config": quantization} if quantization is not None else {}
    remote, revision = bool(model_cfg.trust_remote_code), model_cfg.get("revision")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote, revision=revision)
    model = auto_class(model_cfg).from_pretrained(path, dtype=dtypes.dtype_of(model_cfg), trust_remote_code=remote,
                                                  revision=revision, use_safetensors=None if remote else True,
                                                  **attention(model_cfg), **extra)
    if model_cfg.get("eos_token"):   # an instruct model's end of turn, where its tokenizer's eos is another token
        tokenizer.eos_token = model_cfg.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer, model


def load(cfg: Any, base_info: dict[str, Any] | None = None
         ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, dict[str, Any]]:
    """The run's tokenizer and base model (k-bit and prepared for training where ``quantization.bits`` says), and a
    description of where the base came from."""
    from bench.models import kbit

    quant = cfg.get("quantization")
    tokenizer, model, info = _load(cfg, base_info, kbit.config(quant, dtypes.dtype_of(cfg.model)))
    return tokenizer, kbit.prepare(model, quant, gradient_checkpointing=bool(cfg.train.gradient_checkpointing)), info


def _load(cfg: Any, base_info: dict[str, Any] | None, quantization: Any
          ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, dict[str, Any]]:
    """The run's tokenizer, base model and a description of where the base came from (``base_info``: for a tiny
    model, the base the caller ensured with ``bench.pipeline.tinybase.ensure``; this module sits below
    bench.pipeline.tinybase)."""
    if cfg.model.source == "tiny":
        if not base_info:
            raise ValueError("a tiny model loads the base bench.pipeline.tinybase.ensure(cfg) built: pass its info as "
                             "base_info")
        tokenizer, model = load_pretrained(base_info["path"], cfg.model, quantization)
        return tokenizer, model, base_info
    if cfg.model.source == "replica":
        from bench.models import replica

        return replica.build(cfg, auto_class(cfg.model), attention(cfg.model))
    if cfg.model.source == "hub":
        from bench.models import checks

        checks.on_hand(cfg.model)   # in the cache or reachable: else refused in seconds, not retried
    if cfg.model.get("gguf_file"):
        from bench.models import gguf

        folder, info = gguf.converted(cfg.model, cfg.cache_dir)
        tokenizer, model = load_pretrained(str(folder), cfg.model, quantization)
        return tokenizer, model, {"path": str(folder), **info}
    tokenizer, model = load_pretrained(cfg.model.path, cfg.model, quantization)
    return tokenizer, model, {"path": cfg.model.path, "key": None}
