"""Autoresearch: one experiment at a time; the LLM changes the incumbent, and the change is kept or discarded.

The first experiment trains the spec template's values (the baseline). Each later one is the LLM's edit of the
incumbent (the best kept configuration), shown with every earlier experiment and whether it was kept. A result
strictly better than the incumbent is kept and becomes the incumbent; anything else (including a failure) is
discarded. Every decision goes to the brain log.
"""

from __future__ import annotations

from typing import Any

from mal.automl.algorithms.base import Recommendation, Trial
from mal.automl.algorithms.llm import LLMSearch


class AutoResearch(LLMSearch):
    name = "autoresearch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.incumbent: int | None = None
        self.decisions: dict[int, str] = {}

    def _ask(self) -> Recommendation | None:
        if self.running():  # strictly sequential: each experiment builds on the last decision
            return None
        return super()._ask()

    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        if rec_id == 0:
            params = self.space.defaults()
            self.brain_log.append({"event": "proposal", "rec_id": 0, "source": "baseline", "params": params})
            return params, {"source": "baseline"}
        return self._ask_llm(rec_id)

    def _context(self) -> dict[str, Any]:
        context = super()._context()
        if self.incumbent is not None:
            best = self.trials[self.incumbent]
            context["incumbent"] = {"rec_id": best.rec_id, "params": best.rec.params, "metric": best.metric}
        context["decisions"] = {str(k): v for k, v in self.decisions.items()}
        return context

    def _request(self) -> str:
        return (
            "Propose one experiment: change the incumbent's values (one idea at a time) to beat its metric. "
            "Do not repeat a discarded experiment."
        )

    def _on_tell(self, trial: Trial) -> None:
        before = None if self.incumbent is None else self.trials[self.incumbent]
        better = trial.status == "done" and (before is None or self.trial_score(trial) > self.trial_score(before))
        decision = "keep" if better else "discard"
        if better:
            self.incumbent = trial.rec_id
        self.decisions[trial.rec_id] = decision
        self.brain_log.append(
            {
                "event": "decision",
                "rec_id": trial.rec_id,
                "decision": decision,
                "metric": trial.metric,
                "status": trial.status,
                "incumbent_rec_id": None if before is None else before.rec_id,
                "incumbent_metric": None if before is None else before.metric,
            }
        )
