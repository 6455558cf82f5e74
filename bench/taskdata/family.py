"""Model families by PEFT task type: decoder-only (``CAUSAL_LM``) and encoder–decoder (``SEQ_2_SEQ_LM``) models.

What differs between them is data, not control flow: which transformers Auto class builds the model, how a record
becomes a training example (one sequence with the prompt masked, or an encoder input and decoder labels), how the
logits line up with the labels, what the model needs to score labels, and what ``generate`` returns before the new
tokens. The model YAML's ``task_type`` picks the family before a model exists; a loaded model's own config
(``is_encoder_decoder``) picks it afterwards, and bench.pipeline.validate checks on the loaded model that the two agree.
The run loop, training, evaluation, forgetting and the memory probe ask the family; none names a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.core.errors import ConfigError
from bench.taskdata import encoding
from bench.taskdata.encoding import IGNORE


@dataclass(frozen=True)
class Family:
    """How one kind of model is trained, scored and decoded (see the module's docstring)."""

    task_type: str                 # peft's TaskType, as the model YAML's task_type and every method's peft_config say
    auto_class: str                # the transformers Auto class of its language-model head
    encoder_decoder: bool          # what transformers' config.is_encoder_decoder says of such a model
    encode: Callable[..., list[dict[str, Any]]]   # fn(records, tokenizer, task_cfg) -> training examples
    label_shift: int               # logits at position t score label t + label_shift (1: the next token; 0: aligned)
    labels_in: bool                # the model builds its decoder input from the labels, so scoring passes them
    generated_prefix: Callable[[int], int]   # prompt ids width -> leading columns of generate's output (not new)
    label_length: Callable[[int], int]       # task.max_length -> the longest labels a record can have

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the model gets to score ``batch`` (a collated batch with labels) without its own loss mattering."""
        return dict(batch) if self.labels_in else {k: v for k, v in batch.items() if k != "labels"}

    def new_ids(self, out: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """The generated ids only: a decoder-only model repeats the prompt ids it was given (none when it was given
        embeddings), an encoder–decoder model's output starts with its decoder start token."""
        return out[:, self.generated_prefix(prompt_width):]

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens a training batch holds, padding excluded (an encoder–decoder's decoder tokens included)."""
        count = int(batch["attention_mask"].sum())
        return count + int((batch["labels"] != IGNORE).sum()) if self.labels_in else count

    def text_batch(self, ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs and labels that score windows of plain text: the next token of every position for a
        decoder-only model; the second half given the first (a prefix language model) for an encoder–decoder."""
        if not self.labels_in:
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids
        half = ids.shape[1] // 2
        labels = ids[:, half:]
        return {"input_ids": ids[:, :half], "attention_mask": torch.ones_like(ids[:, :half]), "labels": labels}, labels


FAMILIES: dict[str, Family] = {
    "CAUSAL_LM": Family(task_type="CAUSAL_LM", auto_class="AutoModelForCausalLM", encoder_decoder=False,
                        encode=encoding.encode, label_shift=1, labels_in=False,
                        generated_prefix=lambda width: width, label_length=lambda length: length),
    "SEQ_2_SEQ_LM": Family(task_type="SEQ_2_SEQ_LM", auto_class="AutoModelForSeq2SeqLM", encoder_decoder=True,
                           encode=encoding.encode_seq2seq, label_shift=0, labels_in=True,
                           generated_prefix=lambda width: 1, label_length=lambda length: length // 2),
}


def of(model_cfg: Any) -> Family:
    """The family the model YAML's ``task_type`` names; an unknown one is refused with the choices."""
    task_type = model_cfg.get("task_type")
    if task_type not in FAMILIES:
        raise ConfigError(f"model.task_type={task_type!r} in model={model_cfg.get('name')} must be one of "
                          f"{', '.join(FAMILIES)} (a decoder-only or an encoder–decoder language model); set it in "
                          "the model YAML")
    return FAMILIES[task_type]


def of_model(model: Any) -> Family:
    """The family of a loaded model (a PEFT model or DeepSpeed's module too), from its transformers config."""
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    return next(f for f in FAMILIES.values() if f.encoder_decoder == encoder_decoder)


def config_ids(model_cfg: Any, special: dict[str, int | None]) -> dict[str, int | None]:
    """The token ids a tiny model's config takes from its tokenizer: pad/bos/eos, and for an encoder–decoder the
    decoder start, which is pad as in T5 (the labels are shifted right behind it)."""
    if of(model_cfg).encoder_decoder and special.get("pad_token_id") is not None:
        return {**special, "decoder_start_token_id": special["pad_token_id"]}
    return special
