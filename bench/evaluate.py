"""Evaluation: eval loss, batched greedy generation with KV cache, parsing, scoring and latency."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench import data
import tasks


@torch.no_grad()
def eval_loss(model: Any, examples: list[dict[str, list[int]]], *, batch_size: int, pad_id: int) -> float:
    """Token-weighted mean loss on the answer tokens of the eval split."""
    model.eval()
    device = next(model.parameters()).device
    total = count = 0.0
    for s in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in data.collate(examples[s:s + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != data.IGNORE).sum())
        total += float(model(**batch).loss) * n
        count += n
    return total / count


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], *, batch_size: int, max_new_tokens: int,
             max_prompt_tokens: int | None = None, desc: str = "generate") -> tuple[list[str], list[float], int]:
    """Greedy answers in the order of ``prompts``; batches hold prompts of similar length (left padded).

    Prompts are encoded and cut as in training (``bench.data``). Returns the answers, each record's
    latency (its batch's wall time shared equally) and the number of generated tokens.
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = [data.prompt_ids(tokenizer, p) for p in prompts]
    if max_prompt_tokens:
        encoded = [data.fit_prompt(ids, max_prompt_tokens) for ids in encoded]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(prompts)
    latency: list[float] = [0.0] * len(prompts)
    generated = 0
    for s in tqdm(range(0, len(order), batch_size), desc=desc, mininterval=2.0):
        idx = order[s:s + batch_size]
        enc = {k: v.to(device) for k, v in data.left_pad([encoded[i] for i in idx], tokenizer.pad_token_id).items()}
        start = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        elapsed = time.perf_counter() - start
        new = out[:, enc["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            ids = new[row]
            stop = (ids == tokenizer.eos_token_id).nonzero()
            ids = ids[: int(stop[0]) if len(stop) else len(ids)]
            generated += len(ids)
            answers[i] = tokenizer.decode(ids, skip_special_tokens=True)
            latency[i] = elapsed / len(idx)
    return answers, latency, generated


def evaluate(model: Any, tokenizer: Any, records: list[dict[str, str]], task_cfg: Any, *,
             batch_size: int, max_new_tokens: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores and timings for the eval split, and one prediction row per record."""
    task = tasks.module(task_cfg)
    prompts = [task.prompt(r, task_cfg) for r in records]
    start = time.perf_counter()
    answers, latency, n_tokens = generate(model, tokenizer, prompts, batch_size=batch_size,
                                          max_new_tokens=max_new_tokens,
                                          max_prompt_tokens=int(task_cfg.max_length) - max_new_tokens)
    wall = time.perf_counter() - start
    metrics = task.score(answers, [r["output"] for r in records])
    ms = np.array(latency) * 1000
    metrics.update({"latency_ms_mean": float(ms.mean()), "latency_ms_p50": float(np.percentile(ms, 50)),
                    "latency_ms_p95": float(np.percentile(ms, 95)), "gen_tokens_per_s": n_tokens / wall,
                    "generated_tokens": n_tokens, "eval_time_s": wall})
    rows = [{"instruction": r["instruction"], "input": r["input"], "reference": r["output"], "prediction": a}
            for r, a in zip(records, answers)]
    return metrics, rows
