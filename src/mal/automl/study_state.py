"""What a local study knows, typed: its phase, every trial's record and the bookkeeping of the search
(`StudyState`, written to state.json as ONE file so trials and search state never disagree after a crash), and the
handles every part of the study works through (`StudyContext`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from mal.automl.algorithms import SearchAlgorithm
from mal.automl.hooks import Hooks
from mal.automl.platforms.base import Platform
from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace
from mal.automl.study_journal import StudyJournal
from mal.automl.tracking import StudyTracker
from mal.automl.trial_record import TrialRecord
from mal.automl.trials import now
from mal.automl.workspace import Workspace

Phase = Literal["new", "baseline", "review", "declined", "search", "stopped", "final", "done"]


@dataclass
class StudyState:
    """state.json. `invalid_cache`: values-hash -> the failure of values that cannot work (not run twice);
    `jobs`: blocking jobs (baseline, final evaluation) a restarted runner re-attaches to; `no_metric_streak`: the
    failures of the last trials in a row without a metric (three of them stop the study)."""

    trials: dict[str, TrialRecord] = field(default_factory=dict)
    completion_order: list[str] = field(default_factory=list)
    invalid_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    no_metric_streak: list[dict[str, Any] | None] = field(default_factory=list)
    phase: Phase = "new"
    stopped_reason: str | None = None
    algorithm: dict[str, Any] | None = None
    updated: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": {job_id: record.to_dict() for job_id, record in self.trials.items()},
            "completion_order": list(self.completion_order),
            "invalid_cache": dict(self.invalid_cache),
            "jobs": dict(self.jobs),
            "no_metric_streak": list(self.no_metric_streak),
            "phase": self.phase,
            "stopped_reason": self.stopped_reason,
            "algorithm": self.algorithm,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyState:
        return cls(
            trials={job_id: TrialRecord.from_dict(r) for job_id, r in (data.get("trials") or {}).items()},
            completion_order=list(data.get("completion_order") or []),
            invalid_cache=dict(data.get("invalid_cache") or {}),
            jobs=dict(data.get("jobs") or {}),
            no_metric_streak=list(data.get("no_metric_streak") or []),
            phase=data.get("phase", "new"),
            stopped_reason=data.get("stopped_reason"),
            algorithm=data.get("algorithm"),
            updated=data.get("updated"),
        )

    def by_rec_id(self, rec_id: int) -> TrialRecord | None:
        return self.trials.get(job_id_of(rec_id))


def job_id_of(rec_id: int) -> str:
    """A local trial's folder and job name."""
    return f"rec_{rec_id:03d}"


@dataclass
class StudyContext:
    """The handles of one running study: its folder, inputs, algorithm, platform, hooks, state and outputs."""

    ws: Workspace
    config: dict[str, Any]
    settings: AutoMLSettings
    platform: Platform
    hooks: Hooks
    space: SearchSpace
    base_spec: dict[str, Any]
    algorithm: SearchAlgorithm
    tracker: StudyTracker
    journal: StudyJournal
    console: Console
    poll_interval: float
    live: bool
    state: StudyState = field(default_factory=StudyState)
    running: set[str] = field(default_factory=set)
    sample_count: int | None = None

    @property
    def action(self) -> str:
        return self.config.get("action", "train")

    @property
    def metric(self) -> str:
        return self.settings.metric

    def save(self) -> None:
        """state.json first (the truth a resume starts from), then the Optuna journal that mirrors it."""
        self.state.algorithm = self.algorithm.state_dict()
        self.state.updated = now()
        self.ws.write_json("state.json", self.state.to_dict())
        self.journal.sync(self.state.trials.values())

    def trial_dir(self, job_id: str) -> Path:
        return self.ws.trial_dir(job_id)
