"""The cached tiny base: a tiny model full-trained on the task's *source* schema before any method runs.

A random tiny model has no skill for PEFT to adapt, so tiny models are first trained on a source
version of the task (same texts, another schema) and cached on disk under a key of everything that
determines them. Real models skip this stage. ``python -m bench.base`` (``make base``) builds it alone.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import tasks
from bench.core import results
from bench.core.errors import ConfigError
from bench.models import chartok, dtypes, loading
from bench.pipeline import distributed, engine_setup, evaluate, train
from bench.taskdata import encoding, family, splits
from bench.taskdata.taskcfg import pretrain, primary, source_task

log = logging.getLogger(__name__)
BASE_FORMAT = 4  # bump when the way a base is built changes, so old caches are never reused silently
BUILD_TRAIN_KEYS = ("schedule", "warmup_ratio", "grad_clip")   # the train.* keys a base build reads


def check_learned(cfg: Any, info: dict[str, Any]) -> None:
    """A base that did not learn its source task (its primary metric short of ``base_task.min_score``) is refused."""
    floor = cfg.task.base_task.get("min_score")
    if floor is None:
        return
    value, higher = info["source_score"], info["source_higher_is_better"]
    if (value >= floor) if higher else (value <= floor):
        return
    raise ConfigError(
        f"the tiny base {info['key']} of model={cfg.model.name} scored {info['source_metric']}={value:.4f} on its "
        f"source task {info['source_task']}, {'below' if higher else 'above'} task.base_task.min_score={floor}: it "
        f"learned too little for a method to adapt. Raise its budget (task.base_task.pretrain.steps; now "
        f"{pretrain(cfg).steps}) or its data, or set task.base_task.min_score=null to accept it")


def corpus_texts(records: list[dict[str, str]], task_cfg: Any) -> list[str]:
    """Every string the tokenizer must cover."""
    return [tasks.module(task_cfg).prompt(r, task_cfg) + r["output"] for r in records]


def deepspeed_section(deepspeed: Any) -> DictConfig:
    """The DeepSpeed settings the base trains under: ``json_file`` merged under ``extra`` as bench.run's validation
    merges it (``make base`` and the sweep build bases from the unvalidated config), and ``auto`` resolved, which
    is fp32 on CPU and fp16 on a GPU: a cache shared between machines must not hand one the other's base."""
    section = OmegaConf.to_container(deepspeed, resolve=True)
    prec = dtypes.resolve(deepspeed)
    return OmegaConf.create({**section, "json_file": None, "extra": engine_setup.deepspeed_extra(deepspeed),
                             "precision": prec})


def base_key(cfg: Any, vocab: list[str]) -> str:
    """Hash of everything ``_train_base`` reads: architecture and load dtype, pre-training budget, the whole source
    task (data, prompt, lengths), the schedule, the DeepSpeed settings, the batch it is scored at, the vocabulary
    and the versions of the packages that train it. Not the run's method, steps or seed: bases are shared by those."""
    ds = deepspeed_section(cfg.deepspeed)
    spec = {
        "format": BASE_FORMAT,
        "model": {k: _plain(cfg.model.get(k)) for k in ("arch", "dtype", "attn_implementation")},
        "pretrain": _plain(pretrain(cfg)),
        "source_task": _plain(source_task(cfg.task)),
        "train": {k: _plain(cfg.train[k]) for k in BUILD_TRAIN_KEYS},
        "deepspeed": {k: _plain(ds[k]) for k in ("precision", "zero_stage", "extra")},
        "eval_batch_size": int(cfg.eval.batch_size), "vocab": vocab,
        "versions": {k: v for k, v in results.versions().items() if k in ("torch", "transformers", "deepspeed",
                                                                            "tokenizers")},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A config node as plain JSON-able data (interpolations resolved); other values as they are."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _train_base(cfg: Any, tokenizer: Any, src_task: Any, dest: Path) -> dict[str, Any]:
    """Full-train a fresh tiny model on the source schema, score it, save it to ``dest``."""
    pre = pretrain(cfg)
    model = loading.build_tiny(cfg.model, len(tokenizer), int(pre.seed), loading.special_ids(tokenizer))
    examples = family.of(cfg.model).encode(splits.load(src_task, "train"), tokenizer, src_task)
    distributed.ensure_distributed()
    ds_cfg = deepspeed_section(cfg.deepspeed)
    ds = engine_setup.deepspeed_config(ds_cfg, micro_batch_size=int(pre.micro_batch_size), grad_accum=1,
                                grad_clip=float(cfg.train.grad_clip), prec=ds_cfg.precision)
    groups = engine_setup.param_groups(model, lr=float(pre.lr), overrides=[], weight_decay=0.0)
    engine = engine_setup.engine_for(model, groups, ds, total_steps=int(pre.steps), train_cfg=cfg.train)
    plan = encoding.BatchPlan(int(pre.micro_batch_size), seed=int(pre.seed), group_by_length=True)
    stream = encoding.batches(examples, plan, pad_id=tokenizer.pad_token_id)
    fit = train.fit(engine, stream, steps=int(pre.steps), grad_accum=1, log_every=50, desc="base")
    scores, _ = evaluate.evaluate(engine.module, tokenizer, splits.load(src_task, "test"), src_task,
                                  batch_size=int(cfg.eval.batch_size), max_new_tokens=int(src_task.max_new_tokens))
    engine.module.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    engine.destroy()   # the run that built this base must not carry its optimizer into its own measurements
    del engine, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    name, higher = primary(src_task)
    return {"source_metric": name, "source_score": scores[name], "source_higher_is_better": higher,
            "source_scores": scores, "source_loss_first": fit["loss_curve"][0],
            "source_loss_final": fit["final_loss"], "train_time_s": fit["train_time_s"]}


def tokenizer_and_key(cfg: Any) -> tuple[Any, str]:
    """The base's character tokenizer (source and target texts) and its cache key; nothing is built."""
    src_task = source_task(cfg.task)
    texts = corpus_texts(splits.load(src_task, "train"), src_task)
    texts += corpus_texts(splits.load(cfg.task, "train"), cfg.task)
    tokenizer = chartok.build(texts)
    vocab = tokenizer.get_vocab()
    return tokenizer, base_key(cfg, sorted(vocab, key=vocab.__getitem__))


def ensure(cfg: Any) -> dict[str, Any]:
    """Path, key and build facts of the base for this config, building it once under a file lock."""
    src_task = source_task(cfg.task)
    tokenizer, key = tokenizer_and_key(cfg)
    root = Path(cfg.cache_dir) / "bases"
    root.mkdir(parents=True, exist_ok=True)
    path, meta_path = root / f"{cfg.model.name}-{key}", root / f"{cfg.model.name}-{key}" / "base_info.json"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not meta_path.exists() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Its build is a single-process training run: inside a multi-rank launch it would wait forever on
            # ranks that wait on this lock. The sweep builds bases before its cells; by hand it is one command.
            raise ConfigError(
                f"no cached base of model={cfg.model.name} for task={cfg.task.name} in {root} and this is a "
                f"{os.environ['WORLD_SIZE']}-rank launch: build it first with `python -m bench.base "
                f"model={cfg.model.name} task={cfg.task.name}` (make base), or run through bench.sweep")
        if not meta_path.exists():
            log.info("building tiny base %s (source task %s) — once; later runs reuse it", key, src_task.name)
            tmp = root / f".{path.name}.building"
            shutil.rmtree(tmp, ignore_errors=True)
            start = time.perf_counter()
            facts = _train_base(cfg, tokenizer, src_task, tmp)
            facts.update({"key": key, "build_time_s": time.perf_counter() - start, "source_task": src_task.name})
            results.write_json(tmp / "base_info.json", facts)
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
            built_now = True
        else:
            built_now = False
    info = json.loads(meta_path.read_text())
    check_learned(cfg, info)
    return {**info, "path": str(path), "built_in_this_run": built_now}
