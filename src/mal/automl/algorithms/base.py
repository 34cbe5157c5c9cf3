"""The one interface every search algorithm implements, and the bookkeeping they share.

A runner drives an algorithm with four calls:

    rec = algo.ask()                      # a Recommendation to launch, or None (wait for results / finished)
    stop = algo.report(rec.rec_id, epoch, metric)   # optional intermediate KPI; True = stop the training now
    algo.tell(rec.rec_id, metric)         # final KPI of the training (None or failed=True when it failed)
    algo.is_finished()                    # nothing left to launch and nothing running

A `Recommendation` says which values to train with (`params`, dotted spec keys), up to which epoch (`budget`),
and whether to continue from the checkpoint of an earlier recommendation (`resume_from`, a rec id). When it
resumes, only `budget - <epochs of that checkpoint>` epochs are new.

Resuming after a crash: `state_dict()` is plain JSON (every ask/report/tell in order plus the algorithm's extra
state); `load_state_dict()` on a fresh instance replays it, so the next recommendations are exactly those the
uninterrupted search would have made. Every random choice draws from a generator seeded by (seed, a counter of
that decision), never from a shared stream, which is what makes the replay exact.
"""

from __future__ import annotations

import copy
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from mal.automl.settings import AutoMLSettings, parse_settings
from mal.automl.space import SearchSpace
from mal.errors import CheckpointError

STATE_FORMAT = 1


@dataclass(frozen=True)
class Recommendation:
    """One training to launch.

    rec_id: unique, increasing from 0 in ask order.
    params: dotted spec key -> value (`SearchSpace.nest` turns it into a spec dict).
    budget: train until this epoch (absolute, counted from the start of the first ancestor).
    resume_from: rec id whose last checkpoint to continue from, or None to train from scratch.
    info: algorithm-specific notes (bracket, rung, member, source, ...), JSON-serialisable.
    """

    rec_id: int
    params: dict[str, Any]
    budget: int
    resume_from: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rec_id": self.rec_id,
            "params": dict(self.params),
            "budget": self.budget,
            "resume_from": self.resume_from,
            "info": copy.deepcopy(self.info),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recommendation:
        return cls(
            int(data["rec_id"]),
            dict(data["params"]),
            int(data["budget"]),
            None if data.get("resume_from") is None else int(data["resume_from"]),
            dict(data.get("info", {})),
        )


TrialStatus = Literal["running", "done", "failed"]


@dataclass
class Trial:
    """A recommendation and what became of it."""

    rec: Recommendation
    status: TrialStatus = "running"
    metric: float | None = None
    reports: dict[int, float] = field(default_factory=dict)

    @property
    def rec_id(self) -> int:
        return self.rec.rec_id


class SearchAlgorithm(ABC):
    """Base of every search algorithm; subclasses implement `_ask` and `is_finished`."""

    name: ClassVar[str]
    needs_llm: ClassVar[bool] = False
    """Whether the algorithm asks an LLM endpoint (preflight then checks llm_endpoint and a key)."""
    shared_store: ClassVar[bool] = False
    """Whether workers on many machines can run it through a shared Optuna store (`mal automl worker`)."""
    samples_in_store: ClassVar[bool] = False
    """On a shared store, whether its sampler proposes from the stored trials (else configurations are drawn up
    front, reproducibly from the seed)."""

    # -- on a shared store (`mal automl worker`) -----------------------------------------------------------------

    configs_on_store: ClassVar[str] = "automl_max_recommendations"
    """The setting that says how many configurations a shared store queues (successive-halving searches count
    configurations with automl_max_trials, falling back to automl_max_recommendations)."""

    @classmethod
    def store_trials(cls, settings: AutoMLSettings) -> int:
        """Trials the study queues in the store (retries of dead workers' trials come on top)."""
        return getattr(settings, cls.configs_on_store) or settings.automl_max_recommendations

    @classmethod
    def store_pruner(cls, settings: AutoMLSettings) -> Any:
        """The Optuna pruner the workers ask after every epoch; a full-fidelity search never stops a trial."""
        from optuna.pruners import NopPruner

        return NopPruner()

    @classmethod
    def store_sampler(cls, settings: AutoMLSettings, trial_number: int, planned: int, space: SearchSpace) -> Any:
        """The Optuna sampler a worker proposes trial `trial_number` with. For searches that do not sample in the
        store the values were drawn when the study was created, and this only fills in the unit keys."""
        from optuna.samplers import RandomSampler

        from mal.automl.algorithms._store_sampler import trial_seed

        return RandomSampler(seed=trial_seed(settings, trial_number))

    def __init__(
        self, space: SearchSpace, settings: AutoMLSettings | Mapping[str, Any] | None = None, seed: int | None = None
    ) -> None:
        self.space = space
        self.settings = parse_settings(settings)
        self.seed = self.settings.seed if seed is None else int(seed)
        self.trials: dict[int, Trial] = {}
        self._events: list[dict[str, Any]] = []

    # -- the interface -----------------------------------------------------------------------------------------

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return self.settings.direction

    @property
    def full_budget(self) -> int:
        """Epochs of a full training: automl_max_epochs x epoch_multiplier."""
        return self.settings.automl_max_epochs * self.settings.epoch_multiplier

    def planned_work(self) -> tuple[int, int]:
        """(recommendations, epochs) the search runs if nothing fails: what the launch review estimates from.
        Each algorithm that plans otherwise than max_recommendations full trainings says so here."""
        count = self.settings.automl_max_recommendations
        return count, count * self.full_budget

    def ask(self) -> Recommendation | None:
        """The next training to launch, or None when nothing can start until results arrive (or ever)."""
        if len(self.running()) >= self.settings.automl_max_concurrent or self.is_finished():
            return None
        rec = self._ask()
        if rec is not None:
            self._register(rec)
        return rec

    def report(self, rec_id: int, epoch: int, metric: float) -> bool:
        """An intermediate KPI of a running training; True means stop it now (then `tell` its last metric)."""
        trial = self._running_trial(rec_id, "report")
        value = float(metric)
        if math.isfinite(value):
            trial.reports[int(epoch)] = value
        self._events.append({"op": "report", "rec_id": rec_id, "epoch": int(epoch), "metric": value})
        return self._should_stop(trial, int(epoch), value)

    def tell(self, rec_id: int, metric: float | None, failed: bool = False) -> None:
        """The final KPI of a training. A missing or non-finite metric counts as a failure."""
        trial = self._running_trial(rec_id, "tell")
        value = None if metric is None else float(metric)
        if failed or value is None or not math.isfinite(value):
            trial.status, trial.metric = "failed", None
        else:
            trial.status, trial.metric = "done", value
        failed_now = trial.status == "failed"
        self._events.append({"op": "tell", "rec_id": rec_id, "metric": trial.metric, "failed": failed_now})
        self._on_tell(trial)

    @abstractmethod
    def is_finished(self) -> bool:
        """True when nothing is running and the algorithm will not recommend anything more."""

    def state_dict(self) -> dict[str, Any]:
        """Plain-JSON state; `load_state_dict` on a fresh instance continues exactly where this one is."""
        state = {
            "algorithm": self.name,
            "format": STATE_FORMAT,
            "seed": self.seed,
            "events": copy.deepcopy(self._events),
        }
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore by replaying the recorded asks, reports and tells; only on an instance with no trials yet."""
        if self.trials:
            raise ValueError("load_state_dict needs a fresh algorithm instance (this one already has trials)")
        if state.get("algorithm") != self.name:
            raise CheckpointError(
                f"The saved AutoML state belongs to algorithm {state.get('algorithm')!r}, not {self.name!r}; "
                f"resume with automl_settings.algorithm = {state.get('algorithm')!r}."
            )
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(
                f"The saved AutoML state has format {state.get('format')!r}; this version reads format {STATE_FORMAT}."
            )
        self.seed = int(state["seed"])
        for event in state["events"]:
            op = event["op"]
            if op == "ask":
                recorded = Recommendation.from_dict(event["rec"])
                replayed = self._replay_ask(recorded)
                if replayed is None or not _same_rec(replayed, recorded):
                    raise CheckpointError(
                        f"Replaying the saved {self.name} state gave a different recommendation {recorded.rec_id} "
                        f"(settings, search space or version changed?); resume with the original settings."
                    )
                self._register(recorded)
            elif op == "report":
                self.report(event["rec_id"], event["epoch"], event["metric"])
            elif op == "tell":
                self.tell(event["rec_id"], event["metric"], failed=event["failed"])
        self._load_extra_state(state)

    # -- views a runner may use --------------------------------------------------------------------------------

    def running(self) -> list[Trial]:
        return [trial for trial in self.trials.values() if trial.status == "running"]

    def completed(self) -> list[Trial]:
        return [trial for trial in self.trials.values() if trial.status == "done"]

    def best(self) -> Trial | None:
        """The finished trial with the best metric (ties: the earlier one)."""
        done = self.completed()
        return max(done, key=lambda t: (self.score(t.metric), -t.rec_id)) if done else None

    def checkpoints_in_use(self) -> set[int]:
        """Rec ids whose checkpoints a future recommendation may resume from (keep them; delete the rest)."""
        return set()

    def score(self, metric: float | None) -> float:
        """Larger is better whatever the direction; None (a failure) is the worst."""
        if metric is None:
            return -math.inf
        return float(metric) if self.direction == "maximize" else -float(metric)

    def trial_score(self, trial: Trial) -> float:
        return self.score(trial.metric) if trial.status == "done" else -math.inf

    # -- for subclasses ----------------------------------------------------------------------------------------

    @abstractmethod
    def _ask(self) -> Recommendation | None:
        """Propose the next recommendation with id `self._next_id()`; return None WITHOUT changing any state."""

    def _replay_ask(self, recorded: Recommendation) -> Recommendation | None:
        """Recompute a recorded ask during `load_state_dict`; samplers whose state is just the trial history may
        return `recorded` directly (no model refit, no LLM call)."""
        return self._ask()

    def _should_stop(self, trial: Trial, epoch: int, metric: float) -> bool:
        return False

    def _on_tell(self, trial: Trial) -> None:  # noqa: B027 - optional hook
        """React to a finished trial (promotions, population updates)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what replay cannot recompute (e.g. an LLM brain log)."""

    def _next_id(self) -> int:
        return len(self.trials)

    def _rng(self, *keys: int) -> np.random.Generator:
        """A generator for one decision, seeded by the search seed and the decision's own counters."""
        return np.random.default_rng([self.seed, *(int(k) for k in keys)])

    def _register(self, rec: Recommendation) -> None:
        self.trials[rec.rec_id] = Trial(rec)
        self._events.append({"op": "ask", "rec": rec.to_dict()})

    def _running_trial(self, rec_id: int, op: str) -> Trial:
        trial = self.trials.get(rec_id)
        if trial is None:
            raise ValueError(f"{op}: recommendation {rec_id} was never issued by this {self.name} search")
        if trial.status != "running":
            raise ValueError(f"{op}: recommendation {rec_id} has already finished ({trial.status})")
        return trial


def _same_rec(a: Recommendation, b: Recommendation) -> bool:
    def canon(rec: Recommendation) -> str:
        return json.dumps([rec.rec_id, rec.params, rec.budget, rec.resume_from], sort_keys=True)

    return canon(a) == canon(b)


def ranked(trials: list[Trial], algorithm: SearchAlgorithm) -> list[Trial]:
    """Successful trials, best first (ties: earlier first)."""
    done = [t for t in trials if t.status == "done"]
    return sorted(done, key=lambda t: (-algorithm.trial_score(t), t.rec_id))
