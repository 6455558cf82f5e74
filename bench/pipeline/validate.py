"""Checks of a run's config before any model is loaded: the one entry point of every cheap check.

Every error names the field, the bad value and the fix. ``check`` runs first (config values, paths, the
model section through bench.models.checks, callables, the peft config, the ZeRO stage and the DeepSpeed JSON,
the data through the task's own ``check``, and for a tiny model its architecture built without weights);
the model's own checks (bench.models.checks.check_loaded: target modules, sequence budget) run again on the
loaded model. Anything these raise is recorded as status ``invalid``
(exit 2), never as a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.core.errors import ConfigError, InputError  # noqa: F401  (InputError: callers import both from here)
from bench.models import checks, kbit, loading
from bench.pipeline.engine_setup import deepspeed_json
from bench.taskdata import datachecks, family

POSITIVE = ("train.steps", "train.micro_batch_size", "train.grad_accum", "method.lr", "eval.batch_size",
            "task.max_length", "task.max_new_tokens", "eval.max_new_tokens", "forgetting.window",
            "forgetting.max_tokens", "forgetting.batch_size")
OPTIONAL_COUNTS = ("eval.max_records", "eval.curve.every", "eval.curve.patience", "train.budget.tokens",
                   "task.data.max_records.train", "task.data.max_records.validation",
                   "task.data.max_records.test")
CHOICES = {"train.schedule": ("cosine", "linear", "constant"), "deepspeed.precision": ("auto", "fp16", "bf16", "fp32"),
           "model.source": ("tiny", "hub", "local", "package", "replica"),
           "forgetting.measure": ("auto", "general_text", "source_task", "none"), "eval.split": ("test", "validation")}
ZERO_STAGES = (1,)   # the ZeRO stages built and tested here (evaluation and saving read every weight on every rank)
CALLABLES = ("builder", "saver", "loader")   # and every entry of method.hooks


def check(cfg: Any) -> list[str]:
    """Raise ``ConfigError`` (or the task's data error) for the first problem; return the warnings."""
    _resolves(cfg)
    _numbers(cfg)
    _choices(cfg)
    if Path(cfg.out_dir).is_file():
        raise ConfigError(f"out_dir={cfg.out_dir} is a file; point out_dir at a directory")
    checks.check(cfg)
    kbit.check(cfg.get("quantization"), cfg.method)
    _task_type(cfg)
    _method(cfg)
    _packing(cfg)
    _zero_stage(cfg.deepspeed)
    warnings = datachecks.check(cfg.task, tiny=cfg.model.source == "tiny", split=str(cfg.eval.split))
    if cfg.model.source == "tiny":
        checks.check_loaded(cfg, loading.skeleton(cfg.model))
    return warnings


def _resolves(cfg: Any) -> None:
    """Every ``???`` is filled and every interpolation resolves."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set (the YAML says ???); give {'them' if missing[1:] else 'it'} "
                          f"on the command line, e.g. {missing[0]}=…")
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001  (omegaconf raises several types; all mean "fix the config")
        raise ConfigError(f"the config does not resolve: {err}") from err


def _value(cfg: Any, dotted: str) -> Any:
    """The value at a dotted key."""
    return OmegaConf.select(cfg, dotted)


def _numbers(cfg: Any) -> None:
    """Budgets, sizes and rates are positive numbers; optional caps are null or ≥ 0."""
    for key in POSITIVE:
        value = _value(cfg, key)
        if not _is_number(value) or float(value) <= 0:
            raise ConfigError(f"{key}={value} must be a number > 0")
    for key in OPTIONAL_COUNTS:
        value = _value(cfg, key)
        if value is not None and (not _is_number(value) or int(value) < 0):
            raise ConfigError(f"{key}={value} must be null (no cap) or a whole number ≥ 0")
    seconds = _value(cfg, "train.budget.seconds")
    if seconds is not None and (not _is_number(seconds) or float(seconds) <= 0):
        raise ConfigError(f"train.budget.seconds={seconds} must be null (no time budget) or a number > 0")
    if _value(cfg, "train.budget.tokens") and seconds is not None:
        raise ConfigError("train.budget.tokens and train.budget.seconds are both set; give one budget (train.steps "
                          "stays the cap)")
    if int(_value(cfg, "eval.curve.every") or 0) and int(_value(cfg, "eval.curve.records") or 0) <= 0:
        raise ConfigError(f"eval.curve.records={_value(cfg, 'eval.curve.records')} must be > 0 when eval.curve.every "
                          "is set")
    length, new = int(_value(cfg, "task.max_length")), int(_value(cfg, "eval.max_new_tokens"))
    if length <= new:   # the prompt gets max_length − max_new_tokens tokens at generation: none would be left
        raise ConfigError(f"task.max_length={length} leaves no room for a prompt beside eval.max_new_tokens={new}; "
                          f"raise task.max_length above {new} or lower task.max_new_tokens")
    for i, group in enumerate(cfg.method.get("param_groups") or []):
        if "match" not in group or not _is_number(group.get("lr")) or float(group.get("lr")) <= 0:
            raise ConfigError(f"method.param_groups[{i}]={dict(group)} needs a 'match' substring and an lr > 0")


def _is_number(value: Any) -> bool:
    """True for ints and floats (and numeric strings), False for anything else."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _choices(cfg: Any) -> None:
    """Keys with a fixed set of values (a typo would otherwise fall back silently)."""
    for key, allowed in CHOICES.items():
        value = _value(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} must be one of {', '.join(map(str, allowed))}")


def _method(cfg: Any) -> None:
    """The method's functions import, its peft config builds, and its options fit the model."""
    import hydra

    method = cfg.method
    for key in [*CALLABLES, *(f"hooks.{name}" for name in method.get("hooks") or {})]:
        dotted = _value(method, key)
        if dotted:
            try:
                hydra.utils.get_method(dotted)
            except Exception as err:  # noqa: BLE001  (import errors of every kind mean "fix the name")
                cause = " ".join(str(err).split())
                raise ConfigError(f"method.{key}={dotted} cannot be imported ({cause}); "
                                  "name a module.function") from err
    if method.get("peft_config") is not None:
        try:
            hydra.utils.instantiate(method.peft_config)
        except Exception as err:  # noqa: BLE001  (peft's own validation raises ValueError, TypeError, …)
            raise ConfigError(f"method.peft_config of method={method.name} does not build "
                              f"{method.peft_config.get('_target_')}: {err.__cause__ or err}; fix the value in "
                              f"conf/method/{method.name}.yaml or the override") from err
    if cfg.train.gradient_checkpointing and not method.supports_gradient_checkpointing:
        raise ConfigError(f"train.gradient_checkpointing=true is not supported by method={method.name}; "
                          "set train.gradient_checkpointing=false")
    arch = cfg.model.get("arch") or {}
    layers = arch.get("num_hidden_layers") or arch.get("num_decoder_layers")   # an encoder–decoder: its decoder's
    n = method.get("layers")
    if n is not None and (not _is_number(n) or int(n) <= 0 or (layers is not None and int(n) > int(layers))):
        raise ConfigError(f"method.layers={n} must be in 1..{layers or 'the model’s layer count'}")


def _task_type(cfg: Any) -> None:
    """The model's task type is a known family, the method runs on it, and the method's peft config says the same."""
    kind = family.of(cfg.model).task_type
    method = cfg.method
    supported = [str(t) for t in method.get("task_types") or []]
    if kind not in supported:
        note = method.get("task_types_note")
        raise ConfigError(
            f"method={method.name} does not run on model={cfg.model.name}, a {kind} model (model.task_type): the "
            f"method lists {supported or 'no task type'} in method.task_types{f' ({note})' if note else ''}; choose "
            f"a method whose task_types list {kind} (README 'Encoder–decoder models' lists them) or a model of "
            f"task type {' or '.join(supported) or 'another'}")
    peft_type = _value(cfg, "method.peft_config.task_type")
    if method.get("peft_config") is not None and peft_type != kind:
        raise ConfigError(f"method.peft_config.task_type={peft_type} but model={cfg.model.name} is {kind} "
                          "(model.task_type): PEFT would wrap it as the wrong kind of model; drop the override "
                          "(the method YAMLs say task_type: ${{model.task_type}})")


def _zero_stage(deepspeed: Any) -> None:
    """Only the ZeRO stages built and tested here, also where the DeepSpeed JSON or ``extra`` would set another.

    Either replaces the generated ``zero_optimization`` section whole, and DeepSpeed's default stage there is 0.
    """
    stage = deepspeed.zero_stage
    if stage not in ZERO_STAGES:
        raise ConfigError(f"deepspeed.zero_stage={stage!r}: only ZeRO stage 1 is built and tested so far (stages 0, 2 "
                          "and 3 are not); set deepspeed.zero_stage=1")
    extra = OmegaConf.to_container(deepspeed.extra, resolve=True) if deepspeed.get("extra") else {}
    for where, settings in (("deepspeed.json_file", deepspeed_json(deepspeed)), ("deepspeed.extra", extra)):
        zero = settings.get("zero_optimization")
        if zero is not None and (not isinstance(zero, dict) or zero.get("stage") not in ZERO_STAGES):
            raise ConfigError(f"{where} sets zero_optimization={zero}, which replaces the generated one: only ZeRO "
                              "stage 1 is built and tested so far (DeepSpeed's default there is stage 0); give "
                              '"stage": 1 in it, or leave zero_optimization to deepspeed.zero_stage')


PACKING_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")  # masks from restarts


def _packing(cfg: Any) -> None:
    """``train.packing`` only where packed records stay apart: a decoder-only model whose attention transformers masks
    from restarting position ids, and a method that adds nothing per row; a tiny model is also probed (``_leaks``)
    on a random build of its architecture."""
    if not cfg.train.packing:
        return
    why = _unpackable(cfg)
    if why is None and cfg.model.source == "tiny":
        import torch

        with torch.random.fork_rng(devices=[]):   # build_tiny seeds: leave the run's RNG be
            model = loading.build_tiny(cfg.model, vocab_size=64, seed=0,
                                       special={"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2})
        why = _leaks(model)
    if why is not None:
        raise ConfigError(f"train.packing=true cannot train model={cfg.model.name} with method={cfg.method.name}: "
                          f"{why}; set train.packing=false")


def _unpackable(cfg: Any) -> str | None:
    """Why the config's model or method cannot pack, from their properties (None: nothing found before loading)."""
    import hydra

    model, method = cfg.model, cfg.method
    if family.of(model).encoder_decoder:
        return (f"model.task_type={model.task_type} is an encoder–decoder, whose prompts and answers are separate "
                "sequences; packing restarts position ids in one decoder-only sequence")
    if model.get("trust_remote_code"):
        return ("model.trust_remote_code=true: the model's own code builds its attention mask, and nothing says it "
                "follows restarting position ids")
    attention = model.get("attn_implementation")
    if attention not in PACKING_ATTENTION:
        return (f"model.attn_implementation={attention or 'null'} (null: the model's default, unknown before it "
                f"loads); packing needs one of {', '.join(PACKING_ATTENTION)}, whose mask transformers "
                "derives from restarting position ids")
    if method.get("peft_config") is not None and hydra.utils.instantiate(method.peft_config).is_prompt_learning:
        return (f"method.peft_config is a prompt-learning config ({method.peft_config._target_}): its virtual tokens "
                "or key/value prefixes are added once per row, so the records packed into a row would share them")
    return None


def check_packed_attention(cfg: Any, model: Any) -> None:
    """On the loaded base, before the method: packed records must not see each other (``_leaks``)."""
    if cfg.train.packing:
        why = _leaks(model)
        if why is not None:
            raise ConfigError(f"train.packing=true cannot train model={cfg.model.name}: {why}; set train.packing=false")


def _leaks(model: Any) -> str | None:
    """Why two records packed in one row are not scored as each alone (None: they are, within a tenth of a leak).

    The second record's logits, packed behind the first with its position ids restarting, against it alone; a leak's
    size is what the same row gives with position ids running on (plain causal attention across both)."""
    import torch

    device = next(model.parameters()).device
    first, second = torch.arange(3, 9, device=device), torch.arange(9, 13, device=device)
    row = torch.cat([first, second])[None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=second[None], use_cache=False).logits[0].float()
            packed, running = (model(input_ids=row, position_ids=pos[None], use_cache=False).logits[0, 6:].float()
                               for pos in (torch.cat([torch.arange(6), torch.arange(4)]).to(device),
                                           torch.arange(10, device=device)))
    finally:
        model.train(was_training)
    gap, leak = float((packed - alone).abs().max()), float((running - alone).abs().max())
    if gap <= 0.1 * leak:
        return None
    return (f"its attention does not keep packed records apart (the second of two packed records' logits move by "
            f"{gap:.3g} against it alone; attention across both moves them by {leak:.3g})")

