"""One run's phases: validation, the tiny base, the memory estimate, training, evaluation, costs, forgetting, the final
evaluation and reloading what a run saved."""
