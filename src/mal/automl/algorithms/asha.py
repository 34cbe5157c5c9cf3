"""ASHA (Li et al. 2020): asynchronous successive halving.

Rungs k = 0..K train to R eta^(k-K) resource units (the budgets of Hyperband's most aggressive bracket). Each
time a slot is free: promote a configuration that is in the top 1/eta of its rung's *successful* results and
not yet promoted (highest rung first, continuing from its checkpoint); otherwise start a new configuration on
the bottom rung. Failed trainings are not completions, so they never earn anyone a promotion. Up to
`automl_max_concurrent` trainings run at once.

`automl_max_trials` (default: automl_max_recommendations) configurations are started. After that, the best
not-yet-promoted configurations keep being promoted until `automl_min_top_configs` have reached the full budget.
"""

from __future__ import annotations

import math
from typing import Any

from mal.automl.algorithms.base import Recommendation, SearchAlgorithm, Trial, ranked
from mal.automl.algorithms.hyperband import hyperband_brackets, min_budget
from mal.automl.settings import AutoMLSettings


class ASHA(SearchAlgorithm):
    name = "asha"
    shared_store = True
    samples_in_store = False
    configs_on_store = "automl_max_trials"

    @classmethod
    def store_pruner(cls, settings: AutoMLSettings) -> Any:
        """Optuna's asynchronous successive halving from the smallest Hyperband budget."""
        from optuna.pruners import SuccessiveHalvingPruner

        eta = settings.automl_reduction_factor
        return SuccessiveHalvingPruner(min_resource=min_budget(settings), reduction_factor=eta)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eta = self.settings.automl_reduction_factor
        top_bracket = hyperband_brackets(self.settings.automl_max_epochs, self.eta)[0]
        multiplier = self.settings.epoch_multiplier
        self.budgets = [max(1, round(r * multiplier)) for r in top_bracket.resources]
        self.promoted: set[int] = set()

    def planned_work(self) -> tuple[int, int]:
        """Each rung holds 1/eta of the rung below (the top one at least automl_min_top_configs)."""
        s = self.settings
        configs = s.automl_max_trials or s.automl_max_recommendations
        eta = s.automl_reduction_factor
        recs = epochs = previous = 0
        for rung, budget in enumerate(self.budgets):
            at_rung = max(1, math.ceil(configs / eta**rung))
            if 0 < rung == len(self.budgets) - 1:
                at_rung = max(s.automl_min_top_configs, at_rung)
            recs += at_rung
            epochs += at_rung * (budget - previous)
            previous = budget
        return recs, epochs

    def max_trials(self) -> int:
        return self.settings.automl_max_trials or self.settings.automl_max_recommendations

    def _rung_trials(self, rung: int) -> list[Trial]:
        return [t for t in self.trials.values() if t.rec.info["rung"] == rung]

    def _configs_started(self) -> int:
        return len(self._rung_trials(0))

    def _next_action(self) -> tuple[str, Trial | None] | None:
        """What the next ask does: ("promote", trial), ("new", None) or None; changes nothing."""
        top = len(self.budgets) - 1
        for rung in range(top - 1, -1, -1):
            successes = ranked(self._rung_trials(rung), self)
            for trial in successes[: len(successes) // self.eta]:
                if trial.rec_id not in self.promoted:
                    return "promote", trial
        if self._configs_started() < self.max_trials():
            return "new", None
        at_top = [t for t in self._rung_trials(top) if t.status != "failed"]
        if len(at_top) < self.settings.automl_min_top_configs:
            for rung in range(top - 1, -1, -1):
                waiting = [t for t in ranked(self._rung_trials(rung), self) if t.rec_id not in self.promoted]
                if waiting:
                    return "promote", waiting[0]
        return None

    def is_finished(self) -> bool:
        return not self.running() and self._next_action() is None

    def _ask(self) -> Recommendation | None:
        action = self._next_action()
        if action is None:
            return None
        rec_id = self._next_id()
        kind, parent = action
        if kind == "new":
            params, info = self._new_config(rec_id)
            return Recommendation(rec_id, params, self.budgets[0], None, {"rung": 0, **info})
        assert parent is not None
        self.promoted.add(parent.rec_id)
        rung = parent.rec.info["rung"] + 1
        return Recommendation(
            rec_id,
            dict(parent.rec.params),
            self.budgets[rung],
            parent.rec_id,
            {"rung": rung, "promoted_from": parent.rec_id},
        )

    def _new_config(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(params, info) of a configuration that starts on the bottom rung; subclasses may model the results."""
        return self.space.sample(self._rng(rec_id)), {"source": "random"}

    def checkpoints_in_use(self) -> set[int]:
        top = len(self.budgets) - 1
        return {
            t.rec_id
            for t in self.trials.values()
            if t.status != "failed" and t.rec.info["rung"] < top and t.rec_id not in self.promoted
        }
