"""What a worker keeps about the trials it runs, and what it says about them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna


@dataclass
class RunningTrial:
    """A trial this worker runs: its Optuna trial, its job and what it has reported so far."""

    trial: optuna.trial.Trial
    number: int
    job_id: str
    results_dir: Path
    params: dict[str, Any]
    started: float = field(default_factory=time.time)
    reported_until: int = 0
    values: dict[int, float] = field(default_factory=dict)
    action: str = "train"
    scheduled: bool = False  # a job a study's scheduler submitted (`platforms.store`), not a trial of our own


@dataclass
class WorkerSummary:
    """What one worker did (its trial numbers by outcome) and which dead workers' trials it failed."""

    worker: str
    completed: list[int] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    stale_failed: list[int] = field(default_factory=list)
    orphans: dict[int, str] = field(default_factory=dict)  # dead trial -> what became of its job


def params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
