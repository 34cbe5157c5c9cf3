"""What the runner needs from a place that runs jobs: submit, status, logs, cancel, results dir, re-attach.

A job is one `mal <action> -e <spec>` run obeying the job contract (docs/ARCHITECTURE.md): it writes under
its `results_dir/<action>/`, and its exit code says what happened (0 success, 2 the user's input, 1 anything
else). A platform only starts and watches processes; reading status.json and deciding what a result means is
the runner's job.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mal.errors import SpecError

JobState = Literal["running", "exited", "cancelled", "lost"]


@dataclass
class JobStatus:
    """Where a job is. `exit_code` is set once it has exited (negative: killed by that signal)."""

    state: JobState
    exit_code: int | None = None


@dataclass
class JobRecord:
    """What a platform needs to find a job again after the runner itself restarted (plain JSON)."""

    job_id: str
    action: str
    spec_path: str
    results_dir: str
    log_dir: str
    pid: int | None = None
    start_ticks: int | None = None
    devices: list[str] = field(default_factory=list)
    started: float | None = None

    @classmethod
    def submitted(
        cls,
        job_id: str,
        action: str,
        spec_path: str | Path,
        results_dir: str | Path,
        log_dir: str | Path,
        **details: Any,
    ) -> JobRecord:
        """The record of a job submitted just now (paths as text, `started` = now)."""
        return cls(job_id, action, str(spec_path), str(results_dir), str(log_dir), started=time.time(), **details)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


class Platform(ABC):
    """Runs contract jobs. `capacity` jobs may run at once; `devices_per_job` is how many devices each sees."""

    # make_platform's arguments when it built this platform (a study saves them to build it again on resume).
    recipe: dict[str, Any] | None = None

    @property
    @abstractmethod
    def capacity(self) -> int:
        """Jobs that may run at the same time."""

    @property
    def devices_per_job(self) -> int:
        """Accelerators each job gets (0: CPU only)."""
        return 0

    @abstractmethod
    def submit(
        self, job_id: str, action: str, spec_path: str | Path, results_dir: str | Path, extra_args: Sequence[str] = ()
    ) -> JobRecord:
        """Start `mal <action> -e spec_path [extra_args]`; logs go beside the spec."""

    @abstractmethod
    def status(self, job_id: str) -> JobStatus:
        """The job's state now."""

    @abstractmethod
    def logs(self, job_id: str, tail_lines: int = 50) -> str:
        """The last lines of the job's output (stdout then stderr)."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop the job and everything it started; a no-op when it already ended."""

    @abstractmethod
    def attach(self, record: JobRecord) -> bool:
        """Watch a job started by an earlier runner; False when it is gone (then the runner re-runs it)."""

    def forget(self, job_id: str) -> None:  # noqa: B027 - optional hook, nothing to drop by default
        """Drop the platform's bookkeeping of a finished job."""

    def wait(self, job_ids: Sequence[str], timeout: float) -> None:
        """Return after `timeout` seconds, or earlier once one of `job_ids` has ended (platforms that can tell)."""
        time.sleep(timeout)

    def results_dir(self, job_id: str) -> Path:
        """Where the job writes (results_dir of its spec)."""
        return Path(self.record(job_id).results_dir)

    @abstractmethod
    def record(self, job_id: str) -> JobRecord:
        """The persisted description of a job this platform knows."""

    def describe(self) -> dict[str, Any]:
        """For the launch review."""
        return {"platform": type(self).__name__, "capacity": self.capacity, "devices_per_job": self.devices_per_job}


def command_template(command: Sequence[str] | str) -> list[str]:
    """The study's `command` as a list of arguments; it must say where the trial's spec file goes."""
    parts = [str(part) for part in ([command] if isinstance(command, str) else command)]
    if "{spec}" not in parts:
        raise SpecError(
            f"command {parts} has no '{{spec}}' argument, so a trial could not be given its spec file; write it as "
            f"a list with '{{spec}}' where the file goes, e.g. [python, -m, mal, '{{action}}', -e, '{{spec}}']."
        )
    return parts
