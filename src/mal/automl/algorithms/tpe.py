"""TPE through Optuna's TPESampler (multivariate, constant liar so parallel asks do not repeat each other).

Each ask rebuilds an in-memory Optuna study from the trial history (finished, failed and still running) and
asks it once with a sampler seeded by (seed, rec id). Nothing lives only inside Optuna, so the state survives a
restart by replaying the history, and no SQLite file can be locked by parallel workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mal.automl.algorithms._full_fidelity import FullFidelitySearch
from mal.automl.algorithms.base import Trial
from mal.automl.settings import AutoMLSettings
from mal.automl.space import Param, SearchSpace


class TPESearch(FullFidelitySearch):
    name = "tpe"
    shared_store = True
    samples_in_store = True

    @classmethod
    def store_sampler(cls, settings: AutoMLSettings, trial_number: int, planned: int, space: SearchSpace) -> Any:
        """Optuna's TPE with a constant liar: running trials count as bad, so parallel workers spread out."""
        from mal.automl.algorithms._store_sampler import trial_seed

        startup = min(10, max(2, planned // 3))
        return optuna.samplers.TPESampler(
            seed=trial_seed(settings, trial_number), constant_liar=True, multivariate=True, n_startup_trials=startup
        )

    def n_startup(self) -> int:
        return min(10, max(5, 2 * len(self.space)))

    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        seed = int(self._rng(rec_id).integers(2**31))
        raw = suggest_tpe(self.space, self.trials.values(), self.direction, seed, self.n_startup())
        return from_optuna(self.space, raw), {"source": "tpe", "sampler_params": raw}


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space; choices are indexed, so lists and mixed types are fine."""
    out: dict[str, BaseDistribution] = {}
    for param in space.params:
        if param.kind == "float":
            out[param.name] = FloatDistribution(float(param.low), float(param.high), log=param.log)  # type: ignore[arg-type]
        elif param.kind == "int":
            out[param.name] = IntDistribution(int(param.low), int(param.high), log=param.log)  # type: ignore[arg-type]
        else:
            out[param.name] = CategoricalDistribution(tuple(range(len(param.choices))))
    return out


def to_optuna(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param in space.params:
        value = config[param.name]
        out[param.name] = _index(param, value) if not param.is_numeric else value
    return out


def from_optuna(space: SearchSpace, raw: dict[str, Any]) -> dict[str, Any]:
    config = {p.name: (raw[p.name] if p.is_numeric else p.choices[int(raw[p.name])]) for p in space.params}
    return space.repair(config)


def _index(param: Param, value: Any) -> int:
    return next(i for i, choice in enumerate(param.choices) if choice == value and type(choice) is type(value))


def suggest_tpe(
    space: SearchSpace, trials: Iterable[Trial], direction: str, seed: int, n_startup: int
) -> dict[str, Any]:
    """Raw Optuna params of one TPE suggestion given the history (running trials feed the constant liar)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, constant_liar=True, multivariate=True, n_startup_trials=n_startup
        )
    study = optuna.create_study(direction=direction, sampler=sampler)
    for trial in trials:
        raw = trial.rec.info.get("sampler_params") or to_optuna(space, trial.rec.params)
        state = {"running": TrialState.RUNNING, "done": TrialState.COMPLETE, "failed": TrialState.FAIL}[trial.status]
        study.add_trial(
            create_trial(
                params=raw, distributions=dists, state=state, value=trial.metric if trial.status == "done" else None
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return dict(study.ask(dists).params)
