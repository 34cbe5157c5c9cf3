"""Stop the job of a trial whose worker died, so it does not hold a GPU or a Slurm allocation while its retry runs.

A worker's jobs outlive it on purpose: a local job runs in its own session and a Slurm job belongs to Slurm. When
another worker declares the trial dead (missed heartbeats) and queues its retry, the old job is orphaned: nobody
will read its result, but it keeps training. `stop_orphaned_job` finds it again from the trial's user attributes
(the same way a restarted runner re-attaches to its jobs) and cancels it:

- a Slurm job (the trial has `platform_job_id`): `scancel`, from any machine that can reach the cluster;
- a local job on this host: SIGTERM to its process group, then SIGKILL, after checking pid and kernel start
  time from the job's `job.pid`, so a recycled pid is never signalled;
- a local job on another host cannot be reached from here; the returned sentence says where it runs.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mal.automl.platforms.base import JobRecord, Platform
from mal.automl.platforms.local import PID_FILE, LocalPlatform
from mal.automl.platforms.slurm import SlurmPlatform


def stop_orphaned_job(attrs: Mapping[str, Any], kill_grace: float = 10.0) -> str:
    """Cancel the job described by a trial's user attributes; returns what happened, as a sentence fragment."""
    job_id, results_dir = attrs.get("job_id"), attrs.get("results_dir")
    if not job_id or not results_dir:
        return "no job had been started for it"
    slurm_id = attrs.get("platform_job_id")
    host = attrs.get("host")
    if not slurm_id and host and host != socket.gethostname():
        return f"its job may still run on {host}; stop the process group in {Path(results_dir) / PID_FILE} there"
    record = JobRecord(
        job_id=str(job_id),
        action=str(attrs.get("action", "train")),
        spec_path=str(Path(results_dir) / "spec.yaml"),
        results_dir=str(results_dir),
        log_dir=str(results_dir),
    )
    platform: Platform
    what = f"its Slurm job {slurm_id}" if slurm_id else "its job"
    try:
        if slurm_id:
            platform = SlurmPlatform(use_gpus=False)
            attached = platform.attach_known_id(record, str(slurm_id))
        else:
            platform = LocalPlatform(command=("{spec}",), gpus=[], kill_grace=kill_grace)
            attached = platform.attach(record)
        if not attached:
            return f"{what} had already ended"
        platform.cancel(record.job_id)
        # scancel returns before Slurm has finished the job; a local group we may not signal is still running.
        if not slurm_id and platform.status(record.job_id).state == "running":
            raise PermissionError("the process group outlived SIGKILL; it may belong to another user")
    except (OSError, RuntimeError) as exc:  # scancel missing on this machine, Slurm unreachable, ...
        hint = f"`scancel {slurm_id}`" if slurm_id else f"the process group in {Path(results_dir) / PID_FILE}"
        return f"{what} could not be stopped from here ({type(exc).__name__}: {exc}); stop it with {hint}"
    return f"{what} was stopped"
