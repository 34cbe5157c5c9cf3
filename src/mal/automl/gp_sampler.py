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
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from mal.automl.algorithms.bayesian import gp_proposal, gp_startup_count
from mal.automl.space import SearchSpace


class SharedGPSampler(BaseSampler):
    """Optuna sampler over the `prefix + name` unit keys of `space`. After sampling, `last_proposal` says how the
    point was chosen (initial design or EI)."""

    def __init__(
        self, space: SearchSpace, seed: int, planned_trials: int, direction: Literal["maximize", "minimize"],
        prefix: str,
    ) -> None:  # fmt: skip
        self.space, self.seed, self.prefix = space, seed, prefix
        self.sign = 1.0 if direction == "maximize" else -1.0  # the GP maximises
        self.n_startup = gp_startup_count(planned_trials, len(space))
        self.last_proposal: dict[str, Any] | None = None

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {f"{self.prefix}{name}": FloatDistribution(0.0, 1.0) for name in self.space.names}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        history: list[tuple[dict[str, Any], float]] = []
        pending: list[dict[str, Any]] = []
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        # A trial failed because its worker died is run again as a retry, which stands for it: not a crash.
        retried = {t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None}
        for other in trials:
            params = other.user_attrs.get("params")
            if other.number == trial.number or params is None or other.number in retried:
                continue  # this trial, one whose worker has not yet written its configuration, or a retried one
            if other.state == TrialState.COMPLETE and other.value is not None and math.isfinite(other.value):
                history.append((params, self.sign * other.value))
            elif other.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED):
                history.append((params, -math.inf))
            elif other.state == TrialState.RUNNING:
                pending.append(params)
        vec, self.last_proposal = gp_proposal(self.space, self.seed, trial.number, self.n_startup, history, pending)
        return {f"{self.prefix}{name}": float(u) for name, u in zip(self.space.names, vec)}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # Only reached for a key outside the space (never, for our own workers): draw it reproducibly.
        rng = np.random.default_rng([self.seed, trial.number, sum(map(ord, param_name))])
        low, high = param_distribution.low, param_distribution.high  # type: ignore[attr-defined]
        return float(low + (high - low) * rng.random())

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.last_proposal = None
