"""Checks of the model section before anything loads: its source, its load dtype against the training precision,
its hub revision, and remote code only from the repository and commit a reviewed model YAML pins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.core.errors import ConfigError
from bench.core.paths import CONF_DIR
from bench.taskdata import family

PRECISION_DTYPE = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}   # training precision → weight dtype
COMMIT = re.compile(r"[0-9a-f]{40}")


def check(cfg: Any) -> None:
    """The model's source exists, its dtype fits the training precision, remote code only as its YAML pins it."""
    import torch

    model = cfg.model
    if model.source == "tiny" and not model.get("arch"):
        raise ConfigError(f"model.source=tiny needs model.arch (the architecture to build) in {model.name}")
    if model.source == "replica":
        _replica(cfg)
    if model.source == "local" and not Path(str(model.path)).is_dir():
        raise ConfigError(f"model.path={model.path} is not a folder (model.source=local); point it at a saved model")
    if model.source == "package" and not model.get("gguf_file"):
        raise ConfigError(f"model.source=package reads a GGUF file an installed package ships; set model.gguf_file "
                          f"in {model.name}'s YAML")
    if model.get("gguf_file") and model.source != "hub":
        from bench.models import gguf

        gguf.gguf_path(model)   # the package and file are there, and the gguf reader imports
    if not isinstance(getattr(torch, str(model.dtype), None), torch.dtype):
        raise ConfigError(f"model.dtype={model.dtype!r} is not a torch dtype; use float32, float16 or bfloat16")
    _dtype_fits_precision(cfg)
    _revision(model)
    if model.get("trust_remote_code"):
        _remote_code(model)


def _replica(cfg: Any) -> None:
    """A replica is built from its YAML's ``shape`` (or ``arch``) by transformers, in full precision layers only."""
    from bench.models import kbit, replica

    replica.spec(cfg.model)
    if kbit.bits(cfg.get("quantization")):
        raise ConfigError("model.source=replica builds random full-precision weights; a k-bit base "
                          "(quantization.bits) loads a checkpoint: set quantization.bits=null")


def on_hand(model: Any) -> None:
    """A hub model is in the local cache or the hub answers within seconds; else the run is refused at once
    (``bench.models.loading.load`` asks before loading). Without this, an offline run retried its connections for
    ~50 s and was recorded as a crash."""
    import os

    from huggingface_hub import try_to_load_from_cache

    wanted = str(model.get("gguf_file") or "config.json")
    cached = try_to_load_from_cache(str(model.path), wanted, revision=model.get("revision"))
    if isinstance(cached, str) or _hub_answers(float(os.environ.get("PEFTBENCH_HUB_TIMEOUT", "5"))):
        return
    raise ConfigError(
        f"model.path={model.path} (model.source=hub) is not in the local Hugging Face cache and the hub cannot be "
        f"reached; download it where there is access (`huggingface-cli download {model.path}"
        f"{' ' + wanted if model.get('gguf_file') else ''}`, then copy the cache, or set HF_HOME), or point "
        f"model.source=local model.path=<a folder with the saved model>")


def _hub_answers(timeout: float) -> bool:
    """Whether the Hugging Face hub answers (False at once under HF_HUB_OFFLINE)."""
    import os
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)  # noqa: S310
    except Exception:  # noqa: BLE001  (DNS, refused, timeout, TLS: all mean "not reachable now")
        return False
    return True


def _revision(model: Any) -> None:
    """A revision is a string naming a hub commit, branch or tag: a local folder or tiny model has none to pick."""
    revision = model.get("revision")
    if revision is not None and (model.source != "hub" or not isinstance(revision, str) or not revision):
        raise ConfigError(f"model.revision={revision!r} names a hub commit, branch or tag (a string) and applies to "
                          f"model.source=hub only (here {model.source}); set model.revision=null")


def _dtype_fits_precision(cfg: Any) -> None:
    """Weights load in float32 (DeepSpeed casts them) or in the training precision's own dtype.

    fp16 weights trained under fp32 would be recorded as fp32 training, and bf16 weights would lose their range
    through fp16. ``auto`` is resolved as the run resolves it (bench.models.dtypes.resolve: fp16 on a GPU, fp32 on CPU).
    """
    from bench.models import dtypes

    dtype, asked = str(cfg.model.dtype), str(cfg.deepspeed.precision)
    prec = dtypes.resolve(cfg.deepspeed)
    own = PRECISION_DTYPE[prec]
    if dtype in ("float32", own):
        return
    said = f"deepspeed.precision={asked}" + (f" resolves to {prec} here (fp32 on CPU, fp16 on a GPU)"
                                             if asked == "auto" else "")
    fixes = ["model.dtype=float32 (DeepSpeed casts float32 weights to any precision)"]
    if own != "float32":
        fixes.append(f"model.dtype={own}")
    native = {d: p for p, d in PRECISION_DTYPE.items()}.get(dtype)
    if native:
        fixes.append(f"deepspeed={native}" + (" on a GPU (where deepspeed=auto picks it)" if native == "fp16" else ""))
    raise ConfigError(f"model.dtype={dtype} does not fit the training precision: {said}, which trains {own} "
                      f"weights; set {', or '.join(fixes)}")


def _remote_code(model: Any) -> None:
    """Remote code runs only where a model YAML opts in, from the repository and commit that YAML pins.

    Command-line overrides never reach the file, so remote code needs a reviewed YAML, not a flag; and that YAML's
    ``path`` and ``revision`` cannot be overridden, or ``model=chatglm_6b model.path=any/repo`` would run any code.
    """
    choice = _model_choice(model)
    yaml = f"conf/model/{choice}.yaml"
    if not _yaml_value(choice, "trust_remote_code"):
        raise ConfigError(
            f"model.trust_remote_code=true would run Python code from {model.path or model.name}, but {yaml} does not "
            "opt in; drop the override, or, if you trust that code, set trust_remote_code: true in a model YAML of "
            "your own (as chatglm_6b.yaml does)")
    pinned = {key: _yaml_value(choice, key) for key in ("path", "revision")}
    for key, value in pinned.items():
        if model.get(key) != value:
            raise ConfigError(
                f"model.{key}={model.get(key)} overrides {yaml}, which runs remote code only from {pinned['path']} at "
                f"revision {pinned['revision']}; drop the override, or review that code and write a model YAML of "
                "your own with its path, revision (the commit sha you reviewed) and trust_remote_code: true")
    if model.source != "hub" or not COMMIT.fullmatch(str(model.revision or "")):
        raise ConfigError(
            f"model.revision={model.revision!r} (model.source={model.source}) in {yaml}: trust_remote_code=true needs "
            f"a hub model pinned to the full commit sha (40 hex digits) of the code you reviewed, so a later push to "
            f"{model.path} cannot change what runs; set source: hub and revision: <commit sha> in that YAML")


def _model_choice(model: Any) -> str:
    """The model YAML this run composed (Hydra's choice inside the app, else the model section's name)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("model", model.name))
    return str(model.name)


def _yaml_value(name: str, key: str) -> Any:
    """``key`` as ``conf/model/<name>.yaml`` itself (or a YAML it extends) sets it, unresolved; None where unset."""
    for node in _yaml_chain(name):
        if key in node:
            return node[key]
    return None


def _yaml_chain(name: str) -> list[dict[str, Any]]:
    """A model YAML and those it extends, by precedence: itself (our YAMLs list _self_ last), then later defaults."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        return []
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    parents = [str(p) for p in node.get("defaults", []) if str(p) != "_self_"]
    return [node, *(n for parent in reversed(parents) for n in _yaml_chain(parent))]


POSITION_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length")


def check_loaded(cfg: Any, model: Any) -> None:
    """The model is of the family its YAML's task type says, the method's target modules exist in ``model`` and the
    sequence budget fits its positions."""
    declared, actual = family.of(cfg.model), family.of_model(model)
    if declared is not actual:
        raise ConfigError(f"model.task_type={declared.task_type} but model={cfg.model.name} loads as a "
                          f"{actual.task_type} model (config.is_encoder_decoder={actual.encoder_decoder}); set "
                          f"task_type: {actual.task_type} in its model YAML")
    _target_modules(cfg, model)
    config = getattr(model, "config", None)
    positions = next((getattr(config, k) for k in POSITION_KEYS if isinstance(getattr(config, k, None), int)), None)
    virtual = int(OmegaConf.select(cfg, "method.peft_config.num_virtual_tokens") or 0)
    length, new = int(cfg.task.max_length), int(cfg.eval.max_new_tokens)
    if positions and virtual + length + new > positions:
        room = positions - virtual - new
        fix = f"lower task.max_length to at most {room}" if room > 0 else "lower eval.max_new_tokens"
        fix += ", or method.peft_config.num_virtual_tokens" if virtual else ", or use a model with more positions"
        raise ConfigError(
            f"sequence budget {virtual + length + new} = method.peft_config.num_virtual_tokens ({virtual}) + "
            f"task.max_length ({length}) + eval.max_new_tokens ({new}) exceeds model={cfg.model.name}'s "
            f"max_position_embeddings={positions}; {fix}")


def _target_modules(cfg: Any, model: Any) -> None:
    """Every entry of ``method.peft_config.target_modules`` names a module of the model (as peft matches)."""
    targets = OmegaConf.select(cfg, "method.peft_config.target_modules")
    if targets is None or targets == "all-linear":
        return
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [str(t) for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and not any(m.children())})
        shown = OmegaConf.to_container(targets) if OmegaConf.is_list(targets) else targets
        raise ConfigError(f"method.peft_config.target_modules={shown}: {missing} match no module of "
                          f"model={cfg.model.name}; its leaf modules are {leaves} "
                          "(model.lora_targets sets the default)")
