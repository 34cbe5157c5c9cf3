"""Hybrid: LLM proposals alternate with TPE proposals; both learn from every result.

Even rec ids come from the LLM (see `llm.py`), odd ones from TPE, whose model includes the LLM's trials, so
each side builds on the other's findings. The brain log records the source of every proposal.
"""

from __future__ import annotations

from typing import Any

from mal.automl.algorithms.llm import LLMSearch
from mal.automl.algorithms.tpe import from_optuna, suggest_tpe


class HybridSearch(LLMSearch):
    name = "hybrid"

    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        if rec_id % 2 == 0:
            return self._ask_llm(rec_id)
        seed = int(self._rng(rec_id).integers(2**31))
        n_startup = min(10, max(5, 2 * len(self.space)))
        raw = suggest_tpe(self.space, self.trials.values(), self.direction, seed, n_startup)
        params = from_optuna(self.space, raw)
        self.brain_log.append({"event": "proposal", "rec_id": rec_id, "source": "tpe", "params": params})
        return params, {"source": "tpe", "sampler_params": raw}
