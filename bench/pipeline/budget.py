"""A run's budget: optimizer steps, or the steps that reach a token budget, and what the run spent of it."""

from __future__ import annotations

from typing import Any

from bench.taskdata import encoding


def planned_steps(train_cfg: Any, examples: list[dict[str, Any]], plan: encoding.BatchPlan) -> int:
    """``train.steps``, or the fewer steps that reach ``train.budget.tokens`` (the schedule runs over these)."""
    tokens = train_cfg.budget.get("tokens")
    if not tokens:
        return int(train_cfg.steps)
    return encoding.steps_for_tokens(examples, plan, tokens=int(tokens), cap=int(train_cfg.steps))


def budget_record(train_cfg: Any, fit: dict[str, Any], *, planned: int) -> dict[str, Any]:
    """The budget the run was given and what it spent of steps, training tokens and training seconds."""
    budget = train_cfg.budget
    kind = "tokens" if budget.get("tokens") else "seconds" if budget.get("seconds") else "steps"
    stopped = "tokens" if kind == "tokens" and fit["stopped_by"] == "steps" and planned < int(train_cfg.steps) \
        else fit["stopped_by"]
    return {"kind": kind, "steps": int(train_cfg.steps), "tokens": budget.get("tokens"),
            "seconds": budget.get("seconds"), "planned_steps": planned, "stopped_by": stopped,
            "spent": {"steps": fit["steps"], "tokens": fit["train_tokens"], "seconds": fit["train_time_s"]}}
