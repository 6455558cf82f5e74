"""The task's token cross-entropy, scored a few rows of logits at a time (training, evaluation and forgetting
share it)."""

from __future__ import annotations

import torch

from bench.taskdata.encoding import IGNORE

CE_CHUNK_BYTES = 4 * 2**20   # fp32 logits scored at once: a real vocabulary's rows one by one, a tiny one's in a few


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the answer tokens, and their count: the task's loss for every method.

    Prompt-learning methods put virtual positions before the text, so only the last ``labels.shape[1]``
    logits are the text's. ``shift`` (the model family's ``label_shift``): 1 where the logits at a position score
    the next token (decoder-only), 0 where they score the label at the same position (an encoder–decoder's
    decoder; its virtual tokens are the encoder's). Rows are upcast to fp32 a few at a time, at most
    ``CE_CHUNK_BYTES`` (a real vocabulary's logits are large; a tiny model's 32 rows one by one cost ~2 ms a step).
    """
    logits = logits[:, logits.shape[1] - labels.shape[1]:logits.shape[1] - shift]
    target = labels[:, shift:]
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    rows = max(1, CE_CHUNK_BYTES // max(1, logits[0].numel() * 4))
    for lo in range(0, logits.shape[0], rows):
        chunk = logits[lo:lo + rows].float()
        total += torch.nn.functional.cross_entropy(chunk.reshape(-1, chunk.shape[-1]), target[lo:lo + rows].reshape(-1),
                                                   ignore_index=IGNORE, reduction="sum")
    return total, (target != IGNORE).sum()
