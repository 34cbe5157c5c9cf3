"""`bayesian` on a shared store: the single-process GP search, run by every worker from the trials in the store.

Each worker asks this sampler for its trial's configuration. The sampler reads every trial of the study, hands the
finished ones (failures as -inf) and the running ones (kriging believers) to `gp_proposal`, and returns the unit-cube
point that the single-process `BayesianSearch` would propose from the same history. Both seed each proposal by
(seed, trial number), so a study run one trial at a time proposes exactly what `mal automl run` would.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from mal.automl.algorithms._store_sampler import UnitCubeSampler
from mal.automl.algorithms.bayesian import gp_proposal, gp_startup_count
from mal.automl.space import SearchSpace


class SharedGPSampler(UnitCubeSampler):
    def __init__(
        self, space: SearchSpace, seed: int, planned_trials: int, direction: Literal["maximize", "minimize"],
        prefix: str,
    ) -> None:  # fmt: skip
        super().__init__(space, seed, prefix)
        self.sign = 1.0 if direction == "maximize" else -1.0  # the GP maximises
        self.n_startup = gp_startup_count(planned_trials, len(space))

    def propose(self, study: Study, trial: FrozenTrial) -> tuple[np.ndarray, dict[str, Any]]:
        history: list[tuple[dict[str, Any], float]] = []
        pending: list[dict[str, Any]] = []
        for other in self.other_trials(study, trial):
            params = other.user_attrs["params"]
            if other.state == TrialState.COMPLETE and other.value is not None and math.isfinite(other.value):
                history.append((params, self.sign * other.value))
            elif other.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED):
                history.append((params, -math.inf))
            elif other.state == TrialState.RUNNING:
                pending.append(params)
        return gp_proposal(self.space, self.seed, trial.number, self.n_startup, history, pending)
