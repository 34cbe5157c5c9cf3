"""`bohb` on a shared store: BOHB's per-budget density model, run by every worker from the trials in the store.

On a store, successive halving is Optuna's Hyperband pruner: each trial trains towards the full budget and reports
every validated epoch, and the pruner stops it at a rung. So a trial's observation at budget b is the value it
reported at the first validated epoch in [b, next budget). The budgets are the pruner's rungs (the smallest
Hyperband budget times η^k) and the full budget. From those observations `bohb_proposal` makes the choice the
single-process `BOHB` makes: a model on the largest budget with enough results for both densities, l(x)/g(x)
maximised over KDE draws, and a random third. Pruned and still-running trials count at the budgets they have
passed; a trial that failed counts at the budgets it reported before it failed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial

from mal.automl.algorithms._store_sampler import UnitCubeSampler
from mal.automl.algorithms.bohb import bohb_proposal
from mal.automl.space import SearchSpace


def observation_at_budgets(values: Mapping[int, float], budgets: Sequence[int]) -> dict[int, float]:
    """budget -> the value reported at the first step in [budget, next budget) (the last budget: at or after it);
    a budget whose span holds no reported step has no observation. Non-finite values are not observations."""
    steps = sorted(step for step, value in values.items() if math.isfinite(value))
    found = {}
    for i, budget in enumerate(budgets):
        at = bisect.bisect_left(steps, budget)
        if at < len(steps) and (i + 1 == len(budgets) or steps[at] < budgets[i + 1]):
            found[budget] = values[steps[at]]
    return found


class SharedBOHBSampler(UnitCubeSampler):
    def __init__(
        self, space: SearchSpace, seed: int, direction: Literal["maximize", "minimize"], budgets: Sequence[int],
        min_points: int, top_n_percent: float, kde_samples: int, prefix: str,
    ) -> None:  # fmt: skip
        super().__init__(space, seed, prefix)
        self.sign = 1.0 if direction == "maximize" else -1.0  # bohb_proposal ranks higher scores first
        self.budgets = sorted(set(budgets))
        self.min_points, self.top_n_percent, self.kde_samples = min_points, top_n_percent, kde_samples

    def propose(self, study: Study, trial: FrozenTrial) -> tuple[np.ndarray, dict[str, Any]]:
        observations: dict[int, list[tuple[np.ndarray, float]]] = {}
        for other in self.other_trials(study, trial):
            unit = np.asarray(self.space.to_unit(other.user_attrs["params"]))
            for budget, value in observation_at_budgets(other.intermediate_values, self.budgets).items():
                observations.setdefault(budget, []).append((unit, self.sign * value))
        rng = np.random.default_rng([self.seed, trial.number])
        vec, info = bohb_proposal(
            observations, len(self.space), self.min_points, self.top_n_percent, self.kde_samples, rng
        )
        if vec is None:
            vec = np.asarray(self.space.to_unit(self.space.sample(rng)))
        return vec, info
