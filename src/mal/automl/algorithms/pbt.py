"""Population-based training (Jaderberg et al. 2017), truncation selection.

`automl_population_size` members train side by side, `automl_eval_interval` epochs per generation, for
`automl_max_generations` generations (generation g trains up to (g + 1) x interval epochs). After each
generation the bottom 20% (and any member that failed) exploit: each copies the checkpoint of a member drawn
at random from the top 20% (`resume_from` = that member's last recommendation) and explores: every number is
multiplied or divided by `automl_perturbation_factor` (choices move to a neighbouring option), or, with
probability 0.2, resampled from the search space. Everyone else continues from their own checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mal.automl.algorithms.base import Recommendation, SearchAlgorithm, Trial

QUANTILE = 0.2
RESAMPLE_PROBABILITY = 0.2
_EXPLOIT_KEY = 9_000_001


@dataclass
class Member:
    index: int
    params: dict[str, Any]
    resume_from: int | None = None  # checkpoint the next generation starts from
    last_rec: int | None = None  # this generation's recommendation
    exploited_from: int | None = None  # member whose checkpoint was copied before this generation
    explored: dict[str, str] | None = None  # key -> "perturb" | "resample"


class PBT(SearchAlgorithm):
    name = "pbt"

    def planned_work(self) -> tuple[int, int]:
        members = self.settings.automl_population_size * self.settings.automl_max_generations
        return members, members * self.settings.automl_eval_interval

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.settings.automl_population_size
        self.members = [Member(i, self.space.sample(self._rng(_EXPLOIT_KEY, 0, i))) for i in range(size)]
        self.generation = 0
        self.exploit_log: list[dict[str, Any]] = []

    def _issued(self) -> set[int]:
        return {t.rec.info["member"] for t in self.trials.values() if t.rec.info["generation"] == self.generation}

    def is_finished(self) -> bool:
        return self.generation >= self.settings.automl_max_generations and not self.running()

    def _ask(self) -> Recommendation | None:
        if self.generation >= self.settings.automl_max_generations:
            return None
        issued = self._issued()
        member = next((m for m in self.members if m.index not in issued), None)
        if member is None:
            return None
        rec_id = self._next_id()
        member.last_rec = rec_id
        info = {
            "member": member.index,
            "generation": self.generation,
            "exploited_from": member.exploited_from,
            "explored": member.explored,
        }
        budget = (self.generation + 1) * self.settings.automl_eval_interval
        return Recommendation(rec_id, dict(member.params), budget, member.resume_from, info)

    def _on_tell(self, trial: Trial) -> None:
        if trial.rec.info["generation"] != self.generation:
            return
        current = [t for t in self.trials.values() if t.rec.info["generation"] == self.generation]
        if len(current) < len(self.members) or any(t.status == "running" for t in current):
            return
        self._exploit_and_explore({t.rec.info["member"]: t for t in current})
        self.generation += 1

    def _exploit_and_explore(self, latest: dict[int, Trial]) -> None:
        rng = self._rng(_EXPLOIT_KEY, 1, self.generation)
        size = len(self.members)
        quota = max(1, math.floor(QUANTILE * size + 1e-9))
        order = sorted(self.members, key=lambda m: (-self.trial_score(latest[m.index]), m.index))
        alive = [m for m in order if latest[m.index].status == "done"]
        top = alive[:quota]
        top_indices = {m.index for m in top}
        losers = {m.index for m in order[size - quota :]} | {
            m.index for m in order if m.index not in {a.index for a in alive}
        }
        for member in self.members:
            member.exploited_from, member.explored = None, None
            if member.index not in losers or member.index in top_indices:
                member.resume_from = member.last_rec
                continue
            if not top:  # nobody succeeded: start this member over from a fresh sample
                member.params = self.space.sample(rng)
                member.resume_from = None
                continue
            donor = top[int(rng.integers(len(top)))]
            member.params, member.explored = self.explore(donor.params, rng)
            member.resume_from = donor.last_rec
            member.exploited_from = donor.index
            self.exploit_log.append(
                {
                    "generation": self.generation,
                    "member": member.index,
                    "copied_member": donor.index,
                    "copied_rec_id": donor.last_rec,
                    "explored": member.explored,
                }
            )

    def explore(self, params: Mapping[str, Any], rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, str]]:
        """Perturb every key by x/÷ the perturbation factor (neighbouring choice), or resample it (p = 0.2)."""
        factor = self.settings.automl_perturbation_factor
        out = dict(params)
        how: dict[str, str] = {}
        for param in self.space.params:
            value = out[param.name]
            if rng.random() < RESAMPLE_PROBABILITY:
                out[param.name] = self.space.sample_param(param.name, rng, out)
                how[param.name] = "resample"
                continue
            up = bool(rng.random() < 0.5)
            if param.is_numeric:
                scaled = value * factor if up else value / factor
                if param.kind == "int" and round(scaled) == value:
                    scaled = value + (1 if up else -1)  # an integer must still move
                out[param.name] = scaled
            else:
                index = next(i for i, c in enumerate(param.choices) if c == value and type(c) is type(value))
                out[param.name] = param.choices[min(max(index + (1 if up else -1), 0), len(param.choices) - 1)]
            how[param.name] = "perturb"
        return self.space.repair(out), how

    def checkpoints_in_use(self) -> set[int]:
        keep = {m.resume_from for m in self.members if m.resume_from is not None}
        keep |= {m.last_rec for m in self.members if m.last_rec is not None}
        return keep

    def _extra_state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "members": [asdict(m) for m in self.members],
            "exploit_log": list(self.exploit_log),
        }
