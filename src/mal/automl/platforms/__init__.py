"""Where AutoML jobs run: the `Platform` interface and the local subprocess platform."""

from mal.automl.platforms.base import JobRecord, JobStatus, Platform
from mal.automl.platforms.local import LocalPlatform, detect_gpus

__all__ = ["JobRecord", "JobStatus", "LocalPlatform", "Platform", "detect_gpus"]
