"""Tokenizer and base model from a model YAML: a hub id, a local folder, or a tiny cached base."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def dtype_of(model_cfg: Any) -> torch.dtype:
    """The torch dtype a model YAML names."""
    return getattr(torch, model_cfg.dtype)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    """The pad/bos/eos ids a model config must agree on with its tokenizer."""
    return {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}


def build_tiny(model_cfg: Any, vocab_size: int, seed: int, special: dict[str, int | None] | None = None
               ) -> PreTrainedModel:
    """A randomly initialised model of the YAML's architecture (``arch``); ``special``: its tokenizer's ids."""
    arch = dict(model_cfg.arch)
    config = AutoConfig.for_model(arch.pop("model_type"), vocab_size=vocab_size, **(special or {}), **arch)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation=model_cfg.attn_implementation,
                                            dtype=dtype_of(model_cfg))


def load_pretrained(path: str, model_cfg: Any) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and weights from a hub id or folder; remote code only where the model YAML opts in."""
    remote = bool(model_cfg.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
    kwargs = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_of(model_cfg), trust_remote_code=remote,
                                                 use_safetensors=None if remote else True, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer, model


def load(cfg: Any) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, dict[str, Any]]:
    """The run's tokenizer, base model and a description of where the base came from."""
    if cfg.model.source == "tiny":
        from bench import base

        info = base.ensure(cfg)
        tokenizer, model = load_pretrained(info["path"], cfg.model)
        return tokenizer, model, info
    tokenizer, model = load_pretrained(cfg.model.path, cfg.model)
    return tokenizer, model, {"path": cfg.model.path, "key": None}
