"""Bayesian optimisation: a Gaussian process (Matern 5/2, one length scale per key) with expected improvement.

Written with numpy only (Optuna's GPSampler needs scipy, which `mal` does not depend on). Configurations live in
the space's unit cube (`SearchSpace.to_unit`), so log-scaled keys are modelled on their log scale. The first
`max(5, d + 1)` trainings come from a Latin hypercube; after that each ask fits the GP's hyperparameters by
maximising the marginal likelihood (Adam on analytic gradients, weak log-normal priors) and maximises EI over
random and local candidates. Trainings still running are "kriging believers": they enter the GP at its own
predicted mean, so parallel asks spread out instead of repeating each other. Failed trainings count as the
worst result seen, steering the search away from configurations that crash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mal.automl.algorithms._full_fidelity import FullFidelitySearch
from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace

_SQRT5 = math.sqrt(5.0)
_DESIGN_KEY = 7_000_001  # seeds the initial design, apart from the per-rec seeds
_erf = np.frompyfunc(math.erf, 1, 1)


class BayesianSearch(FullFidelitySearch):
    name = "bayesian"
    shared_store = True
    samples_in_store = True

    @classmethod
    def store_sampler(cls, settings: AutoMLSettings, trial_number: int, planned: int, space: SearchSpace) -> Any:
        """The same GP search, refitted from the store with running trials as kriging believers."""
        from mal.automl.algorithms._store_sampler import UNIT_PREFIX
        from mal.automl.algorithms.bayesian_store import SharedGPSampler

        return SharedGPSampler(space, settings.seed, planned, settings.direction, UNIT_PREFIX)

    def n_startup(self) -> int:
        return gp_startup_count(self.max_trials(), len(self.space))

    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        history = [(t.rec.params, self.trial_score(t)) for t in self.trials.values() if t.status != "running"]
        pending = [t.rec.params for t in self.running()]
        vec, info = gp_proposal(self.space, self.seed, rec_id, self.n_startup(), history, pending)
        return self.space.from_unit(vec), info


def gp_startup_count(max_trials: int, dim: int) -> int:
    """Trainings taken from the initial Latin hypercube before the GP proposes."""
    return min(max_trials, max(5, dim + 1))


def gp_proposal(
    space: SearchSpace,
    seed: int,
    number: int,
    n_startup: int,
    history: Sequence[tuple[Mapping[str, Any], float]],
    pending: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The unit-cube point that proposal `number` trains, and how it was chosen.

    history: (params, score) of every finished training in proposal order, the score higher-is-better and -inf
    for a failure; pending: params of the trainings still running. The result depends only on these and on
    (seed, number), which is what lets a shared store's workers (`mal.automl.storage`) run the same search."""
    dim = len(space)
    successes = [score for _, score in history if math.isfinite(score)]
    if number < n_startup or len(successes) < 2:
        design = latin_hypercube(n_startup, dim, np.random.default_rng([seed, _DESIGN_KEY]))
        vec = design[number] if number < len(design) else np.random.default_rng([seed, number]).random(dim)
        return vec, {"source": "initial_design"}
    x = np.array([space.to_unit(params) for params, _ in history])
    scores = np.array([score for _, score in history])
    y = np.where(np.isfinite(scores), scores, min(successes))
    believers = np.array([space.to_unit(params) for params in pending]).reshape(-1, dim)
    gp = GaussianProcess.fit(x, y)
    best_vec, ei = maximize_ei(gp.with_believers(believers), y.max(), x, np.random.default_rng([seed, number]))
    return best_vec, {"source": "gp_ei", "expected_improvement": float(ei)}


def latin_hypercube(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n points in [0, 1]^dim, one per row-stratum in every dimension."""
    strata = np.stack([rng.permutation(n) for _ in range(dim)], axis=1) if dim else np.zeros((n, 0))
    return (strata + rng.random((n, dim))) / n


@dataclass
class GaussianProcess:
    """A fitted zero-mean GP on standardised targets."""

    x: np.ndarray
    y: np.ndarray  # standardised
    length_scales: np.ndarray
    signal: float
    noise: float
    y_mean: float
    y_std: float
    _cached: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, steps: int = 150) -> GaussianProcess:
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        ys = (y - y_mean) / y_std
        dim = x.shape[1]
        best_theta, best_lml = None, -math.inf
        for start in (0.4, 1.0):
            theta = np.concatenate([np.full(dim, math.log(start)), [0.0, math.log(1e-2)]])
            theta, lml = _adam(theta, x, ys, steps)
            if lml > best_lml:
                best_theta, best_lml = theta, lml
        assert best_theta is not None
        return cls(
            x,
            ys,
            np.exp(best_theta[:dim]),
            float(np.exp(best_theta[dim])),
            float(np.exp(best_theta[dim + 1])),
            y_mean,
            y_std,
        )

    def with_believers(self, pending: np.ndarray) -> GaussianProcess:
        """The same GP with pending points added at its own predicted mean (kriging believer)."""
        if len(pending) == 0:
            return self
        mean, _ = self.predict(pending)
        ys = (mean - self.y_mean) / self.y_std
        return GaussianProcess(
            np.vstack([self.x, pending]),
            np.concatenate([self.y, ys]),
            self.length_scales,
            self.signal,
            self.noise,
            self.y_mean,
            self.y_std,
        )

    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation, in the original units."""
        chol_inv, alpha = self._factor()
        k_star = _matern(points, self.x, self.length_scales, self.signal)
        mean = k_star @ alpha
        v = chol_inv @ k_star.T
        var = np.maximum(self.signal - np.sum(v * v, axis=0), 1e-12)
        return mean * self.y_std + self.y_mean, np.sqrt(var) * self.y_std

    def _factor(self) -> tuple[np.ndarray, np.ndarray]:
        """(inverse Cholesky factor of the kernel matrix, its solve of y), computed once per GP: every prediction
        after that is two matrix products, which is what makes maximising EI over thousands of points cheap."""
        if self._cached is None:
            k = _matern(self.x, self.x, self.length_scales, self.signal) + self.noise * np.eye(len(self.x))
            chol_inv = np.linalg.solve(_cholesky(k), np.eye(len(self.x)))
            self._cached = (chol_inv, chol_inv.T @ (chol_inv @ self.y))
        return self._cached


def _matern(a: np.ndarray, b: np.ndarray, length_scales: np.ndarray, signal: float) -> np.ndarray:
    # |a - b|^2 as |a|^2 + |b|^2 - 2 a.b: one matrix product instead of an (n, m, d) array
    sa, sb = a / length_scales, b / length_scales
    squared = np.sum(sa**2, axis=1)[:, None] + np.sum(sb**2, axis=1)[None, :] - 2.0 * sa @ sb.T
    r = np.sqrt(np.maximum(squared, 0.0) + 1e-12)
    return signal * (1 + _SQRT5 * r + 5.0 / 3.0 * r**2) * np.exp(-_SQRT5 * r)


def _cholesky(k: np.ndarray) -> np.ndarray:
    jitter = 1e-9
    for _ in range(8):
        try:
            return np.linalg.cholesky(k + jitter * np.eye(len(k)))
        except np.linalg.LinAlgError:
            jitter *= 10
    return np.linalg.cholesky(k + 1e-1 * np.eye(len(k)))


# Weak log-normal priors (mean, sd of the log) keep the fit sane with few points.
_PRIOR_LENGTH = (math.log(0.4), 1.0)
_PRIOR_SIGNAL = (0.0, 1.0)
_PRIOR_NOISE = (math.log(1e-3), 2.0)
_BOUNDS = (math.log(0.01), math.log(20.0))


def _lml_and_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    dim = x.shape[1]
    ls, signal, noise = np.exp(theta[:dim]), math.exp(theta[dim]), math.exp(theta[dim + 1])
    diff2 = ((x[:, None, :] - x[None, :, :]) / ls) ** 2
    r = np.sqrt(diff2.sum(-1) + 1e-12)
    decay = np.exp(-_SQRT5 * r)
    kf = signal * (1 + _SQRT5 * r + 5.0 / 3.0 * r**2) * decay
    n = len(x)
    k = kf + (noise + 1e-9) * np.eye(n)
    chol = _cholesky(k)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    k_inv = np.linalg.solve(chol.T, np.linalg.solve(chol, np.eye(n)))
    lml = -0.5 * y @ alpha - np.log(np.diag(chol)).sum() - 0.5 * n * math.log(2 * math.pi)
    w = np.outer(alpha, alpha) - k_inv
    a = signal * 5.0 / 3.0 * (1 + _SQRT5 * r) * decay
    grad = np.empty_like(theta)
    grad[:dim] = 0.5 * np.einsum("ij,ijk->k", w * a, diff2)
    grad[dim] = 0.5 * np.sum(w * kf)
    grad[dim + 1] = 0.5 * noise * np.trace(w)
    for index, (mu, sd) in [
        (slice(0, dim), _PRIOR_LENGTH),
        (slice(dim, dim + 1), _PRIOR_SIGNAL),
        (slice(dim + 1, dim + 2), _PRIOR_NOISE),
    ]:
        lml -= 0.5 * float(np.sum(((theta[index] - mu) / sd) ** 2))
        grad[index] -= (theta[index] - mu) / sd**2
    return float(lml), grad


def _adam(theta: np.ndarray, x: np.ndarray, y: np.ndarray, steps: int, lr: float = 0.05) -> tuple[np.ndarray, float]:
    low = np.full_like(theta, _BOUNDS[0])
    high = np.full_like(theta, _BOUNDS[1])
    low[-1], high[-1] = math.log(1e-6), math.log(1.0)  # noise on standardised targets
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    best_theta, best_lml = theta.copy(), -math.inf
    for step in range(1, steps + 1):
        lml, grad = _lml_and_grad(theta, x, y)
        if lml > best_lml:
            best_theta, best_lml = theta.copy(), lml
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        theta = np.clip(theta + lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8), low, high)
    return best_theta, best_lml


def expected_improvement(gp: GaussianProcess, points: np.ndarray, best: float, xi: float = 0.01) -> np.ndarray:
    mean, sd = gp.predict(points)
    improvement = mean - best - xi * gp.y_std
    z = improvement / sd
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(float))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return improvement * cdf + sd * pdf


def maximize_ei(
    gp: GaussianProcess, best: float, observed: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Best EI among uniform candidates and Gaussian steps around the best observed points, then refined."""
    top = observed[np.argsort(-gp.y[: len(observed)])[:5]]
    return maximize_acquisition(lambda points: expected_improvement(gp, points, best), top, rng)


def maximize_acquisition(
    acquisition: Callable[[np.ndarray], np.ndarray], top: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """The unit-cube point with the largest acquisition among 1,000 uniform candidates and 200 Gaussian steps
    around each of the `top` points, refined by three rounds of smaller steps around the best five."""
    dim = top.shape[1]
    local = (top[:, None, :] + 0.1 * rng.standard_normal((len(top), 200, dim))).reshape(-1, dim)
    candidates = np.clip(np.vstack([rng.random((1000, dim)), local]), 0.0, 1.0)
    values = acquisition(candidates)
    for scale in (0.05, 0.02, 0.005):
        seeds = candidates[np.argsort(-values)[:5]]
        steps = np.clip((seeds[:, None, :] + scale * rng.standard_normal((5, 60, dim))).reshape(-1, dim), 0.0, 1.0)
        candidates = np.vstack([seeds, steps])
        values = acquisition(candidates)
    index = int(np.argmax(values))
    return candidates[index], float(values[index])
