"""Every PEFT method: the YAML's `peft_config` is instantiated and handed to peft."""

from __future__ import annotations

from typing import Any

import peft
from hydra.utils import instantiate
from transformers import PreTrainedModel


def wrap(model: PreTrainedModel, method_cfg: Any, model_cfg: Any) -> peft.PeftModel:
    """Wrap ``model`` with the adapter its method YAML describes."""
    return peft.get_peft_model(model, instantiate(method_cfg.peft_config))
