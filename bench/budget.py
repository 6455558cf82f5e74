"""A run's budget: optimizer steps, or the steps that reach a token budget, and what the run spent of it."""

from __future__ import annotations

from typing import Any

from bench import data


def planned_steps(cfg: Any, examples: list[dict[str, Any]], world: int) -> int:
    """``train.steps``, or the fewer steps that reach ``train.budget.tokens`` (the schedule runs over these)."""
    tokens = cfg.train.budget.get("tokens")
    if not tokens:
        return int(cfg.train.steps)
    return data.steps_for_tokens(examples, int(cfg.train.micro_batch_size), seed=int(cfg.seed),
                                 group_by_length=bool(cfg.train.group_by_length), world=world,
                                 grad_accum=int(cfg.train.grad_accum), tokens=int(tokens), cap=int(cfg.train.steps))


def budget_record(cfg: Any, fit: dict[str, Any], *, planned: int) -> dict[str, Any]:
    """The budget the run was given and what it spent of steps, training tokens and training seconds."""
    budget = cfg.train.budget
    kind = "tokens" if budget.get("tokens") else "seconds" if budget.get("seconds") else "steps"
    stopped = "tokens" if kind == "tokens" and fit["stopped_by"] == "steps" and planned < int(cfg.train.steps) \
        else fit["stopped_by"]
    return {"kind": kind, "steps": int(cfg.train.steps), "tokens": budget.get("tokens"),
            "seconds": budget.get("seconds"), "planned_steps": planned, "stopped_by": stopped,
            "spent": {"steps": fit["steps"], "tokens": fit["train_tokens"], "seconds": fit["train_time_s"]}}
