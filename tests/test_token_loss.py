"""The task's loss (summed answer-token cross-entropy) is the same however many rows are scored at once."""

from __future__ import annotations

import pytest
import torch

from bench.pipeline import losses
from bench.taskdata.encoding import IGNORE


def _batch(rows: int = 7, virtual: int = 3, width: int = 11, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, virtual + width, vocab, generator=gen)
    labels = torch.randint(0, vocab, (rows, width), generator=gen)
    labels[:, :4] = IGNORE                  # the prompt
    labels[2, 6:] = IGNORE                  # padding
    return logits, labels


def _reference(logits: torch.Tensor, labels: torch.Tensor, shift: int) -> tuple[float, int]:
    text = logits[:, logits.shape[1] - labels.shape[1]:logits.shape[1] - shift].double()
    target = labels[:, shift:]
    keep = target != IGNORE
    picked = torch.log_softmax(text, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(-(picked * keep).sum()), int(keep.sum())


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 14 * 50 * 4, 2**30])   # one row, a few rows, all at once
@pytest.mark.parametrize("shift", [0, 1])
def test_chunked_cross_entropy_matches_the_whole(monkeypatch, chunk_bytes, shift):
    monkeypatch.setattr(losses, "CE_CHUNK_BYTES", chunk_bytes)
    logits, labels = _batch()
    total, count = losses.token_cross_entropy(logits, labels, shift=shift)
    want, want_count = _reference(logits, labels, shift)
    assert int(count) == want_count
    assert float(total) == pytest.approx(want, rel=1e-6)


def test_half_precision_logits_are_scored_in_fp32():
    logits, labels = _batch()
    total, _ = losses.token_cross_entropy(logits.bfloat16(), labels, shift=1)
    want, _ = _reference(logits.bfloat16().float(), labels, 1)
    assert total.dtype == torch.float32 and float(total) == pytest.approx(want, rel=1e-5)
