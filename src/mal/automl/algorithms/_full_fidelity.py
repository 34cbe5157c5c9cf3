"""Shared shape of the samplers that train every configuration to the full budget (random, bayesian, tpe, llm)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from mal.automl.algorithms.base import Recommendation, SearchAlgorithm


class FullFidelitySearch(SearchAlgorithm):
    """Propose one configuration per ask, each trained from scratch to `full_budget` epochs."""

    def max_trials(self) -> int:
        return self.settings.automl_max_recommendations

    def planned_work(self) -> tuple[int, int]:
        return self.max_trials(), self.max_trials() * self.full_budget

    def is_finished(self) -> bool:
        return len(self.trials) >= self.max_trials() and not self.running()

    def _ask(self) -> Recommendation | None:
        if len(self.trials) >= self.max_trials():
            return None
        rec_id = self._next_id()
        params, info = self._propose(rec_id)
        return Recommendation(rec_id, params, self.full_budget, None, info)

    def _replay_ask(self, recorded: Recommendation) -> Recommendation | None:
        # The proposal depends only on the trial history and a per-rec seed, both restored by the replay.
        return recorded

    @abstractmethod
    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(params, info) of recommendation `rec_id`."""
