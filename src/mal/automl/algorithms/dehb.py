"""DEHB (Awad et al. 2021): differential evolution inside Hyperband brackets, one sub-population per budget.

- The very first bracket is plain Hyperband (random configurations, promotions that resume); its results seed
  the sub-population of every budget.
- Afterwards every slot of a rung at budget b is a DE trial (rand/1/bin): mutant = a + F (b - c) with F =
  `automl_mutation_factor`, drawn from a parent pool; binomial crossover with probability
  `automl_crossover_prob` against a target member of budget b's sub-population (round robin); dimensions that
  leave the unit cube are redrawn at random. The trial trains from scratch at b and replaces its target only
  if it is at least as good (selection happens within budget b, never across budgets).
- Parent pool: on a bracket's bottom rung, the best members of the next-LOWER budget's sub-population (the
  lowest budget uses its own); on higher rungs, the configurations successive halving would have promoted.
  Pools smaller than 3 are topped up with random members of all sub-populations.

Sub-population sizes are the largest number of trainings any bracket runs at that budget (R = 27, eta = 3:
27, 12, 6, 4). Configurations are vectors of the space's unit cube.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mal.automl.algorithms.base import Trial
from mal.automl.algorithms.hyperband import Bracket, Hyperband, Rung


class DEHB(Hyperband):
    name = "dehb"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pop_sizes: dict[int, int] = {}
        for plan in self.plans:
            for n, r in zip(plan.sizes, plan.resources):
                budget = self._epochs(r)
                self.pop_sizes[budget] = max(self.pop_sizes.get(budget, 0), n)
        # budget -> members [{"rec_id", "vec", "score"}]; the state that evolves
        self.subpops: dict[int, list[dict[str, Any]]] = {b: [] for b in self.budgets}
        self._target_cursor: dict[int, int] = dict.fromkeys(self.budgets, 0)

    # -- proposals ---------------------------------------------------------------------------------------------

    def _new_config(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        if bracket.index == 0:
            return self.space.sample(self._rng(rec_id)), {"source": "random"}
        index = self.budgets.index(rung.budget)
        lower = self.subpops[self.budgets[index - 1]] if index > 0 else self.subpops[rung.budget]
        best_lower = sorted(lower, key=lambda m: -m["score"])[: max(rung.size, 3)]
        pool = np.array([m["vec"] for m in best_lower]).reshape(-1, len(self.space))
        return self._de_trial(rung.budget, pool, rec_id)

    def _promote(self, bracket: Bracket, rung: Rung, rec_id: int) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
        if bracket.index == 0:
            return super()._promote(bracket, rung, rec_id)
        pool = np.array([self.space.to_unit(self.trials[p].rec.params) for p in rung.parents])
        params, info = self._de_trial(rung.budget, pool.reshape(-1, len(self.space)), rec_id)
        return params, None, info

    def _de_trial(self, budget: int, pool: np.ndarray, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rng = self._rng(rec_id)
        dim = len(self.space)
        population = self.subpops[budget]
        if len(pool) < 3:
            everyone = np.array([m["vec"] for members in self.subpops.values() for m in members]).reshape(-1, dim)
            extra = (
                everyone[rng.choice(len(everyone), size=min(3 - len(pool), len(everyone)), replace=False)]
                if len(everyone)
                else rng.random((3 - len(pool), dim))
            )
            pool = np.vstack([pool, extra])
            if len(pool) < 3:
                pool = np.vstack([pool, rng.random((3 - len(pool), dim))])
        a, b, c = pool[rng.choice(len(pool), size=3, replace=False)]
        mutant = a + self.settings.automl_mutation_factor * (b - c)
        outside = (mutant < 0) | (mutant > 1)
        mutant = np.where(outside, rng.random(dim), mutant)
        cursor = self._target_cursor[budget]
        target_index = cursor % self.pop_sizes[budget]
        if target_index < len(population):
            target = np.asarray(population[target_index]["vec"])
            cross = rng.random(dim) < self.settings.automl_crossover_prob
            cross[rng.integers(dim)] = True
            trial_vec = np.where(cross, mutant, target)
            target_rec: int | None = population[target_index]["rec_id"]
        else:  # the sub-population is not full yet: the trial joins it
            trial_vec, target_rec = mutant, None
        self._target_cursor[budget] = cursor + 1
        return self.space.from_unit(trial_vec), {
            "source": "de",
            "target_index": target_index,
            "target_rec_id": target_rec,
        }

    # -- selection ---------------------------------------------------------------------------------------------

    def _on_tell(self, trial: Trial) -> None:
        budget = trial.rec.budget
        population = self.subpops[budget]
        member = {
            "rec_id": trial.rec_id,
            "vec": self.space.to_unit(trial.rec.params).tolist(),
            "score": self.trial_score(trial),
        }
        target_index = trial.rec.info.get("target_index")
        if trial.rec.info.get("source") != "de" or trial.rec.info.get("target_rec_id") is None:
            if len(population) < self.pop_sizes[budget] and trial.status == "done":
                population.append(member)
            return
        if member["score"] >= population[target_index]["score"]:
            population[target_index] = member

    def _extra_state(self) -> dict[str, Any]:
        return {"subpopulations": {str(b): [dict(m) for m in members] for b, members in self.subpops.items()}}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        super()._load_extra_state(state)
