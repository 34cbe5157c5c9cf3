"""DEHB (Awad et al. 2021): differential evolution inside Hyperband brackets, one sub-population per budget.

Follows the authors' reference implementation (automl/DEHB):

- Every budget b keeps its own sub-population of `pop_size[b]` slots, the largest number of trainings any
  bracket runs at b (R = 27, eta = 3: 27, 12, 6 and 4). Slots start as random vectors of the space's unit cube
  that have not been evaluated yet.
- Every training at budget b is aimed at the next slot of b's sub-population (round robin, the DE "target").
  When it finishes, it replaces that slot if the slot was never evaluated or if it is at least as good
  (selection happens only within budget b).
- The first Hyperband iteration (brackets s = s_max..0) promotes like Hyperband on its higher rungs: the top
  1/eta continue from their own checkpoint. Its very first rung trains the random initial members.
- Every other training is a DE trial (rand/1/bin) trained from scratch at b: mutant = a + F (b - c) with
  F = `automl_mutation_factor`, dimensions that leave the unit cube are redrawn at random, then binomial
  crossover with probability `automl_crossover_prob` (and at least one dimension) against the target slot.
  a, b, c come from the parent pool: on a bracket's first rung the best `n` members of b's own sub-population,
  on a higher rung the best `n` members of the LOWER rung's budget (n = the rung's size). A pool smaller than
  3 is topped up with members drawn from all sub-populations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mal.automl.algorithms.base import Trial
from mal.automl.algorithms.hyperband import Bracket, Hyperband, Rung

_INIT_KEY = 7_000_003
MIN_POOL = 3  # rand/1 needs three distinct parents


class DEHB(Hyperband):
    name = "dehb"
    shared_store = False
    samples_in_store = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pop_sizes: dict[int, int] = {}
        for plan in self.plans:
            for n, r in zip(plan.sizes, plan.resources):
                budget = self._epochs(r)
                self.pop_sizes[budget] = max(self.pop_sizes.get(budget, 0), n)
        # budget -> slots {"rec_id": int | None, "vec": [...], "score": float | None}; None = not evaluated yet
        self.subpops: dict[int, list[dict[str, Any]]] = {}
        for index, budget in enumerate(self.budgets):
            rng = self._rng(_INIT_KEY, index)
            self.subpops[budget] = [
                {"rec_id": None, "vec": self.space.to_unit(self.space.sample(rng)).tolist(), "score": None}
                for _ in range(self.pop_sizes[budget])
            ]
        self._target_cursor: dict[int, int] = dict.fromkeys(self.budgets, 0)

    def _first_iteration(self, bracket: Bracket) -> bool:
        return bracket.index < len(self.plans)

    def _next_target(self, budget: int) -> int:
        index = self._target_cursor[budget] % self.pop_sizes[budget]
        self._target_cursor[budget] += 1
        return index

    # -- proposals ---------------------------------------------------------------------------------------------

    def _new_config(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        target = self._next_target(rung.budget)
        if bracket.index == 0:  # the initial random members are evaluated as they are
            vec = np.asarray(self.subpops[rung.budget][target]["vec"])
            return self.space.from_unit(vec), {"source": "random", "target_index": target}
        return self._de_trial(rung.budget, self._parent_pool(rung.budget, rung.size), target, rec_id)

    def _promote(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
        target = self._next_target(rung.budget)
        if self._first_iteration(bracket):
            params, resume_from, info = super()._promote(bracket, rung, rec_id)
            return params, resume_from, {**info, "source": "promotion", "target_index": target}
        lower = bracket.rungs[bracket.level - 1].budget
        params, info = self._de_trial(rung.budget, self._parent_pool(lower, rung.size), target, rec_id)
        return params, None, info

    def _parent_pool(self, budget: int, size: int) -> np.ndarray:
        """The best `size` members of a sub-population (evaluated ones first, best first)."""
        members = self.subpops[budget]
        order = sorted(
            range(len(members)),
            key=lambda i: (members[i]["score"] is None, -(members[i]["score"] or 0.0), i),
        )
        return np.array([members[i]["vec"] for i in order[:size]]).reshape(-1, len(self.space))

    def _de_trial(
        self, budget: int, pool: np.ndarray, target_index: int, rec_id: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        rng = self._rng(rec_id)
        dim = len(self.space)
        if len(pool) < MIN_POOL:
            everyone = np.array([m["vec"] for members in self.subpops.values() for m in members])
            extra = everyone[rng.choice(len(everyone), size=MIN_POOL - len(pool), replace=False)]
            pool = np.vstack([pool, extra])
        a, b, c = pool[rng.choice(len(pool), size=3, replace=False)]
        mutant = a + self.settings.automl_mutation_factor * (b - c)
        outside = (mutant < 0) | (mutant > 1)
        mutant = np.where(outside, rng.random(dim), mutant)
        slot = self.subpops[budget][target_index]
        cross = rng.random(dim) < self.settings.automl_crossover_prob
        cross[rng.integers(dim)] = True
        trial_vec = np.where(cross, mutant, np.asarray(slot["vec"]))
        return self.space.from_unit(trial_vec), {
            "source": "de",
            "target_index": target_index,
            "target_rec_id": slot["rec_id"],
        }

    # -- selection ---------------------------------------------------------------------------------------------

    def _on_tell(self, trial: Trial) -> None:
        target_index = trial.rec.info.get("target_index")
        if target_index is None or trial.status != "done":
            return  # a failure never enters a sub-population
        slot = self.subpops[trial.rec.budget][target_index]
        score = self.trial_score(trial)
        if slot["score"] is None or score >= slot["score"]:
            slot.update(rec_id=trial.rec_id, vec=self.space.to_unit(trial.rec.params).tolist(), score=score)

    def checkpoints_in_use(self) -> set[int]:
        # only the first Hyperband iteration promotes from checkpoints; DE trials always train from scratch
        keep = super().checkpoints_in_use()
        return {
            rec_id for rec_id in keep if self._first_iteration(self.brackets[self.trials[rec_id].rec.info["bracket"]])
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"subpopulations": {str(b): [dict(m) for m in members] for b, members in self.subpops.items()}}
