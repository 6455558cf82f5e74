"""Models shipped as a GGUF file: found in a hub repository, a folder or an installed package, converted once.

transformers de-quantizes a GGUF file into a regular model (``from_pretrained(folder, gguf_file=…)``,
~20 s for SmolLM2-135M here) but marks it "quantized with gguf", which ``save_pretrained`` and
merging refuse. The first run converts the file into a float safetensors folder in the cache, under a
key of the file's content and the transformers version; every later run (and ``bench.pipeline.reload``) loads
that folder in about a second, so a sweep pays the conversion once.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError

log = logging.getLogger(__name__)


def install_hint(model_cfg: Any) -> str:
    """The command that provides the model's file, from its YAML (``install``), or a generic one."""
    return str(model_cfg.get("install") or "pip install gguf")


def folder(model_cfg: Any) -> Path:
    """The folder holding ``gguf_file``: a local folder, an installed package's folder, or the hub cache's."""
    source, path = model_cfg.source, str(model_cfg.path)
    if source == "local":
        return Path(path)
    if source == "package":
        spec = importlib.util.find_spec(path)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model.path={path} (model.source=package) is not an installed package; install it "
                              f"with `{install_hint(model_cfg)}` (make setup does)")
        return Path(next(iter(spec.submodule_search_locations)))
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(path, str(model_cfg.gguf_file), revision=model_cfg.get("revision"))).parent


def gguf_path(model_cfg: Any) -> Path:
    """The GGUF file, checked to exist; the ``gguf`` package transformers reads it with, checked to import."""
    file = folder(model_cfg) / str(model_cfg.gguf_file)
    if not file.is_file():
        raise ConfigError(f"model.gguf_file={model_cfg.gguf_file} is not in {file.parent} "
                          f"(model.source={model_cfg.source}, model.path={model_cfg.path}); check the name, or "
                          f"install it with `{install_hint(model_cfg)}`")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"model={model_cfg.name} is a GGUF file and the `gguf` package that reads it is missing; "
                          f"install it with `{install_hint(model_cfg)}` (make setup does)")
    return file


def content_key(file: Path) -> str:
    """Hash of the file's bytes and the converting transformers version: a new file or reader converts anew."""
    import transformers

    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    digest.update(transformers.__version__.encode())
    return digest.hexdigest()[:16]


def _convert(file: Path, dest: Path, model_cfg: Any) -> None:
    """De-quantize ``file`` into a float safetensors folder (tokenizer included) at ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    model.hf_quantizer = None          # the weights are plain floats now: nothing is left quantized
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def converted(model_cfg: Any, cache_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The converted folder of the model's GGUF file (built once, under a lock) and facts for ``base_info``."""
    file = gguf_path(model_cfg)
    key = content_key(file)
    root = Path(cache_dir) / "gguf"
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{model_cfg.name}-{key}"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "config.json").is_file():
            log.info("converting %s to a float safetensors folder (once; later runs load %s)", file, dest)
            tmp = root / f".{dest.name}.building"
            shutil.rmtree(tmp, ignore_errors=True)
            _convert(file, tmp, model_cfg)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    return dest, {"gguf_file": str(file), "key": key, "converted_path": str(dest)}
