"""`mal automl worker`: take recommendations of a shared study, run them on this worker's platform, report back.

    StudyWorker("postgresql://db/mal", "lr-sweep", platform=SlurmPlatform(partition="gpu")).run()

A worker loops until the study has nothing left to run anywhere:
  1. take WAITING trials (atomically, see `mal.automl.storage`) while its platform has free slots;
  2. for each, sample its values (the GP, TPE or BOHB from the store's history, or the values queued for it),
     write the trial's spec and submit `mal train` to the platform;
  3. feed every new epoch of the job's status.json to the study (`trial.report`) and ask the study's pruner
     whether to stop it (successive halving decides from all workers' results in the store);
  4. record the end: COMPLETE with the best metric, PRUNED, or FAIL with the failure class and cause.
A background thread beats a heartbeat into each running trial. Every worker also watches the others: a running
trial whose heartbeat is older than the study's grace period belongs to a dead worker; the first worker to flip
it to FAIL (an atomic storage update, so exactly one wins) queues one retry with the same values and stops the
dead worker's job (`mal.automl.orphans`). A retry that dies too is not retried again.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from mal.automl.failures import Failure, classify
from mal.automl.orphans import stop_orphaned_job
from mal.automl.platforms.base import Platform
from mal.automl.platforms.contract import (
    cap_batch_size,
    count_train_samples,
    dump_yaml,
    epoch_metrics,
)
from mal.automl.platforms.local import DEFAULT_COMMAND, LocalPlatform
from mal.automl.settings import AutoMLSettings, parse_settings
from mal.automl.space import SearchSpace
from mal.automl.stopping import sigterm_as_interrupt
from mal.automl.storage import (
    HEARTBEAT_ATTR,
    UNIT_PREFIX,
    build_space,
    load_distributed_study,
    make_pruner,
    make_sampler,
    redact,
)
from mal.automl.workspace import write_private_text
from mal.dotted import deep_merge, set_dotted
from mal.errors import UserError
from mal.jobfiles import final_event, read_status_events
from mal.redaction import redact_text, url_secrets

PLATFORMS = ("local", "slurm")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_platform(name: str, config: Mapping[str, Any], max_concurrent: int, **slurm_overrides: Any) -> Platform:
    """The platform a worker runs trials on: `local` subprocesses or `slurm` batch jobs."""
    command = config.get("command") or DEFAULT_COMMAND
    if name == "local":
        return LocalPlatform(max_concurrent=max_concurrent, command=command)
    if name == "slurm":
        from mal.automl.platforms.slurm import SlurmPlatform

        settings = {"max_concurrent": max_concurrent, "command": command, **(config.get("slurm") or {})}
        return SlurmPlatform.from_settings(settings, **slurm_overrides)
    raise UserError(f"--platform {name!r} is unknown; choose one of {list(PLATFORMS)}.")


def _storage(study: optuna.Study) -> Any:
    # The study's own storage object: for SQL stores Optuna wraps the RDBStorage in a cache that must see every
    # write this process makes, so nothing may go around it.
    return study._storage


def fail_trial_and_retry(study: optuna.Study, frozen: FrozenTrial, failure: Mapping[str, Any]) -> FrozenTrial | None:
    """Fail a RUNNING trial on behalf of its (dead or leaving) worker and queue ONE retry with the same values.

    Only the caller whose FAIL update the storage accepts does anything more, so two workers noticing the same
    dead trial never queue two retries. Returns the failed trial, or None when someone else got there first.
    """
    storage = _storage(study)
    tid = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), frozen.number
    )
    try:
        # Written first: a finished trial accepts no more attributes.
        storage.set_trial_user_attr(tid, "failure", dict(failure))
        storage.set_trial_user_attr(tid, "finished", _now())
        if not storage.set_trial_state_values(tid, TrialState.FAIL):
            return None
    except UpdateFinishedTrialError:
        return None
    if "retry_of" not in frozen.user_attrs:
        attrs = {"retry_of": frozen.number, "slot": frozen.user_attrs.get("slot")}
        if "params" in frozen.user_attrs:
            attrs["params"] = frozen.user_attrs["params"]
        study.enqueue_trial(dict(frozen.params), user_attrs=attrs)
    return frozen


def fail_stale_trials(
    study: optuna.Study,
    grace_period: float,
    alive: set[int] = frozenset(),
    on_failed: Callable[[FrozenTrial], None] | None = None,
) -> list[int]:
    """Fail (and retry once) every running trial whose heartbeat is older than grace_period; their numbers.

    on_failed(trial) runs for each trial this call failed (never for one another worker got to first)."""
    storage = _storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    now = time.time()
    failed = []
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number in alive:
            continue
        beat = frozen.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None and frozen.datetime_start is not None:
            beat = frozen.datetime_start.timestamp()
        if beat is None or now - float(beat) <= grace_period:
            continue
        worker = frozen.user_attrs.get("worker", "its worker")
        failure = Failure(
            "infrastructure",
            f"{worker} stopped sending heartbeats ({now - float(beat):.0f}s > grace period {grace_period:g}s)",
            None,
        )
        if fail_trial_and_retry(study, frozen, failure.to_dict()) is not None:
            failed.append(frozen.number)
            if on_failed is not None:
                on_failed(frozen)
    return failed


@dataclass
class _Running:
    trial: optuna.trial.Trial
    number: int
    job_id: str
    results_dir: Path
    params: dict[str, Any]
    started: float = field(default_factory=time.time)
    reported_until: int = 0
    values: dict[int, float] = field(default_factory=dict)


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


class StudyWorker:
    """One worker of a shared study.

    platform: where this worker's trials run (default: `make_platform(platform_name, ...)`).
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
        self.storage = _storage(self.study)
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.settings: AutoMLSettings = parse_settings(self.config["settings"])
        self.study.pruner = make_pruner(self.settings)
        self.space: SearchSpace = build_space(self.config)
        self.action = self.config.get("action", "train")
        self.metric = self.settings.metric
        self.platform = platform or make_platform(
            platform_name, self.config, max_concurrent or self.settings.automl_max_concurrent, **slurm_overrides
        )
        self.platform_name = platform_name if platform is None else type(platform).__name__
        self.root = Path(workspace_dir).expanduser().resolve() / study_name
        self.poll_interval = float(poll_interval)
        self.heartbeat_interval = float(self.config.get("heartbeat_interval", 10.0))
        self.grace_period = float(self.config.get("grace_period", 60.0))
        self.console = console or Console()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.summary = WorkerSummary(self.worker_id)
        self.running: dict[int, _Running] = {}
        self._lock = threading.Lock()
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
        """Nothing waiting and nothing running anywhere (a running trial elsewhere may still die and come back)."""
        states = (TrialState.WAITING, TrialState.RUNNING)
        return not self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def _watch_others(self) -> None:
        if time.monotonic() - self._last_stale_check < self.heartbeat_interval:
            return
        self._last_stale_check = time.monotonic()
        with self._lock:
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
        with self._lock:
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
        number = self.storage.get_trial(tid).number
        self.study.sampler = make_sampler(self.settings, number, int(self.config["planned_trials"]), self.space)
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
        running = _Running(trial, number, job_id, trial_dir, dict(params))
        with self._lock:
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
            "started": _now(),
        }.items():
            trial.set_user_attr(key, value)
        shutil.rmtree(trial_dir / self.action, ignore_errors=True)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_private_text(trial_dir / "spec.yaml", dump_yaml(spec))  # the job's input: data URLs stay whole
        try:
            self.platform.submit(job_id, self.action, trial_dir / "spec.yaml", trial_dir)
        except Exception as exc:
            reason = redact_text(f"could not submit the job: {type(exc).__name__}: {str(exc).strip()[:300]}")
            self._finish(running, TrialState.FAIL, None, Failure("infrastructure", reason, None))
            if isinstance(exc, UserError):
                raise
            return
        native = getattr(self.platform, "native_id", None)
        if native is not None:
            trial.set_user_attr("platform_job_id", native(job_id))
        retry = trial.user_attrs.get("retry_of")
        note = f" (retry of trial {retry})" if retry is not None else ""
        self.console.print(f"trial {number}: started{note} {_params_text(params)}")

    def _trial_spec(self, params: Mapping[str, Any], trial_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        spec = deep_merge(self.config["base_spec"], SearchSpace.nest(params))
        spec["results_dir"] = str(trial_dir)
        set_dotted(spec, "train.num_epochs", int(self.config["full_budget"]))
        set_dotted(spec, "train.resume_training_checkpoint_path", None)
        if self.platform.devices_per_job:
            # The local platform hands each trial its own GPU(s) through CUDA_VISIBLE_DEVICES.
            set_dotted(spec, "train.num_gpus", self.platform.devices_per_job)
            set_dotted(spec, "train.gpu_ids", list(range(self.platform.devices_per_job)))
        return spec, cap_batch_size(spec, self._sample_count)

    # == watching trials ===============================================================================================

    def _poll(self, running: _Running) -> None:
        events = read_status_events(running.results_dir, self.action)
        fresh = {e: v for e, v in epoch_metrics(events, self.metric).items() if e > running.reported_until}
        for epoch in sorted(fresh):
            running.values[epoch] = fresh[epoch]
            running.reported_until = epoch
            try:
                running.trial.report(fresh[epoch], epoch)
                prune = running.trial.should_prune()
            except UpdateFinishedTrialError:
                self._lost_to_others(running)
                return
            if prune:
                self.platform.cancel(running.job_id)
                self._finish(running, TrialState.PRUNED, None, None)
                return
        status = self.platform.status(running.job_id)
        if status.state == "running":
            return
        if status.state == "lost":
            failure = Failure("infrastructure", "the job disappeared from the platform without an exit code", None)
            self._finish(running, TrialState.FAIL, None, failure)
            return
        if status.exit_code != 0:
            message = (final_event(events) or {}).get("message", "")
            self._finish(running, TrialState.FAIL, None, classify(status.exit_code, self._log_tail(running), message))
            return
        best = self._best(running.values)
        if best is None:
            failure = Failure("metric_missing", f"the training succeeded but reported no {self.metric!r}", 0)
            self._finish(running, TrialState.FAIL, None, failure)
            return
        self._finish(running, TrialState.COMPLETE, best, None)

    def _log_tail(self, running: _Running) -> str:
        if isinstance(self.platform, LocalPlatform):
            return self.platform.stderr_tail(running.job_id)
        return self.platform.logs(running.job_id)

    def _best(self, values: Mapping[int, float]) -> float | None:
        finite = [v for v in values.values() if math.isfinite(v)]
        if not finite:
            return None
        return max(finite) if self.settings.direction == "maximize" else min(finite)

    def _finish(self, running: _Running, state: TrialState, value: float | None, failure: Failure | None) -> None:
        trial = running.trial
        try:
            trial.set_user_attr("metric", self._best(running.values))
            trial.set_user_attr("finished", _now())
            trial.set_user_attr("seconds", round(time.time() - running.started, 3))
            if failure is not None:
                trial.set_user_attr("failure", failure.to_dict())
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except UpdateFinishedTrialError:
            self._lost_to_others(running)
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

    def _lost_to_others(self, running: _Running) -> None:
        """Another worker declared this trial dead (we were too slow to beat); its retry carries on elsewhere."""
        self.platform.cancel(running.job_id)
        self._drop(running)
        self.summary.lost.append(running.number)
        self.console.print(f"[yellow]trial {running.number}: failed by another worker (missed heartbeats)[/yellow]")

    def _drop(self, running: _Running) -> None:
        with self._lock:
            self.running.pop(running.number, None)
        self.platform.forget(running.job_id)

    def _hand_back_all(self, reason: str) -> None:
        """Leaving: stop our jobs and fail their trials with one retry each, so other workers finish them."""
        for running in list(self.running.values()):
            self.platform.cancel(running.job_id)
            frozen = self.storage.get_trial(running.trial._trial_id)
            fail_trial_and_retry(self.study, frozen, Failure("infrastructure", reason, None).to_dict())
            self._drop(running)


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
