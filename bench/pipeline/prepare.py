"""The set-up phase of a run: data, base, model and method, the DeepSpeed engine and the memory estimate, all that
comes before the first step, in the order the memory accounting needs (the base before the baseline, DeepSpeed's
own set-up outside it)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra

from bench.core.errors import input_errors
from bench.models import checks, dtypes, loading
from bench.pipeline import (budget, costs, curve, distributed, engine_setup, estimate, final, forgetting, headroom,
                            tinybase, train, validate)
from bench.taskdata import encoding, family, splits

log = logging.getLogger(__name__)


def method_fn(dotted: str | None) -> Any:
    """The function a method YAML names by dotted path (None where it names none)."""
    return hydra.utils.get_method(dotted) if dotted else None


@dataclass
class Prepared:
    """What set-up hands training and the final evaluation."""

    engine: Any
    tokenizer: Any
    plan: encoding.BatchPlan
    examples: list[dict[str, Any]]
    stream: Iterator[dict[str, Any]]
    steps: int
    precision: str
    params: dict[str, Any]
    estimate: dict[str, Any]
    hooks: train.StepHooks
    generate_fn: Any
    probe: Any
    base_info: dict[str, Any]
    ability: dict[str, Any]
    train_records: int


def adapted(model: Any, method_cfg: Any, model_cfg: Any, train_cfg: Any) -> Any:
    """The base wrapped by the method YAML's builder (a method refusing its options is an input error)."""
    with input_errors(f"method={method_cfg.name} refused model={model_cfg.name}"):
        model = method_fn(method_cfg.builder)(model, method_cfg, model_cfg)
    if train_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def sized(model_config: Any, vocab: int, cfg: Any, *, precision: str, ds_config: dict[str, Any], world: int,
          examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The pre-flight estimate at the run's shapes; a model it cannot replicate is recorded and warned, never fatal."""
    import torch

    try:
        with torch.random.fork_rng(devices=[]):   # the replica's init must not move the run's random numbers
            found = estimate.for_run(model_config, vocab, cfg, precision=precision, ds_config=ds_config,
                                     world_size=world, **encoding.longest(examples, int(cfg.task.max_length)))
        log.info("memory estimate: %s", estimate.describe(found))
        return found
    except Exception as err:  # noqa: BLE001
        found = {"error": f"{type(err).__name__}: {err}"}
        log.warning("no memory estimate for this run: %s", found["error"])
        return found


def prepare(cfg: Any, out: Path, memory: costs.MemoryBook) -> Prepared:
    """Everything before the first optimizer step. The evaluated split is not read here."""
    import transformers

    train_records = splits.load(cfg.task, "train")
    hydra.utils.get_method(cfg.method.builder)  # imports the method's module (peft): code is not the model's memory
    tiny_base = tinybase.ensure(cfg) if cfg.model.source == "tiny" else None   # a base built now: before the baseline
    memory.start()
    tokenizer, model, base_info = loading.load(cfg, tiny_base)
    checks.check_loaded(cfg, model)
    validate.check_packed_attention(cfg, model)   # train.packing: records packed in a row stay apart
    with final.timed("forgetting: the base's own ability", "forgetting.measure=none skips it"):
        ability = forgetting.before(model, tokenizer, cfg, base_info) if cfg.eval.split == "test" else {}   # untouched
    model_config, vocab = model.config, int(model.get_output_embeddings().weight.shape[0])
    tokenizer.save_pretrained(out / "tokenizer")
    transformers.set_seed(int(cfg.seed))  # after the base, which may have been built (and drawn numbers) just now
    model = adapted(model, cfg.method, cfg.model, cfg.train)
    params = costs.parameter_counts(model)
    examples = family.of(cfg.model).encode(train_records, tokenizer, cfg.task)
    log.info("the first training prompt, as the model sees it (task.instruction, task.prompt_template):\n%s",
             encoding.prompt_text(train_records[0], cfg.task, tokenizer))
    with memory.excluded():
        distributed.ensure_distributed()
        if memory.tracker.active:
            engine_setup.warm_up()
    plan = encoding.BatchPlan.of(cfg.train, seed=int(cfg.seed), rank=int(os.environ["RANK"]),
                                 world=int(os.environ["WORLD_SIZE"]), max_length=int(cfg.task.max_length))
    precision = dtypes.resolve(cfg.deepspeed)
    ds_config = engine_setup.deepspeed_config(cfg.deepspeed, micro_batch_size=plan.micro_batch_size,
                                       grad_accum=plan.grad_accum, grad_clip=float(cfg.train.grad_clip),
                                       prec=precision, trainable=params["trainable_params"])
    groups = engine_setup.param_groups(model, lr=float(cfg.method.lr), overrides=list(cfg.method.param_groups or []),
                                weight_decay=float(cfg.train.weight_decay))
    found = sized(model_config, vocab, cfg, precision=precision, ds_config=ds_config, world=plan.world,
                  examples=examples)
    found.update(headroom.check(found, held=costs.current_memory() - memory.baseline, grad_accum=plan.grad_accum,
                                mode=str(cfg.train.memory_check)))   # before the engine: refused in seconds
    steps = budget.planned_steps(cfg.train, examples, plan)
    engine = engine_setup.engine_for(model, groups, ds_config, total_steps=steps, train_cfg=cfg.train)
    generate_fn = method_fn(cfg.method.hooks.generate)
    return Prepared(
        engine=engine, tokenizer=tokenizer, plan=plan, examples=examples,
        stream=encoding.batches(examples, plan, pad_id=tokenizer.pad_token_id), steps=steps, precision=precision,
        params=params, estimate=found,
        hooks=train.StepHooks(pre=method_fn(cfg.method.hooks.pre_step), post=method_fn(cfg.method.hooks.post_step)),
        generate_fn=generate_fn,
        probe=curve.for_run(engine, tokenizer, cfg, rank=plan.rank, world=plan.world, generate_fn=generate_fn),
        base_info=base_info, ability=ability, train_records=len(train_records))
