"""Quantized (k-bit) bases through bitsandbytes: 8-bit (LLM.int8) or 4-bit (nf4/fp4, QLoRA's) weights, loaded by
transformers' ``BitsAndBytesConfig`` and prepared by PEFT's ``prepare_model_for_kbit_training``.

``quantization.bits`` (conf/config.yaml) turns it on for any model, the tiny bases included (built in full
precision once, then loaded quantized). Only methods whose YAML says ``kbit: true`` (PEFT adapters) train on such a
base: the quantized weights are frozen integers, so full fine-tuning and freeze are refused before anything
loads. Under DeepSpeed ZeRO-1 on a CPU in fp32 both kinds train (measured: README "Quantized bases").
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterable
from typing import Any

import torch

from bench.core.errors import ConfigError

log = logging.getLogger(__name__)

BITS = (4, 8)
QUANT_TYPES = ("nf4", "fp4")


def leave_bitsandbytes_out(quant_cfgs: Iterable[Any]) -> bool:
    """Where none of a process's runs is on a k-bit base and peft is not loaded yet, mark bitsandbytes absent for
    this process (``sys.modules["bitsandbytes"] = None``, Python's way to block an import, which
    ``importlib.util.find_spec`` reports as not installed). peft imports bitsandbytes at its own import whenever it
    is installed: 1.3–1.6 s of every run's start (measured: ``import transformers, peft`` 6.2 s against 4.6–4.9 s)
    and a warning about its missing CPU kernels in every run.log, for a library only a k-bit base uses. True
    where it was left out."""
    asked = any((q or {}).get("bits") is not None for q in quant_cfgs)   # any k, a wrong one too: check() says why
    if asked or "peft" in sys.modules or "bitsandbytes" in sys.modules:
        return False
    sys.modules["bitsandbytes"] = None
    log.debug("bitsandbytes left out of this process: no run in it is on a k-bit base")
    return True


def bits(quant_cfg: Any) -> int | None:
    """The run's k (4 or 8) from its ``quantization`` section, or None for a full-precision base (or no section)."""
    value = (quant_cfg or {}).get("bits")
    return int(value) if value is not None else None


def check(quant_cfg: Any, method_cfg: Any) -> None:
    """Before anything loads: a known k and quant type, a method that trains on frozen integer weights, and
    bitsandbytes installed."""
    q = quant_cfg or {}
    k = q.get("bits")
    if k is None:
        return
    if k not in BITS:
        raise ConfigError(f"quantization.bits={k} must be null (full precision), 8 or 4")
    if k == 4 and q.get("quant_type", "nf4") not in QUANT_TYPES:
        raise ConfigError(f"quantization.quant_type={q.get('quant_type')!r} must be one of {', '.join(QUANT_TYPES)}")
    if not method_cfg.get("kbit", False):
        raise ConfigError(f"method={method_cfg.name} trains the base's own weights, and a {k}-bit base's weights are "
                          "frozen integers: use a PEFT method (lora, adalora, prompt_tuning, …) or "
                          "quantization.bits=null")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"quantization.bits={k} needs bitsandbytes, which is not installed: "
                          "pip install 'bitsandbytes>=0.50' (make setup installs it)")


def config(quant_cfg: Any, dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` of the run, or None; 4-bit computes in ``compute_dtype`` (the model's dtype by
    default)."""
    k = bits(quant_cfg)
    if k is None:
        return None
    from transformers import BitsAndBytesConfig

    q = quant_cfg
    if k == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = getattr(torch, q.compute_dtype) if q.get("compute_dtype") else dtype
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=str(q.quant_type),
                              bnb_4bit_use_double_quant=bool(q.double_quant), bnb_4bit_compute_dtype=compute)


def prepare(model: Any, quant_cfg: Any, *, gradient_checkpointing: bool) -> Any:
    """PEFT's preparation of a k-bit base (norms and the head in fp32, inputs that carry gradients); a
    full-precision base as it is."""
    if bits(quant_cfg) is None:
        return model
    import peft

    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def quantized_params(model: torch.nn.Module) -> int:
    """Parameters bitsandbytes would store in k bits: the frozen weights of the base's linear layers (not the
    output head, which transformers keeps in full precision, and not a method's trainable layers)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m is not head and not m.weight.requires_grad)


def weight_bytes(k: int) -> float:
    """Bytes per quantized weight: k/8, plus 4-bit's fp32 absmax per block of 64 (8-bit: an fp32 scale per row,
    negligible)."""
    return k / 8 + (4 / 64 if k == 4 else 0.0)
