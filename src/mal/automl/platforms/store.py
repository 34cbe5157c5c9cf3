"""A shared store as a platform: the jobs of a local study handed to the workers of a shared study.

With `StorePlatform`, `AutoMLRunner` is the one scheduler of a shared study: its algorithm asks and is told as in
a local study (same code, same state.json, same exact resume), and every job it submits (trials, the baseline,
the final evaluation) becomes a WAITING trial in the store that some `mal automl worker` runs on its own platform.
The worker writes the job's exit code to the trial; the runner reads the job's status.json and logs from the
trial folder, so the run folder must be on a file system the workers share.

    submit  -> a WAITING trial with job_id, action, spec_path, results_dir, extra_args
    status  -> running while WAITING or RUNNING; exited with the worker's `exit_code`; lost when the trial ended
               without one (its worker died: the runner runs it again)
    cancel  -> a WAITING trial is failed at once; a RUNNING one gets a stop request its worker acts on
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from mal.automl.platforms.base import JobRecord, JobStatus, Platform
from mal.automl.storage import SCHEDULER_ATTR, STOP_ATTR, load_distributed_study
from mal.automl.trials import now


class StorePlatform(Platform):
    """Jobs run by the workers of the shared study `study_name` in `storage`; `max_concurrent` at once."""

    def __init__(self, storage: str | Path, study_name: str, max_concurrent: int, wait_for_study: float = 0.0) -> None:
        self.storage_url = str(storage)
        self.study_name = study_name
        self.study, self.config = load_distributed_study(storage, study_name, wait=wait_for_study)
        self._storage = self.study._storage  # the study's own (cached) storage: every write goes through it
        self._study_id = self._storage.get_study_id_from_name(study_name)
        self.max_concurrent = max_concurrent
        self._trial_ids: dict[str, int] = {}
        self._records: dict[str, JobRecord] = {}
        self.study.set_user_attr(SCHEDULER_ATTR, "running")

    @property
    def capacity(self) -> int:
        return self.max_concurrent

    def close(self, outcome: str = "done") -> None:
        """The scheduler has ended ("done", or "stopped" until `mal automl resume`): workers leave once nothing is
        waiting or running."""
        self.study.set_user_attr(SCHEDULER_ATTR, outcome)

    # -- jobs ------------------------------------------------------------------------------------------------------

    def submit(
        self, job_id: str, action: str, spec_path: str | Path, results_dir: str | Path, extra_args: Sequence[str] = ()
    ) -> JobRecord:
        attrs = {
            "scheduled": True,
            "job_id": job_id,
            "action": action,
            "spec_path": str(spec_path),
            "results_dir": str(results_dir),
            "extra_args": [str(arg) for arg in extra_args],
            "submitted": now(),
        }
        template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=attrs)
        self._trial_ids[job_id] = self._storage.create_new_trial(self._study_id, template_trial=template)
        record = JobRecord.submitted(job_id, action, spec_path, results_dir, Path(spec_path).parent)
        self._records[job_id] = record
        return record

    def status(self, job_id: str) -> JobStatus:
        frozen = self._trial(job_id)
        if frozen is None:
            return JobStatus("lost")
        if frozen.state in (TrialState.WAITING, TrialState.RUNNING):
            return JobStatus("running")
        if "exit_code" not in frozen.user_attrs:
            return JobStatus("lost")
        return JobStatus("exited", frozen.user_attrs["exit_code"])

    def logs(self, job_id: str, tail_lines: int = 50) -> str:
        record = self._records.get(job_id)
        if record is None:
            return ""
        text = []
        for name in ("stdout.log", "stderr.log"):
            path = Path(record.log_dir) / name
            if path.is_file():
                text += path.read_text(encoding="utf-8", errors="replace").splitlines()[-tail_lines:]
        return "\n".join(text)

    def cancel(self, job_id: str) -> None:
        frozen = self._trial(job_id)
        if frozen is None or frozen.state.is_finished():
            return
        tid = self._trial_ids[job_id]
        try:
            if frozen.state == TrialState.WAITING:
                self._storage.set_trial_user_attr(tid, "cancelled", True)
                self._storage.set_trial_state_values(tid, TrialState.FAIL)
            else:
                self._storage.set_trial_system_attr(tid, STOP_ATTR, True)
        except UpdateFinishedTrialError:
            pass  # it ended meanwhile

    def attach(self, record: JobRecord) -> bool:
        self._records[record.job_id] = record
        return self._trial(record.job_id) is not None and self.status(record.job_id).state == "running"

    def forget(self, job_id: str) -> None:
        self._trial_ids.pop(job_id, None)
        self._records.pop(job_id, None)

    def record(self, job_id: str) -> JobRecord:
        return self._records[job_id]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "study": self.study_name}

    def _trial(self, job_id: str) -> Any:
        tid = self._trial_ids.get(job_id)
        if tid is None:
            # A restarted runner: the newest trial that ran this job.
            mine = [t for t in self._storage.get_all_trials(self._study_id, deepcopy=False)
                    if t.user_attrs.get("job_id") == job_id and t.user_attrs.get("scheduled")]  # fmt: skip
            if not mine:
                return None
            tid = self._trial_ids[job_id] = mine[-1]._trial_id
        return self._storage.get_trial(tid)
