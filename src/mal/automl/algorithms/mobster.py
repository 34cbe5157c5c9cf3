"""MOBSTER (Klein et al. 2020): ASHA whose new configurations come from one Gaussian process over (configuration,
budget).

Scheduling is ASHA's (`asha.py`): the same rungs, the same promotions. What changes is where a new configuration
comes from. Every finished training, at whatever budget it stopped, is one observation of a GP whose inputs are
the configuration in the space's unit cube plus the budget as log(budget) / log(full budget), with one Matern 5/2
length scale per input. So a 2-epoch result informs the model about the same configuration at 52 epochs only as
far as the fitted budget length scale says the two agree; budgets are pooled, not kept apart as in BOHB. A new
configuration maximises expected improvement at the full budget over the best posterior mean of any configuration
seen so far (at the full budget). Trainings still running enter at their budget as kriging believers.

The first `max(5, d + 2)` configurations are random. The GP's hyperparameters are fitted when the number of
observations reaches each step of a geometric ladder (x1.5), on at most `_FIT_POINTS` of them drawn with a seed, so
the cost stays flat as the search grows; between steps the last fit is reused on every observation. A fit is made
when the search first reaches its step and is kept; a resumed search replays the recorded asks and tells in order,
so it makes the same fits at the same points and recommends exactly what the original did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mal.automl.algorithms.asha import ASHA
from mal.automl.algorithms.bayesian import GaussianProcess, _adam, expected_improvement, maximize_acquisition
from mal.automl.settings import AutoMLSettings, parse_settings
from mal.automl.space import SearchSpace

DEFAULT_REDUCTION_FACTOR = 2  # unless automl_reduction_factor is set; chosen on LCBench tasks outside TAO's five
_FIT_POINTS = 80
_FIT_STEPS = 100
_LADDER_GROWTH = 1.5
_FIT_KEY = 7_000_003  # seeds the subset a fit uses, apart from the per-rec seeds


class MOBSTER(ASHA):
    name = "mobster"
    shared_store = False  # on a store it runs through the one scheduler: the GP needs every result in one place

    def __init__(
        self, space: SearchSpace, settings: AutoMLSettings | Mapping[str, Any] | None = None, seed: int | None = None
    ) -> None:
        parsed = parse_settings(settings)
        if "automl_reduction_factor" not in parsed.model_fields_set:
            parsed = parsed.model_copy(update={"automl_reduction_factor": DEFAULT_REDUCTION_FACTOR})
        super().__init__(space, parsed, seed)
        self._fits: dict[int, np.ndarray] = {}  # ladder step -> fitted log hyperparameters

    def n_startup(self) -> int:
        return max(5, len(self.space) + 2)

    def _new_config(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        observations = [t for t in self.trials.values() if t.status != "running"]
        successes = [self.trial_score(t) for t in observations if t.status == "done"]
        rng = self._rng(rec_id)
        if len(successes) < self.n_startup():
            return self.space.sample(rng), {"source": "random"}
        x = np.array([self._point(t.rec.params, t.rec.budget) for t in observations])
        scores = np.array([self.trial_score(t) for t in observations])
        y = np.where(np.isfinite(scores), scores, min(successes))
        pending = np.array([self._point(t.rec.params, t.rec.budget) for t in self.running()]).reshape(-1, x.shape[1])
        gp = self._gp(x, y).with_believers(pending)
        configs = np.unique(x[:, :-1], axis=0)
        at_full = np.hstack([configs, np.ones((len(configs), 1))])
        mean, _ = gp.predict(at_full)
        incumbent = float(mean.max())
        top = configs[np.argsort(-mean)[:5]]

        def ei_at_full(points: np.ndarray) -> np.ndarray:
            return expected_improvement(gp, np.hstack([points, np.ones((len(points), 1))]), incumbent)

        vec, ei = maximize_acquisition(ei_at_full, top, rng)
        return self.space.from_unit(vec), {"source": "gp_ei", "expected_improvement": ei}

    def _point(self, params: dict[str, Any], budget: int) -> np.ndarray:
        fidelity = math.log(budget) / math.log(self.budgets[-1]) if self.budgets[-1] > 1 else 1.0
        return np.append(np.asarray(self.space.to_unit(params), dtype=float), fidelity)

    def _gp(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """A GP on every observation, with the hyperparameters of the latest ladder step reached."""
        step = ladder_step(len(x), self.n_startup())
        if step not in self._fits:
            subset_rng = np.random.default_rng([self.seed, _FIT_KEY, step])
            self._fits[step] = fit_hyperparameters(x[:step], y[:step], subset_rng)
        theta = self._fits[step]
        dim = x.shape[1]
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        return GaussianProcess(
            x, (y - y_mean) / y_std, np.exp(theta[:dim]), float(np.exp(theta[dim])), float(np.exp(theta[dim + 1])),
            y_mean, y_std,
        )  # fmt: skip


def ladder_step(n: int, start: int) -> int:
    """The largest step of the ladder start, start x 1.5, ... (rounded up) that is at most n (n below start)."""
    if n < start:
        return n
    step, nxt = start, start
    while nxt <= n:
        step = nxt
        nxt = max(step + 1, math.ceil(step * _LADDER_GROWTH))
    return step


def fit_hyperparameters(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Log length scales, signal and noise maximising the marginal likelihood on at most _FIT_POINTS points."""
    if len(x) > _FIT_POINTS:
        keep = np.sort(rng.choice(len(x), size=_FIT_POINTS, replace=False))
        x, y = x[keep], y[keep]
    ys = (y - y.mean()) / (y.std() or 1.0)
    theta = np.concatenate([np.full(x.shape[1], math.log(0.4)), [0.0, math.log(1e-2)]])
    theta, _ = _adam(theta, x, ys, _FIT_STEPS)
    return theta
