"""Where AutoML jobs run: the `Platform` interface, the local subprocess platform and the Slurm platform."""

from typing import Any

from mal.automl.platforms.base import JobRecord, JobStatus, Platform
from mal.automl.platforms.local import LocalPlatform, detect_gpus

__all__ = ["JobRecord", "JobStatus", "LocalPlatform", "Platform", "SlurmPlatform", "detect_gpus"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the local job wrapper imports this package and must start in milliseconds.
    if name == "SlurmPlatform":
        from mal.automl.platforms.slurm import SlurmPlatform

        return SlurmPlatform
    raise AttributeError(f"module 'mal.automl.platforms' has no attribute {name!r}")
