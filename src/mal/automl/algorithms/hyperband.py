"""Hyperband (Li et al. 2018): successive halving in every bracket s = s_max..0, as in the paper.

With R = automl_max_epochs and eta = automl_reduction_factor, s_max = floor(log_eta R); bracket s starts
n = ceil((s_max + 1) / (s + 1) * eta^s) configurations at r = R eta^-s resource units and keeps the top 1/eta
each round (R = 27, eta = 3: 27, 12, 6 and 4 configurations starting at 1, 3, 9 and 27 units). A unit is
`epoch_multiplier` epochs. A promoted configuration continues from its own checkpoint (`resume_from`), so it
trains only the extra epochs. Failed trainings are never promoted.

One pass over the brackets is the whole search unless `automl_max_trials` is set; then brackets repeat until
that many configurations have started. Subclasses (BOHB, DEHB) change how configurations are proposed through
`_new_config` and `_promote`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mal.automl.algorithms.base import Recommendation, SearchAlgorithm, Trial, ranked
from mal.automl.settings import AutoMLSettings


@dataclass(frozen=True)
class BracketPlan:
    """Bracket s: (configurations, resource units) per successive-halving round."""

    s: int
    sizes: tuple[int, ...]
    resources: tuple[float, ...]


def max_bracket(max_resource: float, eta: int) -> int:
    """s_max = floor(log_eta R), computed without floating-point surprises at exact powers."""
    s = 0
    while eta ** (s + 1) <= max_resource:
        s += 1
    return s


def hyperband_brackets(max_resource: float, eta: int) -> list[BracketPlan]:
    """The paper's brackets s = s_max..0."""
    s_max = max_bracket(max_resource, eta)
    plans = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s - 1e-9)
        sizes = tuple(math.floor(n * eta ** (-i) + 1e-9) for i in range(s + 1))
        resources = tuple(max_resource * eta ** (i - s) for i in range(s + 1))
        plans.append(BracketPlan(s, sizes, resources))
    return plans


def full_budget(settings: AutoMLSettings) -> int:
    return settings.automl_max_epochs * settings.epoch_multiplier


def min_budget(settings: AutoMLSettings) -> int:
    """The first rung of successive halving: the smallest budget of Hyperband's most aggressive bracket."""
    first = hyperband_brackets(settings.automl_max_epochs, settings.automl_reduction_factor)[0].resources[0]
    return max(1, round(first * settings.epoch_multiplier))


def rung_budgets(settings: AutoMLSettings) -> list[int]:
    """The budgets at which the pruners judge a trial (the smallest Hyperband budget times eta^k), then the full
    budget: where `bohb` on a store keeps its per-budget observations."""
    budgets, rung = [], min_budget(settings)
    while rung < full_budget(settings):
        budgets.append(rung)
        rung *= settings.automl_reduction_factor
    return [*budgets, full_budget(settings)]


@dataclass
class Rung:
    budget: int
    size: int
    rec_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # ranked rec ids of the previous rung to promote


@dataclass
class Bracket:
    index: int
    s: int
    rungs: list[Rung]
    level: int = 0
    done: bool = False


class Hyperband(SearchAlgorithm):
    name = "hyperband"
    # Pausing at a rung and resuming promoted trials needs one scheduler that sees every result.
    shared_store = False
    samples_in_store = False
    configs_on_store = "automl_max_trials"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eta = self.settings.automl_reduction_factor
        self.plans = hyperband_brackets(self.settings.automl_max_epochs, self.eta)
        self.budgets = sorted({self._epochs(r) for plan in self.plans for r in plan.resources})
        self.brackets: list[Bracket] = []
        self.configs_started = 0

    def planned_work(self) -> tuple[int, int]:
        """One pass over the brackets (more passes when automl_max_trials asks for more configurations)."""
        recs, epochs, configs = 0, 0, 0
        for plan in self.plans:
            previous = 0.0
            configs += plan.sizes[0]
            for size, resource in zip(plan.sizes, plan.resources):
                recs += size
                epochs += size * round((resource - previous) * self.settings.epoch_multiplier)
                previous = resource
        max_trials = self.settings.automl_max_trials
        passes = 1.0 if max_trials is None else max_trials / max(1, configs)
        return math.ceil(recs * passes), math.ceil(epochs * passes)

    # -- bracket bookkeeping -----------------------------------------------------------------------------------

    def _epochs(self, resource: float) -> int:
        return max(1, round(resource * self.settings.epoch_multiplier))

    def _max_configs(self) -> int | None:
        return self.settings.automl_max_trials

    def _may_start_config(self) -> bool:
        limit = self._max_configs()
        return limit is None or self.configs_started < limit

    def _may_open_bracket(self) -> bool:
        if self._max_configs() is None:
            return len(self.brackets) < len(self.plans)
        return self._may_start_config()

    def _open_bracket(self) -> None:
        plan = self.plans[len(self.brackets) % len(self.plans)]
        rungs = [Rung(self._epochs(r), n) for n, r in zip(plan.sizes, plan.resources)]
        self.brackets.append(Bracket(len(self.brackets), plan.s, rungs))

    def _sync(self) -> None:
        """Advance rungs and brackets as far as the finished results allow (deterministic, idempotent)."""
        while True:
            bracket = self.brackets[-1] if self.brackets else None
            if bracket is None or bracket.done:
                if not self._may_open_bracket():
                    return
                self._open_bracket()
                continue
            rung = bracket.rungs[bracket.level]
            if bracket.level == 0 and len(rung.rec_ids) < rung.size and not self._may_start_config():
                rung.size = len(rung.rec_ids)
            if len(rung.rec_ids) < rung.size:
                return
            if any(self.trials[rec_id].status == "running" for rec_id in rung.rec_ids):
                return
            if bracket.level == len(bracket.rungs) - 1 or not rung.rec_ids:
                bracket.done = True
                continue
            successes = ranked([self.trials[rec_id] for rec_id in rung.rec_ids], self)
            following = bracket.rungs[bracket.level + 1]
            following.size = min(following.size, max(1, len(rung.rec_ids) // self.eta), len(successes))
            following.parents = [trial.rec_id for trial in successes[: following.size]]
            bracket.level += 1
            if following.size == 0:
                bracket.done = True

    # -- the interface -----------------------------------------------------------------------------------------

    def is_finished(self) -> bool:
        self._sync()
        bracket = self.brackets[-1] if self.brackets else None
        return (bracket is None or bracket.done) and not self._may_open_bracket() and not self.running()

    def _ask(self) -> Recommendation | None:
        self._sync()
        if not self.brackets or self.brackets[-1].done:
            return None
        bracket = self.brackets[-1]
        rung = bracket.rungs[bracket.level]
        if len(rung.rec_ids) >= rung.size:
            return None
        rec_id = self._next_id()
        info: dict[str, Any] = {"bracket": bracket.index, "s": bracket.s, "rung": bracket.level}
        if bracket.level == 0:
            params, extra = self._new_config(bracket, rung, rec_id)
            resume_from = None
            self.configs_started += 1
        else:
            params, resume_from, extra = self._promote(bracket, rung, rec_id)
        info.update(extra)
        rung.rec_ids.append(rec_id)
        return Recommendation(rec_id, params, rung.budget, resume_from, info)

    def checkpoints_in_use(self) -> set[int]:
        keep: set[int] = set()
        for bracket in self.brackets:
            if bracket.done:
                continue
            rung = bracket.rungs[bracket.level]
            keep.update(rung.parents[len(rung.rec_ids) :])
            if bracket.level < len(bracket.rungs) - 1:
                keep.update(t for t in rung.rec_ids if self.trials[t].status != "failed")
        return keep

    # -- hooks -------------------------------------------------------------------------------------------------

    def _new_config(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """A configuration for the bottom rung of a bracket."""
        return self.space.sample(self._rng(rec_id)), {"source": "random"}

    def _promote(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
        """(params, resume_from, info) for the next slot of a higher rung: the next-best parent continues."""
        parent: Trial = self.trials[rung.parents[len(rung.rec_ids)]]
        return dict(parent.rec.params), parent.rec_id, {"promoted_from": parent.rec_id}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._sync()
