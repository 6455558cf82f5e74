"""Reported = reloaded in the run's own precision (fp16/bf16): the model a run scores is the one its saved weights
give a user who loads the base in the training precision and the adapter with plain ``from_pretrained``.

DeepSpeed casts the whole model, adapter included, to fp16/bf16. PEFT's ``from_pretrained`` casts a tuner's adapter
weights back to fp32 (``autocast_adapter_dtype``); its prompt encoders keep what was saved. Scoring the fp16 copies
(and reloading the base in the YAML's fp32) is how AdaLoRA and prompt tuning disagreed with their own saved weights
on an H200. DeepSpeed's cast is applied by hand here, on CPU, in both half precisions (DeepSpeed has no fp16 on
CPU); tests/test_methods.py runs bf16 through the real launcher and reloads in a fresh process.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch

from bench.models import dtypes, loading
from bench.pipeline import final, tinybase
from tests.conftest import CONF, TINY, compose_cfg

PEFT_METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml")
                      if not p.stem.startswith("_") and "methods.loaders.peft_adapter" in
                      str(compose_cfg(f"method={p.stem}").method.loader))
OTHER_METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml")
                       if not p.stem.startswith("_") and p.stem not in PEFT_METHODS)


def trained_in(precision: str, method: str, out: Path) -> tuple:
    """A tiny base saved in fp32 (as bench.pipeline.tinybase caches it), the method's trainable model on it with its
    trainable weights moved (a stand-in for training), cast to the training precision as DeepSpeed's engine casts
    it."""
    cfg = compose_cfg(*TINY, f"method={method}", f"out_dir={out}", f"cache_dir={out / 'cache'}")
    tokenizer, _ = tinybase.tokenizer_and_key(cfg)
    tokenizer.save_pretrained(out / "tokenizer")      # prompt tuning initialises from the instruction text
    net = loading.build_tiny(cfg.model, len(tokenizer), seed=0, special=loading.special_ids(tokenizer))
    net.save_pretrained(out / "base")
    model = hydra.utils.get_method(cfg.method.builder)(net, cfg.method, cfg.model)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    with torch.no_grad():   # DeepSpeed (0.19) casts the parameters and keeps fp32 buffers (rotary inv_freq)
        for param in model.parameters():
            param.data = param.data.to(dtypes.TRAINED_DTYPES[precision])
    return cfg, tokenizer, model.eval()


def logits(model, tokenizer) -> torch.Tensor:
    """Next-token logits of two prompts (a padded batch)."""
    batch = tokenizer(["head | relation | tail", "a longer text to extract from"], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        return model(**batch).logits.float()


def reloaded(cfg, out: Path, precision: str):
    """The saved weights the way a user loads them: the base in the training precision, then the method's loader."""
    net = loading.auto_class(cfg.model).from_pretrained(out / "base",
                                                         dtype=dtypes.trained_dtype(cfg.model, precision))
    return hydra.utils.get_method(cfg.method.loader)(net, out, cfg.method).eval()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("method", PEFT_METHODS + OTHER_METHODS)
def test_the_scored_model_is_what_its_saved_weights_give(tmp_path, method, precision):
    cfg, tokenizer, model = trained_in(precision, method, tmp_path)
    scored = logits(final.as_reloaded(model), tokenizer)
    hydra.utils.get_method(cfg.method.saver)(model, tmp_path, cfg.method)
    assert torch.equal(scored, logits(reloaded(cfg, tmp_path, precision), tokenizer))


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_scoring_the_half_precision_adapter_is_not_what_a_reload_gives(tmp_path, method):
    """The mechanism the rule fixes: the fp16 adapter DeepSpeed trained is not what ``from_pretrained`` rebuilds."""
    cfg, tokenizer, model = trained_in("fp16", method, tmp_path)
    as_trained = logits(model, tokenizer)
    hydra.utils.get_method(cfg.method.saver)(model, tmp_path, cfg.method)
    assert not torch.equal(as_trained, logits(reloaded(cfg, tmp_path, "fp16"), tokenizer))
    assert all(p.dtype == torch.float32 for n, p in reloaded(cfg, tmp_path, "fp16").named_parameters()
               if "lora_" in n)


def test_the_base_is_reloaded_in_the_training_precision():
    model_cfg = compose_cfg().model
    assert dtypes.trained_dtype(model_cfg, "fp16") == torch.float16
    assert dtypes.trained_dtype(model_cfg, "bf16") == torch.bfloat16
    assert dtypes.trained_dtype(model_cfg, "fp32") == dtypes.dtype_of(model_cfg) == torch.float32
