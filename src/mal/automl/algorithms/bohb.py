"""BOHB (Falkner et al. 2018): Hyperband whose new configurations come from a density model per budget.

For each new configuration: with probability 1/3 sample at random (the paper's random fraction, which keeps
the search from collapsing); otherwise use the observations of the LARGEST budget that has at least
`automl_min_points_in_model` successful results and enough of them for both densities (budgets are never
pooled). As in the reference implementation (hpbandster), the best n_good = max(min_points_in_model,
top_n_percent% of n) form the "good" density l(x) and the next n_bad = max(min_points_in_model,
(100 - top_n_percent)% of n) the "bad" density g(x); the two sets never overlap and each needs more points
than the space has dimensions, otherwise that budget has no model yet. `automl_kde_samples` candidates are
drawn from l(x) with its
bandwidth widened 3x, and the one with the largest l(x)/g(x) is trained. Densities are Gaussian product
kernels in the space's unit cube with Scott's-rule bandwidths (choices are kernels over their bin centres).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mal.automl.algorithms.hyperband import Bracket, Hyperband, Rung, full_budget, min_budget, rung_budgets
from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace

RANDOM_FRACTION = 1 / 3
BANDWIDTH_FACTOR = 3.0
MIN_BANDWIDTH = 1e-3


class BOHB(Hyperband):
    name = "bohb"
    shared_store = True
    samples_in_store = True

    @classmethod
    def store_pruner(cls, settings: AutoMLSettings) -> Any:
        """Optuna's Hyperband pruner over the same brackets: workers run BOHB as peers, stopping a
        trial where it stands (asynchronous), where one process pauses it at a rung and resumes the promoted ones."""
        from optuna.pruners import HyperbandPruner

        eta = settings.automl_reduction_factor
        return HyperbandPruner(min_resource=min_budget(settings), max_resource=full_budget(settings),
                               reduction_factor=eta)  # fmt: skip

    @classmethod
    def store_sampler(cls, settings: AutoMLSettings, trial_number: int, planned: int, space: SearchSpace) -> Any:
        """The same BOHB model, built per budget from the epochs every trial in the store has reported."""
        from mal.automl.algorithms._store_sampler import UNIT_PREFIX
        from mal.automl.algorithms.bohb_store import SharedBOHBSampler

        return SharedBOHBSampler(
            space, settings.seed, settings.direction, rung_budgets(settings), settings.automl_min_points_in_model,
            settings.automl_top_n_percent, settings.automl_kde_samples, UNIT_PREFIX,
        )  # fmt: skip

    def _split(self, n: int) -> tuple[int, int]:
        return split_sizes(n, self.settings.automl_min_points_in_model, self.settings.automl_top_n_percent)

    def model_budget(self) -> int | None:
        """The largest budget whose successful observations can fit both densities, or None."""
        counts: dict[int, int] = {}
        for trial in self.completed():
            counts[trial.rec.budget] = counts.get(trial.rec.budget, 0) + 1
        s = self.settings
        return ready_budget(counts, s.automl_min_points_in_model, s.automl_top_n_percent, len(self.space))

    def _new_config(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rng = self._rng(rec_id)
        observations: dict[int, list[tuple[np.ndarray, float]]] = {}
        for trial in self.completed():
            unit = np.asarray(self.space.to_unit(trial.rec.params))
            observations.setdefault(trial.rec.budget, []).append((unit, self.trial_score(trial)))
        s = self.settings
        unit, info = bohb_proposal(
            observations, len(self.space), s.automl_min_points_in_model, s.automl_top_n_percent,
            s.automl_kde_samples, rng,
        )  # fmt: skip
        return (self.space.sample(rng) if unit is None else self.space.from_unit(unit)), info


def split_sizes(n: int, min_points: int, top_n_percent: float) -> tuple[int, int]:
    """(n_good, n_bad) for n observations: hpbandster's sizes, the bad set cut to what is left."""
    n_good = max(min_points, int(top_n_percent * n / 100))
    n_bad = min(max(min_points, int((100 - top_n_percent) * n / 100)), max(0, n - n_good))
    return n_good, n_bad


def ready_budget(counts: Mapping[int, int], min_points: int, top_n_percent: float, dim: int) -> int | None:
    """The largest budget with `counts[budget]` observations enough for both densities, or None."""
    ready = [b for b, n in counts.items() if n >= min_points and min(split_sizes(n, min_points, top_n_percent)) > dim]
    return max(ready) if ready else None


def bohb_proposal(
    observations: Mapping[int, Sequence[tuple[np.ndarray, float]]],
    dim: int,
    min_points: int,
    top_n_percent: float,
    kde_samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """BOHB's choice of a new configuration from (unit-cube point, score) observations per budget, higher scores
    better, in the order they arrived. Returns (None, info) for a random configuration (no budget has a model
    yet, or the random fraction), else the unit-cube point with the best l(x)/g(x). One process (`BOHB`) and a
    shared store (`algorithms.bohb_store`) both call this, so they choose alike from the same observations."""
    budget = ready_budget({b: len(o) for b, o in observations.items()}, min_points, top_n_percent, dim)
    if budget is None or rng.random() < RANDOM_FRACTION:
        return None, {"source": "random", "model_budget": budget}
    x = np.array([point for point, _ in observations[budget]])
    scores = np.array([score for _, score in observations[budget]])
    order = np.argsort(-scores, kind="stable")
    n_good, n_bad = split_sizes(len(scores), min_points, top_n_percent)
    good, bad = x[order[:n_good]], x[order[n_good : n_good + n_bad]]
    candidates = _sample_kde(good, kde_samples, rng)
    ratio = _log_density(candidates, good) - _log_density(candidates, bad)
    best = candidates[int(np.argmax(ratio))]
    return best, {"source": "model", "model_budget": budget, "n_good": n_good, "n_bad": n_bad}


def _bandwidths(points: np.ndarray) -> np.ndarray:
    n, dim = points.shape
    std = points.std(axis=0, ddof=1) if n > 1 else np.full(dim, 0.5)
    return np.maximum(std * n ** (-1.0 / (dim + 4)), MIN_BANDWIDTH)


def _log_density(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    bw = _bandwidths(points)
    z = (x[:, None, :] - points[None, :, :]) / bw
    log_kernel = -0.5 * np.sum(z**2, axis=-1) - np.sum(np.log(bw)) - 0.5 * points.shape[1] * math.log(2 * math.pi)
    peak = log_kernel.max(axis=1, keepdims=True)
    return (peak + np.log(np.mean(np.exp(log_kernel - peak), axis=1, keepdims=True)))[:, 0]


def _sample_kde(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draws from the widened KDE, truncated to the unit cube by redrawing what falls outside."""
    bw = _bandwidths(points) * BANDWIDTH_FACTOR
    centres = points[rng.integers(len(points), size=count)]
    samples = centres + bw * rng.standard_normal(centres.shape)
    for _ in range(20):
        outside = (samples < 0) | (samples > 1)
        if not outside.any():
            break
        redraw = centres + bw * rng.standard_normal(centres.shape)
        samples = np.where(outside, redraw, samples)
    return np.clip(samples, 0.0, 1.0)
