"""Learning curves: validation loss and the task's primary metric every ``eval.curve.every`` optimizer steps.

A point is scored on a fixed subset of the validation split (never the test split), with batched greedy
generation sharded over the ranks as the final evaluation is; each point records the steps, training tokens
and training seconds spent, so curves of methods can be read against any of the three budgets. With
``eval.curve.patience`` training stops after that many points without a better primary metric.
"""

from __future__ import annotations

import logging
from typing import Any

from bench.pipeline import evaluate
from bench.taskdata import family, taskcfg

log = logging.getLogger(__name__)


class Curve:
    """The probe ``bench.pipeline.train.fit`` calls: scores the model, keeps the points, says when to stop."""

    def __init__(self, engine: Any, tokenizer: Any, records: list[dict[str, str]], cfg: Any, *, rank: int,
                 world: int, generate_fn: evaluate.Generate | None) -> None:
        self.engine, self.tokenizer, self.records, self.cfg = engine, tokenizer, records, cfg
        self.rank, self.world, self.generate_fn = rank, world, generate_fn
        self.examples = family.of(cfg.model).encode(records, tokenizer, cfg.task)
        self.metric, self.higher = taskcfg.primary(cfg.task)
        self.points: list[dict[str, Any]] = []
        self.patience = cfg.eval.curve.get("patience")

    def score(self) -> dict[str, float]:
        """Validation loss and the primary metric of the model as it is now."""
        model = self.engine.module
        loss = evaluate.eval_loss(model, self.examples, batch_size=int(self.cfg.eval.batch_size),
                                  pad_id=self.tokenizer.pad_token_id, rank=self.rank, world=self.world)
        scores, _ = evaluate.evaluate(model, self.tokenizer, self.records, self.cfg.task,
                                      batch_size=int(self.cfg.eval.batch_size),
                                      max_new_tokens=int(self.cfg.eval.max_new_tokens), rank=self.rank,
                                      world=self.world, generate_fn=self.generate_fn, desc="curve")
        return {"val_loss": loss, self.metric: float(scores[self.metric])}

    def __call__(self, spent: dict[str, float]) -> bool:
        """One point; True when the primary metric has not improved for ``patience`` points."""
        point = {**spent, **self.score()}
        self.points.append(point)
        log.info("curve: step %d, validation loss %.4f, %s %.4f", point["step"], point["val_loss"], self.metric,
                 point[self.metric])
        return self.stale()

    def stale(self) -> bool:
        """Whether the last ``patience`` points brought no better primary metric than the best before them."""
        if not self.patience or len(self.points) <= int(self.patience):
            return False
        values = [p[self.metric] * (1 if self.higher else -1) for p in self.points]
        return max(values[-int(self.patience):]) <= max(values[:-int(self.patience)])

    def record(self) -> dict[str, Any]:
        """What the result JSON keeps: the points and how they were made."""
        return {"every": int(self.cfg.eval.curve.every), "records": len(self.records), "metric": self.metric,
                "higher_is_better": self.higher, "points": self.points}


def for_run(engine: Any, tokenizer: Any, cfg: Any, *, rank: int, world: int,
            generate_fn: evaluate.Generate | None) -> Curve | None:
    """The run's learning-curve probe, None when ``eval.curve.every`` is 0; it needs a validation split."""
    if not int(cfg.eval.curve.every):
        return None
    from bench.core.errors import ConfigError
    from bench.taskdata import splits

    records = splits.load(cfg.task, "validation")[: int(cfg.eval.curve.records)]
    if not records:
        raise ConfigError(f"eval.curve.every={cfg.eval.curve.every} scores the validation split, and task="
                          f"{cfg.task.name} has none: give task.data.validation a file, hold out a share of train "
                          "(task.data.holdout.validation=0.1), or set the generator's n_validation")
    return Curve(engine, tokenizer, records, cfg, rank=rank, world=world, generate_fn=generate_fn)
