"""The jobs of a scheduled study, as a worker runs them: the scheduler (`platforms.store`) wrote each job's spec
and chose its folder; the worker runs it as it is on its own platform, reports its epochs to the store (for the
dashboard), stops it when the scheduler asks, and writes back its exit code, from which the scheduler decides.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from mal.automl.failures import Failure, classify
from mal.automl.storage import HEARTBEAT_ATTR, STOP_ATTR
from mal.automl.trial_record import best_of
from mal.automl.trials import log_tail, new_epochs, now
from mal.automl.worker_records import RunningTrial
from mal.errors import UserError
from mal.jobfiles import final_event, read_status_events
from mal.redaction import redact_text

if TYPE_CHECKING:
    from mal.automl.worker import StudyWorker


def start_job(worker: StudyWorker, tid: int, number: int, attrs: Mapping[str, Any]) -> None:
    """Run a job the study's scheduler submitted: its spec is written, and its files stay where it put them."""
    trial = optuna.trial.Trial(worker.study, tid)
    worker.storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, time.time())
    job_id, action, results_dir = attrs["job_id"], attrs["action"], Path(attrs["results_dir"])
    running = RunningTrial(trial, number, job_id, results_dir, {}, action=action, scheduled=True)
    with worker.lock:
        worker.running[number] = running
    for key, value in {"worker": worker.worker_id, "host": socket.gethostname(), "platform": worker.platform_name,
                       "started": now()}.items():  # fmt: skip
        trial.set_user_attr(key, value)
    try:
        worker.platform.submit(job_id, action, attrs["spec_path"], results_dir, attrs.get("extra_args") or ())
    except Exception as exc:
        reason = redact_text(f"could not submit the job: {type(exc).__name__}: {str(exc).strip()[:300]}")
        trial.set_user_attr("exit_code", 1)  # the scheduler sees a failed job with this reason in its log
        worker.finish(running, TrialState.FAIL, None, Failure("infrastructure", reason, None))
        if isinstance(exc, UserError):
            raise
        return
    worker.console.print(f"trial {number}: started {action} job {job_id} for the study's scheduler")


def poll_job(worker: StudyWorker, running: RunningTrial) -> None:
    """A scheduled job: report its epochs (for the dashboard), stop it when asked, hand its exit code back."""
    trial = running.trial
    try:
        if worker.storage.get_trial_system_attrs(trial._trial_id).get(STOP_ATTR):
            worker.platform.cancel(running.job_id)
            trial.set_user_attr("cancelled", True)
            trial.set_user_attr("exit_code", None)
            worker.finish(running, TrialState.FAIL, None, None)
            return
        fresh = new_epochs(running.results_dir, running.action, worker.metric, running.reported_until)
        for epoch in sorted(fresh):
            running.values[epoch] = fresh[epoch]
            running.reported_until = epoch
            trial.report(fresh[epoch], epoch)
        status = worker.platform.status(running.job_id)
        if status.state == "running":
            return
        if status.state == "exited":
            trial.set_user_attr("exit_code", status.exit_code)
    except UpdateFinishedTrialError:
        worker.lost_to_others(running)
        return
    events = read_status_events(running.results_dir, running.action)
    best = best_of(running.values, worker.settings.direction)
    if best is None and running.action != worker.action:
        # An evaluation job reports its metric once, at its end, under the name without the "val/" prefix.
        kpi = (final_event(events) or {}).get("kpi") or {}
        best = best_of({0: kpi.get(worker.metric.split("/", 1)[-1])}, worker.settings.direction)
    exit_code = status.exit_code if status.state == "exited" else None
    if exit_code == 0 and best is not None:
        worker.finish(running, TrialState.COMPLETE, best, None)
        return
    # Shown in the store; the scheduler decides what the job's end means from the exit code and the log itworker.
    if exit_code is None:
        failure = Failure("infrastructure", "the job disappeared from the platform without an exit code", None)
    elif exit_code == 0:
        failure = Failure("metric_missing", f"the {running.action} job reported no {worker.metric!r}", 0)
    else:
        message = (final_event(events) or {}).get("message", "")
        failure = classify(exit_code, log_tail(worker.platform, running.job_id), message)
    worker.finish(running, TrialState.FAIL, None, failure)
