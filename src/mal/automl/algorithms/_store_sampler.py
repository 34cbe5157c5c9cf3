"""What the store-backed samplers share: Optuna sees each searched key as a float in [0, 1] under a prefix, and a
sampler proposes the whole unit-cube point at once from the other trials in the store.

`mal.automl.algorithms.bayesian_store` (bayesian) and `mal.automl.algorithms.bohb_store` (bohb) subclass
`UnitCubeSampler` and write only
`propose`: the single-process algorithm's choice, made from the trials the store holds.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace

# Optuna sees each searched key as a float in [0, 1] named with this prefix (`SearchSpace.to_unit`).
UNIT_PREFIX = "u:"


def trial_seed(settings: AutoMLSettings, trial_number: int) -> int:
    """A seed per trial: two workers proposing at the same moment never draw the same stream, and the same
    history gives the same proposal."""
    return int(np.random.SeedSequence([settings.seed, trial_number]).generate_state(1)[0])


class UnitCubeSampler(BaseSampler):
    """Optuna sampler over the `prefix + name` unit keys of `space`. After sampling, `last_proposal` says how the
    point was chosen; the worker keeps it as the trial's `proposal` user attribute."""

    def __init__(self, space: SearchSpace, seed: int, prefix: str) -> None:
        self.space, self.seed, self.prefix = space, seed, prefix
        self.last_proposal: dict[str, Any] | None = None

    @abstractmethod
    def propose(self, study: Study, trial: FrozenTrial) -> tuple[np.ndarray, dict[str, Any]]:
        """The unit-cube point for `trial` and how it was chosen."""

    def other_trials(self, study: Study, trial: FrozenTrial) -> Iterator[FrozenTrial]:
        """The study's trials in number order, without `trial`, without those whose worker has not yet written
        their configuration (`params`), and without those failed because their worker died: a retry stands for
        such a trial, so counting it too would count one training twice.

        Read from the storage, not `study.get_trials`: with the Hyperband pruner Optuna hands samplers a study that
        lists only the trials of the new trial's bracket, and BOHB's model pools every bracket's results per budget.
        """
        all_trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        trials = sorted(all_trials, key=lambda t: t.number)
        retried = {t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None}
        for other in trials:
            if other.number == trial.number or other.number in retried or other.user_attrs.get("params") is None:
                continue
            yield other

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {f"{self.prefix}{name}": FloatDistribution(0.0, 1.0) for name in self.space.names}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        vec, self.last_proposal = self.propose(study, trial)
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
