"""What every trial needs, whichever engine runs it: its spec, the new epochs of its status.json, its log tail.

A trial's spec is the study's base spec with the trial's values, its budget as `train.num_epochs`, the checkpoint
it continues from, the GPUs its platform hands it, and a batch size capped so that an epoch has a step on every
device (the caps are returned so the report can show them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mal.automl.platforms.base import Platform
from mal.automl.platforms.contract import cap_batch_size, epoch_metrics
from mal.automl.platforms.local import LocalPlatform
from mal.dotted import deep_merge, nest_dotted, set_dotted
from mal.jobfiles import read_status_events


def now() -> str:
    """A UTC timestamp as every study file writes it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def trial_spec(
    base_spec: Mapping[str, Any],
    params: Mapping[str, Any],
    budget: int,
    results_dir: Path,
    resume_checkpoint: str | None,
    devices_per_job: int,
    sample_count: int | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the spec a trial trains with, the batch-size adjustments made to it)."""
    spec = deep_merge(dict(base_spec), nest_dotted(params))
    spec["results_dir"] = str(results_dir)
    set_dotted(spec, "train.num_epochs", int(budget))
    set_dotted(spec, "train.resume_training_checkpoint_path", resume_checkpoint)
    if devices_per_job:
        # The platform hands each trial its own GPU(s) through CUDA_VISIBLE_DEVICES.
        set_dotted(spec, "train.num_gpus", devices_per_job)
        set_dotted(spec, "train.gpu_ids", list(range(devices_per_job)))
    return spec, cap_batch_size(spec, sample_count)


def new_epochs(results_dir: str | Path, action: str, metric: str, after: int) -> dict[int, float]:
    """Epoch -> metric for the epochs past `after` that the trial's status.json has reported."""
    events = read_status_events(results_dir, action)
    return {epoch: value for epoch, value in epoch_metrics(events, metric).items() if epoch > after}


def log_tail(platform: Platform, job_id: str) -> str:
    """The end of a job's error output: what a failure is classified from."""
    if isinstance(platform, LocalPlatform):
        return platform.stderr_tail(job_id)
    return platform.logs(job_id)
