"""Forgetting: how much of the base model's own ability survives the tuning, measured alike for every method.

The base's ability is scored once on the loaded base (``before``, before any method touches it) and once on
the trained model as it is evaluated (``after``, adapter enabled). Which ability (``forgetting.measure``):

- ``general_text``: next-token cross-entropy on general English that is not the task's (peft's method
  comparison measures forgetting this way); the text ships with the project (``bench/assets``, CC0).
- ``source_task``: the primary metric of the source task a tiny base was trained on (``bench.pipeline.tinybase``), on
  its test split: a tiny model has no general English, its source task is all it knew.
- ``auto``: ``source_task`` where the run has a tiny base with a source task, else ``general_text``.

Both abilities are recorded so that higher is better (the source metric, negated where its task declares lower
is better; mean log-likelihood per token, which is minus the cross-entropy), so ``forgetting = before − after`` for
every measure: positive where ability was lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from importlib import resources
from typing import Any

import torch

from bench.core.errors import ConfigError
from bench.models import dtypes
from bench.pipeline import evaluate, losses
from bench.taskdata import family, splits, taskcfg

log = logging.getLogger(__name__)
MEASURES = ("auto", "general_text", "source_task", "none")
TEXT = "general_text.txt"


def measure(forgetting_cfg: Any, base_info: dict[str, Any]) -> str:
    """The measure this run uses: ``auto`` resolved by whether the base has a source task, never by its name."""
    chosen = str(forgetting_cfg.measure)
    if chosen not in MEASURES:
        raise ConfigError(f"forgetting.measure={chosen!r} must be one of {', '.join(MEASURES)}")
    if chosen == "auto":
        return "source_task" if base_info.get("source_task") else "general_text"
    if chosen == "source_task" and not base_info.get("source_task"):
        raise ConfigError("forgetting.measure=source_task needs a tiny base (model.source=tiny), which has a source "
                          "task; use general_text or auto for this model")
    return chosen


def general_text() -> str:
    """The shipped general text, its ``#`` header left out."""
    text = resources.files("bench").joinpath("assets", TEXT).read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()


def windows(tokenizer: Any, text: str, *, window: int, max_tokens: int) -> list[list[int]]:
    """Equal windows of the text's first ``max_tokens`` tokens, each led by bos where the tokenizer has one
    (as every prompt is, ``bench.taskdata.encoding.prompt_ids``); a last partial window is dropped unless it is the
    only one."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids[:max_tokens]   # longer than a window
    lead = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    step = max(1, window - len(lead))
    chunks = [ids[s:s + step] for s in range(0, len(ids), step)]
    full = [c for c in chunks if len(c) == step] or chunks[:1]
    return [lead + c for c in full]


@torch.no_grad()
def text_log_likelihood(model: Any, rows: list[list[int]], *, batch_size: int) -> float:
    """Mean log-likelihood per predicted token (minus the token-weighted cross-entropy) over ``rows``.

    The loss is computed from the logits, never the model's own (a method's may add a term); ``token_cross_entropy``
    takes the text's logits after any virtual tokens a prompt-learning method puts in front. The model family says
    what is predicted from what (an encoder–decoder: each window's second half from its first).
    """
    model.eval()
    kind = family.of_model(model)
    device = next(model.parameters()).device
    total = count = 0.0
    for s in range(0, len(rows), batch_size):
        inputs, labels = kind.text_batch(torch.tensor(rows[s:s + batch_size], dtype=torch.long, device=device))
        ce, n = losses.token_cross_entropy(model(**inputs).logits, labels, shift=kind.label_shift)
        total += float(ce)
        count += int(n)
    return -total / count


def source_score(model: Any, tokenizer: Any, cfg: Any, generate_fn: evaluate.Generate | None = None) -> float:
    """The source task's primary metric on its test split (higher is better), generated as the base was scored
    when it was built: the score bench.pipeline.tinybase records for the base as ``source_score``."""
    src = taskcfg.source_task(cfg.task)
    scores, _ = evaluate.evaluate(model, tokenizer, splits.load(src, "test"), src, batch_size=int(cfg.eval.batch_size),
                                  max_new_tokens=int(src.max_new_tokens), generate_fn=generate_fn)
    name, higher = taskcfg.primary(src)
    return float(scores[name]) if higher else -float(scores[name])


def ability(model: Any, tokenizer: Any, cfg: Any, kind: str, generate_fn: evaluate.Generate | None = None) -> float:
    """The model's score on ``kind``, higher is better; the run's random numbers are left as they were."""
    with torch.random.fork_rng(devices=[]), _precision(cfg.deepspeed, next(model.parameters()).device):
        if kind == "source_task":
            return source_score(model, tokenizer, cfg, generate_fn)
        f = cfg.forgetting
        rows = windows(tokenizer, general_text(), window=int(f.window), max_tokens=int(f.max_tokens))
        return text_log_likelihood(model, rows, batch_size=int(f.batch_size))


def before(model: Any, tokenizer: Any, cfg: Any, base_info: dict[str, Any]) -> dict[str, Any]:
    """The base's ability as loaded, on the device the run trains on; the model is left where and as it was."""
    kind = measure(cfg.forgetting, base_info)
    if kind == "none":
        return {"forgetting_measure": kind, "forgetting_before": None}
    with _on_device(model):
        score = ability(model, tokenizer, cfg, kind)
    log.info("forgetting: the base scores %.4f on %s", score, kind)
    return {"forgetting_measure": kind, "forgetting_before": score}


def after(model: Any, tokenizer: Any, cfg: Any, base_info: dict[str, Any], before: dict[str, Any], *,
          generate_fn: evaluate.Generate | None = None) -> dict[str, Any]:
    """The trained model's ability (adapter enabled, the method's own generation: ``generate_fn``, the YAML's
    ``hooks.generate`` as the run resolved it) and the ability lost since."""
    kind = before["forgetting_measure"]
    if kind == "none":
        return {**before, "forgetting_after": None, "forgetting": None}
    score = ability(model, tokenizer, cfg, kind, generate_fn)
    lost = before["forgetting_before"] - score
    log.info("forgetting: %.4f on %s after tuning (%+.4f lost)", score, kind, lost)
    return {**before, "forgetting_after": score, "forgetting": lost}


@contextlib.contextmanager
def _on_device(model: Any) -> Iterator[None]:
    """The loaded base on this rank's accelerator for the pass (a real model is too slow on CPU), then back where
    it was, so a method's builder creates its weights where it always did, in the train/eval mode it was in."""
    from deepspeed.accelerator import get_accelerator

    accelerator, home, mode = get_accelerator(), next(model.parameters()).device, model.training
    target = torch.device("cpu" if accelerator.device_name() == "cpu"
                          else accelerator.device_name(int(os.environ.get("LOCAL_RANK", "0"))))
    model.to(target)
    try:
        yield
    finally:
        model.to(home)
        model.train(mode)
        if target != home:
            accelerator.empty_cache()


def _precision(deepspeed: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to the training precision on an accelerator: DeepSpeed casts the trained model to it, so the base
    loaded in float32 is scored as the trained model runs (on CPU everything is float32)."""
    dtype = dtypes.TRAINED_DTYPES.get(dtypes.resolve(deepspeed))
    return torch.autocast(device.type, dtype=dtype) if dtype and device.type != "cpu" else contextlib.nullcontext()
