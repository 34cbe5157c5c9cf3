"""The one record of a trial, whichever engine ran it: a local study (kept in state.json) or a worker of a shared
study (kept in the Optuna store's user attributes), and the report entry both are shown as.

A trial is one training of one recommendation: which values (`params`), to which epoch (`budget`), from whose
checkpoint (`resume_from`), what it reported per epoch (`epochs`), how it ended (`state`, `metric`, `failure`)
and where its files are (`results_dir`, `checkpoint`). Fields a local study does not use (worker, host, retry_of)
stay None, and the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

TrialState = Literal["pending", "running", "interrupted", "done", "stopped", "failed"]
FINAL_STATES: tuple[str, ...] = ("done", "stopped", "failed")

# Fields shown in a report entry's `info` next to the algorithm's own notes (bracket, rung, member, ...).
_WHERE_FIELDS = ("worker", "host", "platform", "platform_job_id", "retry_of")


@dataclass
class TrialRecord:
    job_id: str
    rec_id: int
    params: dict[str, Any]
    budget: int
    results_dir: str
    resume_from: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state: TrialState = "pending"
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    epochs: dict[int, float] = field(default_factory=dict)
    reported_until: int = 0
    metric: float | None = None
    failure: dict[str, Any] | None = None
    cached: bool = False
    checkpoint: str | None = None
    latest_checkpoint: str | None = None
    resume_checkpoint: str | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    attempts: int = 0
    job: dict[str, Any] | None = None
    spec_params: dict[str, Any] | None = None
    params_hash: str | None = None
    launched_at: float | None = None
    checkpoints_deleted: bool = False
    worker: str | None = None
    host: str | None = None
    platform: str | None = None
    platform_job_id: str | None = None
    retry_of: int | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def add_epoch(self, epoch: int, value: float) -> None:
        self.epochs[int(epoch)] = float(value)
        self.reported_until = max(self.reported_until, int(epoch))

    # -- state.json ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["epochs"] = {str(epoch): value for epoch, value in sorted(self.epochs.items())}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["epochs"] = {int(epoch): float(value) for epoch, value in (data.get("epochs") or {}).items()}
        return cls(**values)

    # -- the report ------------------------------------------------------------------------------------------------

    def entry(self) -> dict[str, Any]:
        """What `mal automl status` and the report show of the trial (the same keys for both engines)."""
        failure = self.failure or {}
        where = {name: getattr(self, name) for name in _WHERE_FIELDS if getattr(self, name) is not None}
        return {
            "rec_id": self.rec_id,
            "job_id": self.job_id,
            "params": self.params,
            "metric": self.metric,
            "status": self.state,
            "failure_reason": failure.get("reason"),
            "failure_class": failure.get("category"),
            "adjustments": self.adjustments,
            "budget": self.budget,
            "resume_from": self.resume_from,
            "info": {**self.info, **where},
            "epochs": sorted([epoch, value] for epoch, value in self.epochs.items()),
            "started": self.started,
            "finished": self.finished,
            "seconds": self.seconds,
            "checkpoint": self.checkpoint,
            "results_dir": self.results_dir,
            "attempts": self.attempts,
            "cached": self.cached,
            "retry_of": self.retry_of,
        }


def best_of(values: Mapping[Any, float | None], direction: str) -> float | None:
    """The best finite value (max or min by `direction`); None when there is none."""
    finite = [float(v) for v in values.values() if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return max(finite) if direction == "maximize" else min(finite)


def best_entry(
    history: list[dict[str, Any]], direction: str, counted: tuple[str, ...] = ("done", "stopped")
) -> dict[str, Any] | None:
    """The report entry with the best metric (ties: the earlier trial) among trials whose status is `counted`.

    A local search tells its algorithm the best epoch of a trial it stopped, so stopped trials count there; a
    shared store's pruned trials have no value in Optuna and only complete ones count."""
    sign = 1.0 if direction == "maximize" else -1.0
    scored = [h for h in history if h["metric"] is not None and h["status"] in counted]
    return max(scored, key=lambda h: (sign * h["metric"], -h["rec_id"])) if scored else None
