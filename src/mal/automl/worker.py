"""`mal automl worker`: take recommendations of a shared study, run them on this worker's platform, report back.

    StudyWorker("postgresql://db/mal", "lr-sweep", platform=SlurmPlatform(partition="gpu")).run()

A worker loops until the study has nothing left to run anywhere:
  1. take WAITING trials (atomically, see `mal.automl.storage`) while its platform has free slots;
  2. for each, sample its values (the GP, TPE or BOHB from the store's history, or the values queued for it),
     write the trial's spec and submit `mal train` to the platform;
  3. feed every new epoch of the job's status.json to the study (`trial.report`) and ask the study's pruner
     whether to stop it (successive halving decides from all workers' results in the store);
  4. record the end: COMPLETE with the best metric, PRUNED, or FAIL with the failure class and cause.
In a scheduled study (hyperband, dehb, mobster, pbt, the LLM searches) step 2 is the scheduler's: the trial names a
job it submitted (spec written, folder chosen), which the worker runs as it is and whose exit code it writes back.
A background thread beats a heartbeat into each running trial. Every worker also watches the others: a running
trial whose heartbeat is older than the study's grace period belongs to a dead worker; the first worker to flip
it to FAIL (an atomic storage update, so exactly one wins) queues one retry with the same values and stops the
dead worker's job (`mal.automl.orphans`). A retry that dies too is not retried again.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from mal.automl.algorithms import ALGORITHMS
from mal.automl.dead_workers import fail_stale_trials, fail_trial_and_retry, study_storage
from mal.automl.failures import Failure, classify
from mal.automl.orphans import stop_orphaned_job
from mal.automl.platforms.base import Platform
from mal.automl.platforms.contract import (
    count_train_samples,
    dump_yaml,
)
from mal.automl.platforms.factory import make_platform
from mal.automl.settings import AutoMLSettings, parse_settings
from mal.automl.space import SearchSpace
from mal.automl.stopping import sigterm_as_interrupt
from mal.automl.storage import (
    HEARTBEAT_ATTR,
    SCHEDULER_ATTR,
    UNIT_PREFIX,
    build_space,
    load_distributed_study,
    redact,
)
from mal.automl.trial_record import best_of
from mal.automl.trials import log_tail, new_epochs, now, trial_spec
from mal.automl.worker_jobs import poll_job, start_job
from mal.automl.worker_records import RunningTrial, WorkerSummary, params_text
from mal.automl.workspace import write_private_text
from mal.errors import UserError
from mal.jobfiles import final_event, read_status_events
from mal.redaction import redact_text, url_secrets


class StudyWorker:
    """One worker of a shared study.

    platform: where this worker's trials run (default: `platforms.factory.make_platform`).
    workspace_dir: trial folders go to `workspace_dir/<study>/trials/trial_NNNN/` (shared or local disk; the
        folder and host are recorded in each trial's user attributes).
    max_concurrent: trials this worker runs at once (default: the study's automl_max_concurrent).
    """

    def __init__(
        self,
        storage: str | Path,
        study_name: str,
        platform: Platform | None = None,
        platform_name: str = "local",
        workspace_dir: str | Path = "automl_runs",
        poll_interval: float = 2.0,
        max_concurrent: int | None = None,
        console: Console | None = None,
        wait_for_study: float = 30.0,
        **slurm_overrides: Any,
    ) -> None:
        self.storage_url = str(storage)
        self.study, self.config = load_distributed_study(storage, study_name, wait=wait_for_study)
        self.storage = study_storage(self.study)
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.settings: AutoMLSettings = parse_settings(self.config["settings"])
        self.algorithm = ALGORITHMS[self.settings.algorithm]
        self.study.pruner = self.algorithm.store_pruner(self.settings)
        self.space: SearchSpace = build_space(self.config)
        self.action = self.config.get("action", "train")
        self.metric = self.settings.metric
        self.platform = platform or make_platform(
            platform_name,
            max_concurrent=max_concurrent or self.settings.automl_max_concurrent,
            command=self.config.get("command"),
            kill_grace=self.config.get("kill_grace"),
            slurm=self.config.get("slurm"),
            **slurm_overrides,
        )
        self.platform_name = platform_name if platform is None else type(platform).__name__
        self.root = Path(workspace_dir).expanduser().resolve() / study_name
        self.poll_interval = float(poll_interval)
        self.heartbeat_interval = float(self.config.get("heartbeat_interval", 10.0))
        self.grace_period = float(self.config.get("grace_period", 60.0))
        self.console = console or Console()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.summary = WorkerSummary(self.worker_id)
        self.running: dict[int, RunningTrial] = {}
        self.lock = threading.Lock()
        self._stop_beats = threading.Event()
        self._last_stale_check = 0.0
        self._sample_count = self.settings.train_sample_count or count_train_samples(self.config["base_spec"])

    # == the loop ====================================================================================================

    def run(self) -> WorkerSummary:
        """Work until nothing is left to run anywhere in the study; SIGTERM/Ctrl-C hand running trials back."""
        self.console.print(
            f"worker {self.worker_id}: study {self.study.study_name!r} on {redact(self.storage_url)}, "
            f"{self.platform_name} platform, {self.platform.capacity} slot(s)"
        )
        beats = threading.Thread(target=self._beat_forever, name="mal-heartbeat", daemon=True)
        beats.start()
        with sigterm_as_interrupt():
            try:
                while True:
                    self._watch_others()
                    self._take_trials()
                    for running in list(self.running.values()):
                        self._poll(running)
                    if not self.running and self._study_done():
                        break
                    if self.running:
                        self.platform.wait([r.job_id for r in self.running.values()], self.poll_interval)
                    else:
                        time.sleep(self.poll_interval)
            except KeyboardInterrupt:
                self._hand_back_all("the worker was stopped (SIGTERM or Ctrl-C)")
                raise
            finally:
                self._stop_beats.set()
                beats.join(timeout=5)
        s = self.summary
        self.console.print(
            f"worker {self.worker_id}: done ({len(s.completed)} completed, {len(s.pruned)} pruned, "
            f"{len(s.failed)} failed, {len(s.stale_failed)} dead workers' trials retried)"
        )
        return s

    def _study_done(self) -> bool:
        """Nothing waiting and nothing running anywhere (a running trial elsewhere may still die and come back),
        and, in a scheduled study, its scheduler has finished submitting."""
        states = (TrialState.WAITING, TrialState.RUNNING)
        if self.storage.get_all_trials(self.study_id, deepcopy=False, states=states):
            return False
        if not self.config.get("scheduler"):
            return True
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return attrs.get(SCHEDULER_ATTR) in ("done", "stopped")

    def _watch_others(self) -> None:
        if time.monotonic() - self._last_stale_check < self.heartbeat_interval:
            return
        self._last_stale_check = time.monotonic()
        with self.lock:
            ours = set(self.running)
        for number in fail_stale_trials(self.study, self.grace_period, ours, on_failed=self._stop_orphan):
            self.summary.stale_failed.append(number)

    def _stop_orphan(self, dead: FrozenTrial) -> None:
        """The dead worker's job would keep its GPU or Slurm allocation while the retry runs: stop it."""
        outcome = stop_orphaned_job(dead.user_attrs)
        self.summary.orphans[dead.number] = outcome
        self.console.print(f"trial {dead.number}: its worker stopped beating; failed and queued once more; {outcome}")

    def _beat_forever(self) -> None:
        while not self._stop_beats.wait(self.heartbeat_interval):
            self._beat()

    def _beat(self, numbers: set[int] | None = None) -> None:
        with self.lock:
            targets = {n: r.trial._trial_id for n, r in self.running.items() if numbers is None or n in numbers}
        for tid in targets.values():
            try:
                self.storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, time.time())
            except UpdateFinishedTrialError:
                pass  # another worker declared it dead; the main loop notices at its next report
            except Exception as exc:  # a flaky database must not kill the heartbeat thread
                shown = redact_text(exc, url_secrets(self.storage_url))
                self.console.print(f"[yellow]heartbeat failed: {type(exc).__name__}: {shown}[/yellow]")

    # == taking and starting trials ==================================================================================

    def _claim(self) -> int | None:
        """Flip one WAITING trial to RUNNING; the storage lets exactly one worker win each trial."""
        for frozen in self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,)):
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, frozen.number)
            try:
                if self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                    return tid
            except UpdateFinishedTrialError:
                continue
        return None

    def _take_trials(self) -> None:
        while len(self.running) < self.platform.capacity:
            tid = self._claim()
            if tid is None:
                return
            self._start(tid)

    def _start(self, tid: int) -> None:
        frozen = self.storage.get_trial(tid)
        if frozen.user_attrs.get("scheduled"):
            start_job(self, tid, frozen.number, frozen.user_attrs)
            return
        number = frozen.number
        self.study.sampler = self.algorithm.store_sampler(
            self.settings, number, int(self.config["planned_trials"]), self.space
        )
        trial = optuna.trial.Trial(self.study, tid)
        self.storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, time.time())
        unit = [trial.suggest_float(f"{UNIT_PREFIX}{name}", 0.0, 1.0) for name in self.space.names]
        params = trial.user_attrs.get("params")
        if params is None:
            params = self.space.from_unit(unit)
            proposal = getattr(self.study.sampler, "last_proposal", None)
            if proposal is not None:
                trial.set_user_attr("proposal", proposal)
        job_id = f"trial_{number:04d}"
        trial_dir = self.root / "trials" / job_id
        running = RunningTrial(trial, number, job_id, trial_dir, dict(params))
        with self.lock:
            self.running[number] = running
        spec, adjustments = self._trial_spec(params, trial_dir)
        for key, value in {
            "params": params,
            "worker": self.worker_id,
            "host": socket.gethostname(),
            "platform": self.platform_name,
            "job_id": job_id,
            "results_dir": str(trial_dir),
            "budget": int(self.config["full_budget"]),
            "adjustments": adjustments,
            "started": now(),
        }.items():
            trial.set_user_attr(key, value)
        shutil.rmtree(trial_dir / self.action, ignore_errors=True)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_private_text(trial_dir / "spec.yaml", dump_yaml(spec))  # the job's input: data URLs stay whole
        try:
            self.platform.submit(job_id, self.action, trial_dir / "spec.yaml", trial_dir)
        except Exception as exc:
            reason = redact_text(f"could not submit the job: {type(exc).__name__}: {str(exc).strip()[:300]}")
            self.finish(running, TrialState.FAIL, None, Failure("infrastructure", reason, None))
            if isinstance(exc, UserError):
                raise
            return
        native = getattr(self.platform, "native_id", None)
        if native is not None:
            trial.set_user_attr("platform_job_id", native(job_id))
        retry = trial.user_attrs.get("retry_of")
        note = f" (retry of trial {retry})" if retry is not None else ""
        self.console.print(f"trial {number}: started{note} {params_text(params)}")

    def _trial_spec(self, params: Mapping[str, Any], trial_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        budget = int(self.config["full_budget"])
        devices = self.platform.devices_per_job
        return trial_spec(self.config["base_spec"], params, budget, trial_dir, None, devices, self._sample_count)

    # == watching trials ===============================================================================================

    def _poll(self, running: RunningTrial) -> None:
        if running.scheduled:
            poll_job(self, running)
            return
        fresh = new_epochs(running.results_dir, self.action, self.metric, running.reported_until)
        for epoch in sorted(fresh):
            running.values[epoch] = fresh[epoch]
            running.reported_until = epoch
            try:
                running.trial.report(fresh[epoch], epoch)
                prune = running.trial.should_prune()
            except UpdateFinishedTrialError:
                self.lost_to_others(running)
                return
            if prune:
                self.platform.cancel(running.job_id)
                self.finish(running, TrialState.PRUNED, None, None)
                return
        status = self.platform.status(running.job_id)
        if status.state == "running":
            return
        if status.state == "lost":
            failure = Failure("infrastructure", "the job disappeared from the platform without an exit code", None)
            self.finish(running, TrialState.FAIL, None, failure)
            return
        if status.exit_code != 0:
            events = read_status_events(running.results_dir, self.action)
            message = (final_event(events) or {}).get("message", "")
            tail = log_tail(self.platform, running.job_id)
            self.finish(running, TrialState.FAIL, None, classify(status.exit_code, tail, message))
            return
        best = best_of(running.values, self.settings.direction)
        if best is None:
            failure = Failure("metric_missing", f"the training succeeded but reported no {self.metric!r}", 0)
            self.finish(running, TrialState.FAIL, None, failure)
            return
        self.finish(running, TrialState.COMPLETE, best, None)

    def finish(self, running: RunningTrial, state: TrialState, value: float | None, failure: Failure | None) -> None:
        trial = running.trial
        try:
            trial.set_user_attr("metric", best_of(running.values, self.settings.direction))
            trial.set_user_attr("finished", now())
            trial.set_user_attr("seconds", round(time.time() - running.started, 3))
            if failure is not None:
                trial.set_user_attr("failure", failure.to_dict())
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except UpdateFinishedTrialError:
            self.lost_to_others(running)
            return
        self._drop(running)
        bucket = {TrialState.COMPLETE: self.summary.completed, TrialState.PRUNED: self.summary.pruned}
        bucket.get(state, self.summary.failed).append(running.number)
        if state == TrialState.COMPLETE:
            text = f"{self.metric} {value:.4f}"
        elif state == TrialState.PRUNED:
            text = f"stopped by the pruner at epoch {running.reported_until}"
        else:
            text = f"{failure.category}: {failure.reason}" if failure else "failed"
        self.console.print(f"trial {running.number}: {state.name.lower()} ({redact_text(text)})")

    def lost_to_others(self, running: RunningTrial) -> None:
        """Another worker declared this trial dead (we were too slow to beat); its retry carries on elsewhere."""
        self.platform.cancel(running.job_id)
        self._drop(running)
        self.summary.lost.append(running.number)
        self.console.print(f"[yellow]trial {running.number}: failed by another worker (missed heartbeats)[/yellow]")

    def _drop(self, running: RunningTrial) -> None:
        with self.lock:
            self.running.pop(running.number, None)
        self.platform.forget(running.job_id)

    def _hand_back_all(self, reason: str) -> None:
        """Leaving: stop our jobs and fail their trials with one retry each, so other workers finish them."""
        for running in list(self.running.values()):
            self.platform.cancel(running.job_id)
            frozen = self.storage.get_trial(running.trial._trial_id)
            fail_trial_and_retry(self.study, frozen, Failure("infrastructure", reason, None).to_dict())
            self._drop(running)
