"""Evaluation: eval loss, batched greedy generation with KV cache, parsing, scoring and latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.pipeline.distributed import sum_over_ranks
from bench.pipeline.losses import token_cross_entropy
from bench.taskdata import encoding, family, taskcfg

Generate = Callable[..., torch.Tensor]   # fn(model, input_ids, attention_mask, **generate kwargs) -> new ids


def from_every_rank(value: Any, *, world: int) -> list[Any]:
    """``value`` of every data-parallel rank, in rank order (``[value]`` in a single process)."""
    if world == 1:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * world
    dist.all_gather_object(values, value)
    return values


def interleave(shards: list[list[Any]]) -> list[Any]:
    """Per-rank shards (rank r holds positions r, r + world, …) back in their original order."""
    whole: list[Any] = [None] * sum(len(shard) for shard in shards)
    for rank, shard in enumerate(shards):
        whole[rank::len(shards)] = shard
    return whole


@torch.no_grad()
def eval_loss(model: Any, examples: list[dict[str, list[int]]], *, batch_size: int, pad_id: int,
              rank: int = 0, world: int = 1) -> float:
    """Token-weighted cross-entropy on the answer tokens of a split (each rank takes every world-th).

    The loss is computed here from the logits, never the model's own (which may add a method's regularizer,
    AdaLoRA's): a decoder-only model gets no labels, an encoder–decoder gets them only to build its decoder input.
    """
    model.eval()
    kind = family.of_model(model)
    device = next(model.parameters()).device
    total = count = 0.0
    shard = examples[rank::world]
    for s in range(0, len(shard), batch_size):
        batch = {k: v.to(device) for k, v in encoding.collate(shard[s:s + batch_size], pad_id).items()}
        ce, n = token_cross_entropy(model(**kind.model_inputs(batch)).logits, batch["labels"], shift=kind.label_shift)
        total += float(ce)
        count += int(n)
    sums = sum_over_ranks(torch.tensor([total, count], dtype=torch.float64, device=device))
    return float(sums[0] / sums[1])


def encode_prompts(tokenizer: Any, prompts: list[str], max_prompt_tokens: int | None) -> list[list[int]]:
    """Prompt ids as training encodes them (``bench.taskdata.encoding``), cut to ``max_prompt_tokens`` where given."""
    encoded = [encoding.prompt_ids(tokenizer, p) for p in prompts]
    return [encoding.fit_prompt(ids, max_prompt_tokens) for ids in encoded] if max_prompt_tokens else encoded


def model_generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``model.generate`` on a left-padded batch; the new token ids only (the model family says what precedes them)."""
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return family.of_model(model).new_ids(out, input_ids.shape[1])


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], *, batch_size: int, max_new_tokens: int,
             max_prompt_tokens: int | None = None, desc: str = "generate",
             generate_fn: Generate | None = None) -> tuple[list[str], list[float], int]:
    """Greedy answers in the order of ``prompts``; batches hold prompts of similar length (left padded).

    Prompts are encoded and cut as in training (``bench.taskdata.encoding``). ``generate_fn``: the method's own batched
    generation (its YAML's ``hooks.generate``), ``model.generate`` by default. Returns the answers, each
    record's latency (its batch's wall time shared equally) and the number of generated tokens.
    """
    generate_fn = generate_fn or model_generate
    model.eval()
    device = next(model.parameters()).device
    encoded = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(prompts)
    latency: list[float] = [0.0] * len(prompts)
    generated = 0
    for s in tqdm(range(0, len(order), batch_size), desc=desc, mininterval=2.0):
        idx = order[s:s + batch_size]
        enc = {k: v.to(device) for k, v in encoding.left_pad([encoded[i] for i in idx], tokenizer.pad_token_id).items()}
        start = time.perf_counter()
        new = generate_fn(model, **enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                          use_cache=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        elapsed = time.perf_counter() - start
        for row, i in enumerate(idx):
            ids = new[row]
            stop = (ids == tokenizer.eos_token_id).nonzero()
            ids = ids[: int(stop[0]) if len(stop) else len(ids)]
            generated += len(ids)
            answers[i] = tokenizer.decode(ids, skip_special_tokens=True)
            latency[i] = elapsed / len(idx)
    return answers, latency, generated


def evaluate(model: Any, tokenizer: Any, records: list[dict[str, str]], task_cfg: Any, *, batch_size: int,
             max_new_tokens: int, rank: int = 0, world: int = 1, generate_fn: Generate | None = None,
             desc: str = "generate") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores and timings for ``records`` (the test split, or validation), and one prediction row per record.

    With ``world`` ranks each generates every world-th record and every rank gets all answers back:
    tokens/s is the ranks' tokens over the slowest rank's wall time.
    """
    prompts = [encoding.prompt_text(r, task_cfg, tokenizer) for r in records[rank::world]]
    start = time.perf_counter()
    answers, latency, n_tokens = generate(model, tokenizer, prompts, batch_size=batch_size,
                                          max_new_tokens=max_new_tokens,
                                          max_prompt_tokens=int(task_cfg.max_length) - max_new_tokens,
                                          desc=f"{desc} (rank {rank} of {world})" if world > 1 else desc,
                                          generate_fn=generate_fn)
    wall = time.perf_counter() - start
    shards = from_every_rank((answers, latency, n_tokens, wall), world=world)   # one collective for all four
    answers, latency = interleave([s[0] for s in shards]), interleave([s[1] for s in shards])
    n_tokens, wall = sum(s[2] for s in shards), max(s[3] for s in shards)
    metrics = taskcfg.scored(task_cfg, answers, [r["output"] for r in records])
    ms = np.array(latency) * 1000
    metrics.update({"latency_ms_mean": float(ms.mean()), "latency_ms_p50": float(np.percentile(ms, 50)),
                    "latency_ms_p95": float(np.percentile(ms, 95)), "gen_tokens_per_s": n_tokens / wall,
                    "generated_tokens": n_tokens, "eval_time_s": wall})
    rows = [{**{k: v for k, v in r.items() if k != "output"}, "reference": r["output"], "prediction": a}
            for r, a in zip(records, answers)]
    return metrics, rows


def _sync() -> None:
    """Wait for queued GPU work so wall time covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def fixed_length_ms(model: Any, tokenizer: Any, prompts: list[str], *, new_tokens: int, batch_size: int,
                    repeats: int, max_prompt_tokens: int | None = None,
                    generate_fn: Generate | None = None) -> tuple[float, list[torch.Tensor]]:
    """Milliseconds per record to generate exactly ``new_tokens`` greedy tokens for every prompt (eos does not
    stop it, so every variant of a model does the same work), median of ``repeats`` after one warm-up pass;
    and the generated ids of each batch."""
    model.eval()
    generate_fn = generate_fn or model_generate
    device = next(model.parameters()).device
    encoded = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    batches = [{k: v.to(device)
                for k, v in encoding.left_pad(encoded[s:s + batch_size], tokenizer.pad_token_id).items()}
               for s in range(0, len(encoded), batch_size)]
    times, outputs = [], []
    for _ in range(repeats + 1):
        _sync()
        start = time.perf_counter()
        outputs = [generate_fn(model, **enc, min_new_tokens=new_tokens, max_new_tokens=new_tokens, do_sample=False,
                               num_beams=1, use_cache=True, pad_token_id=tokenizer.pad_token_id) for enc in batches]
        _sync()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[1:])) / len(prompts), [o.cpu() for o in outputs]


def inference_latency(model: Any, tokenizer: Any, records: list[dict[str, str]], task_cfg: Any, latency_cfg: Any,
                      *, merge: bool, generate_fn: Generate | None = None) -> dict[str, Any]:
    """Latency of the trained model as it is (adapter unmerged), of the base (adapter disabled, where the
    model can disable it) and, for ``merge`` (the method YAML's ``mergeable``), with the adapter merged into
    the weights by ``merge_and_unload`` — which changes ``model`` for good, so this runs last.

    ``merged_agreement``: share of records whose merged tokens equal the unmerged ones (1.0 up to rounding).
    """
    prompts = [encoding.prompt_text(r, task_cfg, tokenizer) for r in records[: int(latency_cfg.records)]]
    n, batch = int(latency_cfg.new_tokens), int(latency_cfg.batch_size)

    def measure(variant: Any, how: Generate | None = None) -> tuple[float, list[torch.Tensor]]:
        return fixed_length_ms(variant, tokenizer, prompts, new_tokens=n, batch_size=batch,
                               repeats=int(latency_cfg.repeats), max_prompt_tokens=int(task_cfg.max_length) - n,
                               generate_fn=how)

    out: dict[str, Any] = {"latency_records": len(prompts), "latency_new_tokens": n, "latency_batch_size": batch,
                           "infer_ms_base": None, "infer_ms_merged": None, "merged_agreement": None}
    out["infer_ms_adapter"], tokens = measure(model, generate_fn)
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            out["infer_ms_base"], _ = measure(model)
    if merge:
        merged = model.merge_and_unload()
        out["infer_ms_merged"], merged_tokens = measure(merged)
        same = [bool((a == b).all()) for ta, tb in zip(tokens, merged_tokens) for a, b in zip(ta, tb)]
        out["merged_agreement"] = sum(same) / len(same)
    return out
