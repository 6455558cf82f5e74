"""Pre-flight memory estimate of a run: weights, gradients, optimizer states and activations, per rank.

    python -m bench.memory model=codellama_34b method=lora train.micro_batch_size=4 task.max_length=1024

The activations are counted, not guessed: the method is applied to a replica of the model on the meta
device (no memory, no compute) and one forward pass with the loss records every tensor autograd keeps for
backward. Attention is counted as a fused kernel keeps it (q, k, v, output, log-sum-exp: what sdpa uses on
GPUs and CPUs), so a model run with eager attention needs more than this says. The static part follows
ZeRO stage 1/2 under DeepSpeed: every weight in the training precision; for the trainable parameters, their
gradients and the reduction bucket, plus an fp32 master copy and AdamW's two fp32 moments, partitioned over
the ranks. ``bench.run`` stores the estimate beside the measured peak (``train_info.mem_estimate``); README
"Real models, GPUs and memory" has the ratios measured on CPU and on an H100.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}   # training precision
DEFAULT_BUCKET = 500_000_000   # DeepSpeed's reduce_bucket_size when the config sets none
GIB = 2**30
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer")


class _FusedAttention(torch.autograd.Function):
    """Stands in for sdpa during the count: keeps what a fused kernel keeps, returns the output's shape."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Output shaped like q with v's head size; log-sum-exp per query in fp32."""
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pragma: no cover (never run)
        """Not used: the count needs the forward pass only."""
        raise RuntimeError("the memory probe runs forward only")


@contextlib.contextmanager
def _fused_sdpa() -> Iterator[None]:
    """``F.scaled_dot_product_attention`` replaced by ``_FusedAttention`` while counting."""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
        return _FusedAttention.apply(q, k, v)

    functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


@contextlib.contextmanager
def _meta_branches_false() -> Iterator[None]:
    """A meta tensor has no values: a data-dependent ``if tensor`` (VB-LoRA's guard against infinite logits)
    takes its false side while counting, instead of raising."""
    original = torch.Tensor.__bool__

    def truth(self: torch.Tensor) -> bool:
        return False if self.is_meta else original(self)

    torch.Tensor.__bool__ = truth
    try:
        yield
    finally:
        torch.Tensor.__bool__ = original


def saved_activation_bytes(model: torch.nn.Module, *, batch: int, length: int, label_length: int) -> int:
    """Bytes autograd keeps for backward after one forward pass with labels (each storage counted once).

    ``model`` lives on the meta device; weights (and views of them) are not activations and are skipped. The input
    is ``length`` tokens, the labels ``label_length`` (a decoder-only model's are its input; an encoder–decoder's
    are its decoder's, which it shifts into its decoder input).
    """
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            kept[storage._cdata] = storage.nbytes()
        return t

    ids = torch.zeros((batch, length), dtype=torch.long, device="meta")
    labels = torch.zeros((batch, label_length), dtype=torch.long, device="meta")
    model.train()
    with _fused_sdpa(), _meta_branches_false(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=labels)
    return sum(kept.values())


def meta_replica(config: Any, cfg: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The run's trainable model (the method YAML's builder applied) on the meta device."""
    import hydra

    from bench.models import loading

    with torch.device("meta"):
        model = loading.auto_class(cfg.model).from_config(config, dtype=dtype,
                                                           trust_remote_code=bool(cfg.model.trust_remote_code),
                                                           **loading.attention(cfg.model))
        model = hydra.utils.get_method(cfg.method.builder)(model, cfg.method, cfg.model)
    return model.to(dtype)   # as DeepSpeed casts the whole module, adapters included (peft makes them fp32)


def _bucket(ds_config: dict[str, Any], trainable: int) -> int:
    """Elements of the gradient reduction bucket DeepSpeed allocates (never more than it reduces)."""
    zero = ds_config.get("zero_optimization") or {}
    return min(int(zero.get("reduce_bucket_size", DEFAULT_BUCKET)), trainable)


def layer_count(config: Any) -> int:
    """Transformer layers of a model config, whichever name the architecture gives them (1 if none); an
    encoder–decoder's decoder blocks (``num_decoder_layers``) count too."""
    layers = int(next((getattr(config, k) for k in LAYER_KEYS if isinstance(getattr(config, k, None), int)), 1))
    decoder = getattr(config, "num_decoder_layers", None) if getattr(config, "is_encoder_decoder", False) else None
    return layers + (int(decoder) if isinstance(decoder, int) else 0)


def estimate(model: torch.nn.Module, *, precision: str, ds_config: dict[str, Any], world_size: int,
             batch: int, length: int, label_length: int, vocab: int, layers: int,
             kbit: tuple[int, int] | None = None) -> dict[str, Any]:
    """Per-rank bytes of one training step of ``model`` (meta device) at ``batch`` × ``length`` tokens, with labels
    of ``label_length`` (the logits' positions).

    Components: weights, gradients (DeepSpeed's reduction bucket: the gradients land in it), fp32 master
    weights, AdamW moments, activations kept for backward, and backward's working set: one layer's share of
    the activations (the gradients of the layer being differentiated), the logits the training loop's output holds
    through backward (the training precision) and the loss's fp32 gradients of its log-softmax and of the logits
    (8 bytes per vocabulary entry and token; measured on CPU for SmolLM2 at 8 × 320 tokens: the backward peak is
    the saved activations plus these three, 1.41 GiB there). The optimizer step needs, instead of the activations,
    an fp32 gradient partition and one fp32 temporary of AdamW's (measured on an H100: 8 bytes per trainable
    parameter). The total is the static part plus the larger of backward and step, which for full
    fine-tuning of a large model is the step. ``kbit`` (bits, quantized parameters): a k-bit base stores those
    weights in ``bench.models.kbit.weight_bytes(bits)`` each, the rest in the training precision.
    """
    from bench.models import kbit as kbits

    width = DTYPES[precision].itemsize
    n_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shards = world_size if int((ds_config.get("zero_optimization") or {}).get("stage", 0)) >= 1 else 1
    activations = saved_activation_bytes(model, batch=batch, length=length, label_length=label_length)
    parts = {
        "weights": (n_params - kbit[1]) * width + kbit[1] * kbits.weight_bytes(kbit[0]) if kbit
        else n_params * width,
        "gradients": _bucket(ds_config, trainable) * width,
        "master_weights": 4 * trainable // shards,
        "optimizer_states": 8 * trainable // shards,
        "activations": activations,
        "backward_transient": activations // max(layers, 1) + (8 + width) * batch * label_length * vocab,
        "optimizer_step": 8 * trainable // shards,
    }
    static = parts["weights"] + parts["master_weights"] + parts["optimizer_states"]
    backward = parts["gradients"] + parts["activations"] + parts["backward_transient"]
    total = static + max(backward, parts["optimizer_step"])
    return {**{f"{k}_bytes": int(v) for k, v in parts.items()}, "total_bytes": int(total),
            "batch": batch, "length": length, "label_length": label_length, "precision": precision,
            "world_size": world_size}


def describe(est: dict[str, Any]) -> str:
    """One line: the total and its parts in GiB."""
    parts = ", ".join(f"{k[:-6].replace('_', ' ')} {v / GIB:.2f}" for k, v in est.items()
                      if k.endswith("_bytes") and k != "total_bytes")
    return (f"{est['total_bytes'] / GIB:.2f} GiB per rank at batch {est['batch']} × {est['length']} tokens, "
            f"{est['precision']} ({parts})")


def for_run(config: Any, vocab: int, cfg: Any, *, precision: str, ds_config: dict[str, Any], world_size: int,
            length: int, label_length: int) -> dict[str, Any]:
    """The estimate of a run from its model's config (the weights themselves are not touched)."""
    from bench.models import kbit

    replica = meta_replica(config, cfg, DTYPES[precision])
    k = kbit.bits(cfg.get("quantization"))
    return estimate(replica, precision=precision, ds_config=ds_config, world_size=world_size,
                    batch=int(cfg.train.micro_batch_size), length=length, label_length=label_length, vocab=vocab,
                    layers=layer_count(config), kbit=(k, kbit.quantized_params(replica)) if k else None)


def model_config(cfg: Any) -> tuple[Any, int]:
    """The config and vocabulary size of ``cfg.model`` without its weights.

    Tiny models: ``arch`` with the char vocabulary of the task. Others: the folder's or hub cache's
    config.json where it is on disk, else the model YAML's ``shape`` (the published sizes).
    """
    from transformers import AutoConfig

    if cfg.model.source == "tiny":
        from bench.models import loading
        from bench.pipeline import tinybase

        tokenizer = tinybase.tokenizer_and_key(cfg)[0]
        config = loading.tiny_config(cfg.model, len(tokenizer), loading.special_ids(tokenizer))
        return config, int(config.vocab_size)
    remote = bool(cfg.model.trust_remote_code)
    try:   # a config.json already on disk (hub cache or folder): never a download for an estimate
        config = AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=remote, local_files_only=True,
                                            revision=cfg.model.get("revision"))
    except OSError:
        shape = dict(cfg.model.get("shape") or {})
        if "model_type" not in shape:
            raise RuntimeError(f"model={cfg.model.name}: no config.json of {cfg.model.path} on disk and no `shape` "
                               f"with a transformers model_type in its YAML; the run itself logs its estimate "
                               f"before training") from None
        config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    return config, int(config.vocab_size)


def preflight(cfg: Any, world_size: int = 1) -> dict[str, Any]:
    """The estimate of the run ``cfg`` describes on ``world_size`` ranks, at the task's full length, before
    anything is loaded."""
    from bench.models import dtypes
    from bench.pipeline import engine_setup
    from bench.taskdata import family

    precision = dtypes.resolve(cfg.deepspeed)
    config, vocab = model_config(cfg)
    # Without ``trainable`` the bucket is DeepSpeed's default; the estimate caps it as the run's config does.
    ds_config = engine_setup.deepspeed_config(cfg.deepspeed, micro_batch_size=int(cfg.train.micro_batch_size),
                                       grad_accum=int(cfg.train.grad_accum), grad_clip=float(cfg.train.grad_clip),
                                       prec=precision)
    length = int(cfg.task.max_length)
    return for_run(config, vocab, cfg, precision=precision, ds_config=ds_config, world_size=world_size,
                   length=length, label_length=family.of(cfg.model).label_length(length))
