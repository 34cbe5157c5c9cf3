"""Random search: independent samples of the space, each trained to the full budget (the control)."""

from __future__ import annotations

from typing import Any

from mal.automl.algorithms._full_fidelity import FullFidelitySearch


class RandomSearch(FullFidelitySearch):
    name = "random"
    shared_store = True
    samples_in_store = False

    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.space.sample(self._rng(rec_id)), {"source": "random"}
