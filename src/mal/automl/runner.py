"""AutoMLRunner: a hyperparameter study over `mal train`, driven only through the job contract.

    runner = AutoMLRunner(skill_dir="skill/", workspace_dir="automl/")
    result = runner.run(automl_algorithm="asha", automl_settings={"automl_max_epochs": 9},
                        spec_overrides={"dataset.train_ann_path": "train.json", ...})

One study, in order: preflight -> launch review (+ confirmation) -> baseline -> search -> final evaluation of the
BEST checkpoint -> report. Each trial is a subprocess `mal train -e <trial>/spec.yaml` (through a `Platform`);
its status.json feeds the search algorithm's `report` (which may stop it) and its end feeds `tell`. Every state
change goes to the workspace atomically, so `run(resume=True)` or `mal automl resume DIR` continues from the
folder alone: same search state, running trials re-attached, lost ones re-run, finished ones kept.

Hooks (TAO's names): `metric_extractor(logs, metric_name)`, `eval_fn(rec, job_id)`, `baseline_fn(base_specs)`,
`final_eval_fn(best_rec, job_id)` (a float or {"metric_value": ...}), `on_result(rec, metric, status)`. `rec` is
a dict: rec_id, job_id, params, specs (the trial's whole spec), budget, results_dir, checkpoint, metric.

A trial's metric is the best value of `automl_settings.metric` its status.json reported: the value its
`mal_model_best.pth` holds, so the final evaluation measures the checkpoint the search chose.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from mal import __version__
from mal.automl.algorithms import SearchAlgorithm, make_algorithm
from mal.automl.failures import Failure, classify, params_hash
from mal.automl.platforms.base import JobRecord, Platform
from mal.automl.platforms.contract import (
    best_checkpoint,
    cap_batch_size,
    count_train_samples,
    dump_yaml,
    epoch_metrics,
    latest_checkpoint,
    load_yaml,
    read_eval_metrics,
)
from mal.automl.platforms.local import DEFAULT_COMMAND, LocalPlatform
from mal.automl.preflight import DATA_KEYS, format_duration, review_markdown, run_preflight
from mal.automl.settings import AutoMLSettings, parse_settings, settings_for_algorithm
from mal.automl.space import SearchSpace
from mal.automl.stopping import sigterm_as_interrupt
from mal.automl.tracking import StudyTracker
from mal.automl.workspace import RUN_FILE, Workspace, write_private_text
from mal.dotted import deep_merge, get_dotted, nest_dotted, set_dotted
from mal.errors import SpecError, UserError
from mal.jobfiles import final_event, read_status_events
from mal.redaction import MASK, redact_text, redact_tree

NO_METRIC_LIMIT = 3
FINAL_STATES = ("done", "stopped", "failed")


class StudyStoppedError(UserError):
    """The study stopped before its end (repeated failures, no metric); the message names the cause."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Hooks:
    metric_extractor: Callable[[str, str], Any] | None = None
    eval_fn: Callable[[dict[str, Any], str], Any] | None = None
    baseline_fn: Callable[[dict[str, Any]], Any] | None = None
    final_eval_fn: Callable[[dict[str, Any], str], Any] | None = None
    on_result: Callable[[dict[str, Any], float | None, str], Any] | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _metric_value(returned: Any) -> float | None:
    """A hook's answer: a number or {"metric_value": number}; None when neither is finite."""
    if isinstance(returned, Mapping):
        returned = returned.get("metric_value")
    if isinstance(returned, bool) or not isinstance(returned, int | float) or not math.isfinite(returned):
        return None
    return float(returned)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class AutoMLRunner:
    """Runs a hyperparameter study of `action` (train) whose search space is read from `skill_dir`.

    platform: where trials run (default: `LocalPlatform` with automl_max_concurrent slots).
    workspace_dir: parent of the study's `run_<UTC timestamp>/` folder; for `resume=True`, that run folder
        itself (or its parent: the newest run in it is resumed).
    poll_interval: seconds between looks at the running trials.
    console: where the review and progress go (rich); live: redraw a table of trials while running.
    """

    def __init__(
        self,
        skill_dir: str | Path | None = None,
        platform: Platform | None = None,
        workspace_dir: str | Path = "automl_runs",
        poll_interval: float = 5.0,
        action: str = "train",
        console: Console | None = None,
        live: bool = False,
        sdk: Platform | None = None,
    ) -> None:
        self.skill_dir = None if skill_dir is None else Path(skill_dir)
        self.platform = platform or sdk
        self.workspace_dir = Path(workspace_dir)
        self.poll_interval = float(poll_interval)
        self.action = action
        self.console = console or Console()
        self.live = live
        self.workspace: Workspace | None = None

    def run(
        self,
        automl_algorithm: str | None = None,
        automl_settings: Mapping[str, Any] | None = None,
        spec_overrides: Mapping[str, Any] | None = None,
        automl_hyperparameters: Sequence[str] | None = None,
        custom_param_ranges: Mapping[str, Any] | None = None,
        metric_extractor: Callable[[str, str], Any] | None = None,
        eval_fn: Callable[[dict[str, Any], str], Any] | None = None,
        baseline_fn: Callable[[dict[str, Any]], Any] | None = None,
        final_eval_fn: Callable[[dict[str, Any], str], Any] | None = None,
        on_result: Callable[[dict[str, Any], float | None, str], Any] | None = None,
        resume: bool = False,
        yes: bool = True,
    ) -> dict[str, Any]:
        """Run (or with resume=True continue) the study; returns the result dict (see `study_result`)."""
        hooks = Hooks(metric_extractor, eval_fn, baseline_fn, final_eval_fn, on_result)
        if resume:
            workspace = Workspace.open(self.workspace_dir)
            config = workspace.read_json(RUN_FILE)
            settings = self._resumed_settings(config, automl_settings)
        else:
            settings = settings_for_algorithm(automl_settings, automl_algorithm)
            if self.skill_dir is None:
                raise SpecError("AutoMLRunner needs skill_dir (write one with `mal schema --out DIR`).")
            config = {
                "mal_version": __version__,
                "created": _now(),
                "skill_dir": str(self.skill_dir.resolve()),
                "action": self.action,
                "spec_overrides": _absolute_data_paths(spec_overrides or {}),
                "hyperparameters": list(automl_hyperparameters) if automl_hyperparameters else None,
                "custom_param_ranges": dict(custom_param_ranges or {}),
            }
            workspace = None
        platform = self.platform or LocalPlatform(
            max_concurrent=settings.automl_max_concurrent, command=config.get("command") or DEFAULT_COMMAND
        )
        if not resume:
            # The algorithm must plan for the concurrency the platform really gives.
            settings.automl_max_concurrent = min(settings.automl_max_concurrent, platform.capacity)
            config["settings"] = settings.to_json_dict()
            if isinstance(platform, LocalPlatform):
                config["command"] = platform.command
            # Parse everything before creating a folder: a typo must not leave an empty run behind.
            _StudyInputs.build(config, settings)
            workspace = Workspace.create(self.workspace_dir)
            workspace.write_json(RUN_FILE, config)
        assert workspace is not None
        self.workspace = workspace
        # SIGTERM (kill, systemd, docker stop) stops the running trainings as Ctrl-C does, for API callers too.
        with workspace.runner_lock(), sigterm_as_interrupt():
            study = _Study(workspace, config, settings, platform, hooks, self.poll_interval, self.console, self.live)
            return study.execute(resume=resume, yes=yes)

    def _resumed_settings(self, config: Mapping[str, Any], passed: Mapping[str, Any] | None) -> AutoMLSettings:
        stored = dict(config["settings"])
        extra = dict(passed or {})
        # The API key is never stored: take it from the caller again (or the environment, as the brain does).
        if "llm_api_key" in extra:
            stored["llm_api_key"] = extra.pop("llm_api_key")
        # run.json shows secrets as ***: a caller that passes the same setting with its secret gives it back.
        for key in [key for key, value in extra.items() if MASK in str(stored.get(key, ""))]:
            if redact_tree(extra[key]) == stored[key]:
                stored[key] = extra.pop(key)
        ignored = sorted(key for key, value in extra.items() if stored.get(key) != value)
        if ignored:
            # The saved search state replays only under the settings it was made with.
            self.console.print(f"[yellow]resume keeps the study's own settings; ignoring {', '.join(ignored)}[/yellow]")
        return parse_settings(stored, source=f"{RUN_FILE} settings")


@dataclass
class _StudyInputs:
    skill_dir: Path
    space: SearchSpace
    base_spec: dict[str, Any]

    @classmethod
    def build(cls, config: Mapping[str, Any], settings: AutoMLSettings) -> _StudyInputs:
        skill_dir = Path(config["skill_dir"])
        action = config.get("action", "train")
        space = SearchSpace.from_skill_dir(
            skill_dir, config.get("hyperparameters"), config.get("custom_param_ranges") or None, action=action
        )
        make_algorithm(settings.algorithm, space, settings)  # unknown names fail here, before any folder exists
        template = skill_dir / "references" / f"spec_template_{action}.yaml"
        base = load_yaml(template) if template.is_file() else {}
        base_spec = deep_merge(base, nest_dotted(config.get("spec_overrides") or {}))
        return cls(skill_dir, space, base_spec)


class _Study:
    """One study in one workspace; everything `run` does happens here."""

    def __init__(
        self,
        workspace: Workspace,
        config: dict[str, Any],
        settings: AutoMLSettings,
        platform: Platform,
        hooks: Hooks,
        poll_interval: float,
        console: Console,
        live: bool,
    ) -> None:
        self.ws = workspace
        self.config = config
        self.settings = settings
        self.platform = platform
        self.hooks = hooks
        self.poll_interval = poll_interval
        self.console = console
        self.live = live
        self.action = config.get("action", "train")
        self.metric = settings.metric
        inputs = _StudyInputs.build(config, settings)
        self.space, self.base_spec = inputs.space, inputs.base_spec
        if MASK in json.dumps(config.get("spec_overrides")) and workspace.path("base_spec.yaml").is_file():
            # run.json keeps overrides with their secrets hidden; the trainings of a resumed study need the data
            # URLs whole, which only the owner-only base_spec.yaml written at the start still holds.
            self.base_spec = load_yaml(workspace.path("base_spec.yaml"))
        self.algorithm: SearchAlgorithm = make_algorithm(settings.algorithm, self.space, settings)
        self.tracker = StudyTracker(workspace.root, self.metric, self.base_spec.get("wandb"))
        self.state: dict[str, Any] = {
            "trials": {},
            "completion_order": [],
            "invalid_cache": {},
            "jobs": {},
            "no_metric_streak": [],
            "phase": "new",
            "stopped_reason": None,
        }
        self.running: set[str] = set()
        self.sample_count: int | None = None

    # == the study, start to end ================================================================================

    def execute(self, resume: bool, yes: bool) -> dict[str, Any]:
        from mal.automl.report import study_result, write_report

        if resume:
            self._restore()
            if self.state["phase"] == "declined":
                self.state["phase"] = "new"  # resuming a declined launch asks again
        if not self.ws.path("base_spec.yaml").exists():
            self.ws.write_input_text("base_spec.yaml", dump_yaml(self.base_spec))
        self.sample_count = self.settings.train_sample_count or count_train_samples(self.base_spec)
        if self.state["phase"] == "new":
            self._preflight()
            review = self._review(baseline=None)
            self._print_review(review)
            if not yes and not self._confirm():
                self.state["phase"] = "declined"
                self._save()
                return self._finish_result(study_result(self.ws))
            self.state["phase"] = "baseline"
            self._save()
        try:
            if self.state["phase"] == "baseline":
                baseline = self._baseline()
                self.ws.write_json("baseline.json", baseline)
                self._print_review(self._review(baseline))
                self.state["phase"] = "search"
                self._save()
            if self.state["phase"] in ("search", "stopped"):
                self.state.update(phase="search", stopped_reason=None, no_metric_streak=[])
                self._save()
                self._search()
                self.state["phase"] = "final"
                self._save()
            if self.state["phase"] == "final":
                self.ws.write_json("final_evaluation.json", self._final_evaluation())
                self.state["phase"] = "done"
                self._save()
        except StudyStoppedError as exc:
            self._stop_running()
            self.state.update(phase="stopped", stopped_reason=str(exc))
            self._save()
            write_report(self.ws)
            raise
        except BaseException:
            # Ctrl-C or a bug: running trials are stopped and re-run by the next resume.
            self._stop_running()
            self._save()
            raise
        finally:
            self.tracker.close([param.name for param in self.space.params])
        write_report(self.ws)
        return self._finish_result(study_result(self.ws))

    def _finish_result(self, result: dict[str, Any]) -> dict[str, Any]:
        self.ws.write_json("result.json", result)
        return result

    # == persistence ============================================================================================

    def _save(self) -> None:
        self.state["algorithm"] = self.algorithm.state_dict()
        self.state["updated"] = _now()
        self.ws.write_json("state.json", self.state)

    def _restore(self) -> None:
        saved = self.ws.read_json("state.json")
        if saved is None:
            return  # killed before the first save: start the study in the same folder
        self.state.update(saved)
        if "algorithm" in saved:
            self.algorithm.load_state_dict(saved["algorithm"])
        for job_id in sorted(self.state["trials"], key=lambda j: self.state["trials"][j]["rec_id"]):
            record = self.state["trials"][job_id]
            if record["state"] in FINAL_STATES:
                continue
            if record["state"] == "interrupted" or not self.platform.attach(self._job_record(record)):
                if self._exit_code_known(record):
                    self.running.add(job_id)  # ended while no runner watched: finalised at the next poll
                else:
                    self._launch(job_id, relaunch=True)
            else:
                record["state"] = "running"
                record["job"] = self.platform.record(job_id).to_dict()
                self.running.add(job_id)
        self._save()

    def _job_record(self, record: Mapping[str, Any]) -> JobRecord:
        if record.get("job"):
            return JobRecord.from_dict(record["job"])
        trial_dir = self.ws.trial_dir(record["job_id"])
        return JobRecord(
            job_id=record["job_id"],
            action=self.action,
            spec_path=str(trial_dir / "spec.yaml"),
            results_dir=str(trial_dir),
            log_dir=str(trial_dir),
        )

    def _exit_code_known(self, record: Mapping[str, Any]) -> bool:
        if record["state"] == "interrupted":
            return False
        return self.platform.status(record["job_id"]).state == "exited"

    # == preflight, review, baseline ============================================================================

    def _preflight(self) -> None:
        report = run_preflight(
            Path(self.config["skill_dir"]), self.base_spec, self.settings, None, len(self.space.params)
        )
        self.ws.write_json("preflight.json", report.to_dict())
        if report.errors:
            raise UserError("AutoML preflight failed: " + "; ".join(report.errors) + ".")

    def _review(self, baseline: Mapping[str, Any] | None) -> dict[str, Any]:
        recs, epochs = self.algorithm.planned_work()
        capacity = self.platform.capacity
        seconds_per_epoch = None
        if baseline and baseline.get("seconds") and baseline.get("budget"):
            seconds_per_epoch = baseline["seconds"] / baseline["budget"]
        estimate = None if seconds_per_epoch is None else seconds_per_epoch * epochs / capacity
        if baseline is None:
            baseline_text = "not run yet" if self._baseline_planned() else "none (run_baseline is off)"
        else:
            value = baseline.get("metric_value")
            baseline_text = f"{baseline['status']}" + (f", {self.metric} = {value:.4f}" if value is not None else "")
        preflight = self.ws.read_json("preflight.json") or {"checks": [], "warnings": [], "env": {}}
        devices = f"{self.platform.devices_per_job} GPU each" if self.platform.devices_per_job else "CPU slots"
        review = {
            "workspace": str(self.ws.root),
            "algorithm": self.settings.algorithm,
            "metric": self.metric,
            "direction": self.settings.direction,
            "space": [param.describe() for param in self.space.params],
            "planned_recommendations": recs,
            "planned_epochs": epochs,
            "full_budget_epochs": self.algorithm.full_budget,
            "budget_text": f"≈{recs} trainings, ≈{epochs} epochs in all (a full training is "
            f"{self.algorithm.full_budget} epochs)",
            "concurrency": capacity,
            "devices": devices,
            "train_sample_count": self.sample_count,
            "baseline": dict(baseline) if baseline else None,
            "baseline_text": baseline_text,
            "estimated_seconds": estimate,
            "estimate_text": (format_duration(estimate) + " (from the measured baseline)")
            if estimate is not None
            else "unknown until a baseline is measured (set run_baseline: true)",
            "preflight": preflight,
            "command": self._command_text("{spec}"),
            "settings": self.settings.to_json_dict(),
        }
        review = redact_tree(review)  # printed as well as written: the settings may hold an endpoint's password
        self.ws.write_json("launch_review.json", review)
        self.ws.write_text("launch_review.md", review_markdown(review))
        return review

    def _command_text(self, spec: str) -> list[str]:
        if isinstance(self.platform, LocalPlatform):
            return self.platform.build_command(self.action, spec)
        return ["mal", self.action, "-e", spec]

    def _print_review(self, review: Mapping[str, Any]) -> None:
        from rich.markdown import Markdown

        self.console.print(Markdown(review_markdown(review)))

    def _confirm(self) -> bool:
        if not sys.stdin.isatty():
            raise UserError(
                "The launch needs a confirmation but there is no terminal; rerun with --yes "
                "(or yes=True) to launch without the prompt."
            )
        from rich.prompt import Confirm

        return Confirm.ask("Launch this study?", console=self.console, default=False)

    def _baseline_planned(self) -> bool:
        return bool(self.hooks.baseline_fn or self.settings.baseline_metric is not None or self.settings.run_baseline)

    def _baseline(self) -> dict[str, Any]:
        base: dict[str, Any] = {"specs": self.base_spec, "metric": self.metric}
        if self.hooks.baseline_fn is not None:
            try:
                value = _metric_value(self.hooks.baseline_fn(self.base_spec))
            except Exception as exc:
                return {
                    **base,
                    "status": "callback_error",
                    "metric_value": None,
                    "reason": f"baseline_fn raised {_one_line(exc)}",
                }
            status = "provided" if value is not None else "metric_missing"
            return {**base, "status": status, "metric_value": value, "reason": "from baseline_fn"}
        if self.settings.baseline_metric is not None:
            return {
                **base,
                "status": "provided",
                "metric_value": self.settings.baseline_metric,
                "reason": "automl_settings.baseline_metric",
            }
        if not self.settings.run_baseline:
            return {
                **base,
                "status": "skipped",
                "metric_value": None,
                "reason": "run_baseline is off and no baseline_fn / baseline_metric was given",
            }
        budget = self.algorithm.full_budget
        results_dir = self.ws.root / "baseline"
        spec, adjustments = self._trial_spec({}, budget, results_dir, None)
        started = time.time()
        code, events = self._run_job_blocking("baseline", self.action, spec, results_dir)
        seconds = time.time() - started
        values = epoch_metrics(events, self.metric)
        out = {
            **base,
            "specs": spec,
            "budget": budget,
            "seconds": round(seconds, 3),
            "adjustments": adjustments,
            "results_dir": str(results_dir),
            "checkpoint": _path_or_none(best_checkpoint(results_dir, events)),
        }
        if code != 0:
            failure = classify(code, self._stderr_tail("baseline"), (final_event(events) or {}).get("message", ""))
            return {
                **out,
                "status": "failed",
                "metric_value": None,
                "failure_class": failure.category,
                "reason": failure.reason,
            }
        value = self._best_of(values)
        if value is None:
            return {
                **out,
                "status": "metric_missing",
                "metric_value": None,
                "reason": f"the baseline training reported no {self.metric}",
            }
        return {**out, "status": "measured", "metric_value": value, "reason": "default values trained in full"}

    def _run_job_blocking(
        self, job_id: str, action: str, spec: dict[str, Any], results_dir: Path, extra_args: Sequence[str] = ()
    ) -> tuple[int | None, list[dict[str, Any]]]:
        """Run one job to its end (re-attaching when a previous runner started it); (exit code, events)."""
        saved = self.state["jobs"].get(job_id)
        attached = saved is not None and self.platform.attach(JobRecord.from_dict(saved))
        if not attached and not (saved is not None and self.platform.status(job_id).state == "exited"):
            if results_dir.exists():
                shutil.rmtree(results_dir / action, ignore_errors=True)
            spec_path = results_dir / "spec.yaml"
            results_dir.mkdir(parents=True, exist_ok=True)
            write_private_text(spec_path, dump_yaml(spec))
            record = self.platform.submit(job_id, action, spec_path, results_dir, extra_args)
            self.state["jobs"][job_id] = record.to_dict()
            self._save()
        try:
            while (status := self.platform.status(job_id)).state == "running":
                self.platform.wait([job_id], self.poll_interval)
        except BaseException:
            # Ctrl-C: stop the job; the next resume starts it again. (A SIGKILLed runner re-attaches instead.)
            self.platform.cancel(job_id)
            self.state["jobs"].pop(job_id, None)
            raise
        self.platform.forget(job_id)
        return status.exit_code, read_status_events(results_dir, action)

    # == trials ===================================================================================================

    def _trial_spec(
        self, params: Mapping[str, Any], budget: int, results_dir: Path, resume_checkpoint: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        spec = deep_merge(self.base_spec, self.space.nest(params))
        spec["results_dir"] = str(results_dir)
        set_dotted(spec, "train.num_epochs", int(budget))
        set_dotted(spec, "train.resume_training_checkpoint_path", resume_checkpoint)
        if self.platform.devices_per_job:
            # The platform hands each trial its own GPU(s) through CUDA_VISIBLE_DEVICES.
            set_dotted(spec, "train.num_gpus", self.platform.devices_per_job)
            set_dotted(spec, "train.gpu_ids", list(range(self.platform.devices_per_job)))
        return spec, self._cap_budget(spec)

    def _cap_budget(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        """Cap the batch size so that an epoch has at least one step on every device; the changes made."""
        return cap_batch_size(spec, self.sample_count)

    def _search(self) -> None:
        from mal.automl.report import trials_table

        live = None
        if self.live:
            from rich.live import Live

            live = Live(trials_table(self._history()), console=self.console, refresh_per_second=2)
            live.start()
        try:
            while True:
                for job_id in sorted(self.running):
                    self._poll(job_id)
                self._check_streak()
                asked = self._fill_slots()
                if live is not None:
                    live.update(trials_table(self._history()))
                if not self.running:
                    if self.algorithm.is_finished():
                        return
                    if asked:
                        continue
                    raise RuntimeError(
                        f"the {self.algorithm.name} search neither finished nor recommended a "
                        f"training while none was running"
                    )
                self.platform.wait(sorted(self.running), self.poll_interval)
        finally:
            if live is not None:
                live.stop()

    def _fill_slots(self) -> bool:
        asked = False
        while len(self.running) < self.platform.capacity:
            rec = self.algorithm.ask()
            if rec is None:
                break
            asked = True
            job_id = f"rec_{rec.rec_id:03d}"
            trial_dir = self.ws.trial_dir(job_id)
            record: dict[str, Any] = {
                "job_id": job_id,
                "rec_id": rec.rec_id,
                "params": dict(rec.params),
                "budget": rec.budget,
                "resume_from": rec.resume_from,
                "info": dict(rec.info),
                "state": "pending",
                "adjustments": [],
                "epochs": {},
                "reported_until": 0,
                "metric": None,
                "failure": None,
                "cached": False,
                "checkpoint": None,
                "latest_checkpoint": None,
                "resume_checkpoint": None,
                "started": None,
                "finished": None,
                "seconds": None,
                "attempts": 0,
                "results_dir": str(trial_dir),
                "job": None,
            }
            self.state["trials"][job_id] = record
            if rec.resume_from is not None:
                parent = self.state["trials"].get(f"rec_{rec.resume_from:03d}", {})
                record["resume_checkpoint"] = parent.get("latest_checkpoint")
                if not record["resume_checkpoint"] or not Path(record["resume_checkpoint"]).exists():
                    self._conclude(
                        job_id,
                        None,
                        Failure(
                            "infrastructure", f"the checkpoint of rec {rec.resume_from} to continue from is missing"
                        ),
                    )
                    continue
            spec, record["adjustments"] = self._trial_spec(
                rec.params, rec.budget, trial_dir, record["resume_checkpoint"]
            )
            record["spec_params"] = {p.name: get_dotted(spec, p.name) for p in self.space.params}
            record["params_hash"] = params_hash(record["spec_params"])
            cached = self.state["invalid_cache"].get(record["params_hash"])
            if cached is not None:
                record["cached"] = True
                self._conclude(
                    job_id,
                    None,
                    Failure(
                        cached["category"],
                        f"same values as {cached['job_id']}, which failed: {cached['reason']}",
                        cached.get("exit_code"),
                    ),
                )
                continue
            self._save()  # the ask is on disk before anything runs
            self._launch(job_id)
        return asked

    def _launch(self, job_id: str, relaunch: bool = False) -> None:
        record = self.state["trials"][job_id]
        trial_dir = Path(record["results_dir"])
        if relaunch:
            # Outputs of the lost attempt would be read as this attempt's: start clean (logs are appended).
            shutil.rmtree(trial_dir / self.action, ignore_errors=True)
        # Written at every (re)launch from the record alone, so a runner killed before writing it loses nothing.
        spec, _ = self._trial_spec(record["params"], record["budget"], trial_dir, record["resume_checkpoint"])
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_private_text(trial_dir / "spec.yaml", dump_yaml(spec))
        job = self.platform.submit(job_id, self.action, trial_dir / "spec.yaml", trial_dir)
        record.update(
            state="running",
            job=job.to_dict(),
            started=record["started"] or _now(),
            attempts=record["attempts"] + 1,
            launched_at=time.time(),
        )
        self.running.add(job_id)
        self._save()

    def _poll(self, job_id: str) -> None:
        record = self.state["trials"][job_id]
        if self._feed_reports(record, may_stop=True):
            self.platform.cancel(job_id)
            self._conclude(job_id, self._best_of(record["epochs"]), None, stopped=True)
            return
        status = self.platform.status(job_id)
        if status.state == "running":
            return
        if status.state == "lost":
            self._launch(job_id, relaunch=True)
            return
        self._finish_trial(job_id, status.exit_code)

    def _feed_reports(self, record: dict[str, Any], may_stop: bool) -> bool:
        """Pass new per-epoch metrics to the algorithm; True when it asks to stop the trial."""
        events = read_status_events(record["results_dir"], self.action)
        fresh = {e: v for e, v in epoch_metrics(events, self.metric).items() if e > record["reported_until"]}
        stop = False
        for epoch in sorted(fresh):
            record["epochs"][str(epoch)] = fresh[epoch]
            record["reported_until"] = epoch
            self.tracker.epoch(record["job_id"], record["params"], epoch, fresh[epoch])
            if self.algorithm.report(record["rec_id"], epoch, fresh[epoch]) and may_stop:
                stop = True
                break
        if fresh:
            self._save()
        return stop

    def _finish_trial(self, job_id: str, exit_code: int | None) -> None:
        record = self.state["trials"][job_id]
        self._feed_reports(record, may_stop=False)
        events = read_status_events(record["results_dir"], self.action)
        if exit_code != 0:
            message = (final_event(events) or {}).get("message", "")
            self._conclude(job_id, None, classify(exit_code, self._stderr_tail(job_id), message))
            return
        metric, failure = self._trial_metric(record)
        self._conclude(job_id, metric, failure)

    def _trial_metric(self, record: dict[str, Any]) -> tuple[float | None, Failure | None]:
        hook_rec = self._hook_rec(record)
        if self.hooks.eval_fn is not None:
            try:
                value = _metric_value(self.hooks.eval_fn(hook_rec, record["job_id"]))
            except Exception as exc:
                return None, Failure("metric_missing", f"eval_fn raised {_one_line(exc)}", 0)
            return value, None if value is not None else Failure("metric_missing", "eval_fn returned no metric", 0)
        if self.hooks.metric_extractor is not None:
            try:
                value = _metric_value(
                    self.hooks.metric_extractor(self.platform.logs(record["job_id"], 200), self.metric)
                )
            except Exception as exc:
                return None, Failure("metric_missing", f"metric_extractor raised {_one_line(exc)}", 0)
            if value is not None:
                return value, None
        value = self._best_of(record["epochs"])
        if value is None:
            return None, Failure(
                "metric_missing",
                f"the training succeeded but its status.json reported no "
                f"{self.metric!r} (check automl_settings.metric)",
                0,
            )
        return value, None

    def _conclude(self, job_id: str, metric: float | None, failure: Failure | None, stopped: bool = False) -> None:
        """Record a trial's end, tell the algorithm, persist, and call the hooks."""
        record = self.state["trials"][job_id]
        results_dir = Path(record["results_dir"])
        events = read_status_events(results_dir, self.action)
        record["checkpoint"] = _path_or_none(best_checkpoint(results_dir, events))
        record["latest_checkpoint"] = _path_or_none(latest_checkpoint(results_dir))
        record["finished"] = _now()
        if record.get("launched_at"):
            record["seconds"] = round(time.time() - record["launched_at"], 3)
        if failure is not None:
            metric = None
        record.update(
            metric=metric,
            failure=failure.to_dict() if failure else None,
            state="failed" if failure else ("stopped" if stopped else "done"),
        )
        self.algorithm.tell(record["rec_id"], metric, failed=failure is not None)
        self.running.discard(job_id)
        self.state["completion_order"].append(job_id)
        if failure is not None and failure.config_dependent and not record["cached"] and record.get("params_hash"):
            self.state["invalid_cache"][record["params_hash"]] = {"job_id": job_id, **failure.to_dict()}
        if not record["cached"]:
            self.state["no_metric_streak"] = (
                [] if metric is not None else [*self.state["no_metric_streak"], failure.to_dict() if failure else None]
            )
        if record["job"] is not None:
            self.platform.forget(job_id)
        self._delete_unused_checkpoints()
        self._save()
        best = self.algorithm.best()
        self.tracker.trial_done(
            job_id,
            record["params"],
            metric,
            record["state"],
            None if best is None else best.metric,
            len(self.state["completion_order"]),
        )
        self._say(record)
        if self.hooks.on_result is not None:
            try:
                self.hooks.on_result(self._hook_rec(record), metric, record["state"])
            except Exception as exc:
                self.console.print(f"[yellow]on_result raised {redact_text(_one_line(exc))} (ignored)[/yellow]")

    def _check_streak(self) -> None:
        streak = self.state["no_metric_streak"]
        if len(streak) < NO_METRIC_LIMIT:
            return
        last = streak[-NO_METRIC_LIMIT:]
        categories = {entry["category"] if entry else "metric_missing" for entry in last}
        if len(categories) == 1:
            category = categories.pop()
            reason = last[-1]["reason"] if last[-1] else "no metric"
            exit_code = 2 if category in ("spec", "data", "metric_missing") else 1
            raise StudyStoppedError(
                f"Three trials in a row ended without a metric, all with the same cause ({category}): {reason}. "
                f"Fix it, then continue with `mal automl resume {self.ws.root}`.",
                exit_code,
            )
        causes = "; ".join(f"{e['category']}: {e['reason']}" if e else "no metric" for e in last)
        raise StudyStoppedError(
            f"Three recommendations in a row produced no metric ({causes}). Fix the causes, "
            f"then continue with `mal automl resume {self.ws.root}`.",
            1,
        )

    def _stop_running(self) -> None:
        """Cancel the running trials; the next resume re-runs them from the start."""
        for job_id in sorted(self.running):
            self.platform.cancel(job_id)
            self.state["trials"][job_id]["state"] = "interrupted"
        self.running.clear()

    def _delete_unused_checkpoints(self) -> None:
        """Free disk: drop checkpoints no future recommendation resumes from (never the best trial's)."""
        if not self.settings.automl_delete_intermediate_ckpt:
            return
        keep = {f"rec_{rec_id:03d}" for rec_id in self.algorithm.checkpoints_in_use()}
        best = self.algorithm.best()
        if best is not None:
            keep.add(f"rec_{best.rec_id:03d}")
        for job_id in self.running:
            parent = self.state["trials"][job_id].get("resume_from")
            if parent is not None:
                keep.add(f"rec_{parent:03d}")
        for job_id, record in self.state["trials"].items():
            if job_id in keep or record["state"] not in FINAL_STATES or record.get("checkpoints_deleted"):
                continue
            train_dir = Path(record["results_dir"]) / self.action
            for path in train_dir.glob("*.pth") if train_dir.is_dir() else ():
                path.unlink(missing_ok=True)
            record["checkpoints_deleted"] = True

    # == the end =================================================================================================

    def _final_evaluation(self) -> dict[str, Any]:
        baseline = self.ws.read_json("baseline.json") or {}
        best = self.algorithm.best()
        out: dict[str, Any]
        if best is None:
            out = {"status": "unavailable", "metric_value": None, "reason": "no trial finished with a metric"}
            return _compare(out, baseline, self.settings.direction)
        record = self.state["trials"][f"rec_{best.rec_id:03d}"]
        hook_rec = self._hook_rec(record)
        out = {
            "rec_id": best.rec_id,
            "job_id": record["job_id"],
            "checkpoint": record["checkpoint"],
            "search_metric_value": record["metric"],
        }
        if self.hooks.final_eval_fn is not None:
            try:
                returned = self.hooks.final_eval_fn(hook_rec, record["job_id"])
            except Exception as exc:
                out.update(status="callback_error", metric_value=None, reason=f"final_eval_fn raised {_one_line(exc)}")
                return _compare(out, baseline, self.settings.direction)
            value = _metric_value(returned)
            if isinstance(returned, Mapping):
                out["details"] = {k: v for k, v in returned.items() if k != "metric_value"}
            out.update(
                status="provided" if value is not None else "metric_missing",
                metric_value=value,
                reason="from final_eval_fn" if value is not None else "final_eval_fn returned no metric",
            )
            return _compare(out, baseline, self.settings.direction)
        if not self.settings.run_final_evaluation:
            out.update(
                status="reused_best",
                metric_value=record["metric"],
                reason="run_final_evaluation is off: the best trial's validation metric is reported",
            )
            return _compare(out, baseline, self.settings.direction)
        if not record["checkpoint"] or not Path(record["checkpoint"]).exists():
            out.update(
                status="unavailable",
                metric_value=None,
                reason=f"the best trial {record['job_id']} left no best checkpoint to evaluate",
            )
            return _compare(out, baseline, self.settings.direction)
        results_dir = self.ws.root / "final_evaluation"
        spec = load_yaml(Path(record["results_dir"]) / "spec.yaml")
        spec["results_dir"] = str(results_dir)
        set_dotted(spec, "evaluate.checkpoint", record["checkpoint"])
        code, events = self._run_job_blocking(
            "final_evaluation", "evaluate", spec, results_dir, [f"evaluate.checkpoint={record['checkpoint']}"]
        )
        metrics = read_eval_metrics(results_dir)
        out["metrics"] = metrics
        if code != 0:
            failure = classify(
                code, self._stderr_tail("final_evaluation"), (final_event(events) or {}).get("message", "")
            )
            out.update(
                status="unavailable",
                metric_value=None,
                reason=f"mal evaluate failed ({failure.category}): {failure.reason}",
            )
            return _compare(out, baseline, self.settings.direction)
        key = self.metric.split("/", 1)[-1]  # val/mIoU during training is mIoU in metrics.json
        value = _metric_value((metrics or {}).get(key))
        if value is None:
            value = _metric_value(((final_event(events) or {}).get("kpi") or {}).get(key))
        out.update(
            status="measured" if value is not None else "metric_missing",
            metric_value=value,
            metric=key,
            reason="mal evaluate on the best checkpoint"
            if value is not None
            else f"mal evaluate wrote no {key!r} in evaluate/metrics.json",
        )
        return _compare(out, baseline, self.settings.direction)

    # == small helpers ===========================================================================================

    def _best_of(self, values: Mapping[Any, float]) -> float | None:
        finite = [float(v) for v in values.values() if v is not None and math.isfinite(float(v))]
        if not finite:
            return None
        return max(finite) if self.settings.direction == "maximize" else min(finite)

    def _stderr_tail(self, job_id: str) -> str:
        if isinstance(self.platform, LocalPlatform):
            return self.platform.stderr_tail(job_id)
        return self.platform.logs(job_id)

    def _hook_rec(self, record: Mapping[str, Any]) -> dict[str, Any]:
        spec_path = Path(record["results_dir"]) / "spec.yaml"
        return {
            "rec_id": record["rec_id"],
            "job_id": record["job_id"],
            "params": dict(record["params"]),
            "specs": load_yaml(spec_path) if spec_path.is_file() else None,
            "budget": record["budget"],
            "results_dir": record["results_dir"],
            "checkpoint": record.get("checkpoint"),
            "metric": record.get("metric"),
        }

    def _history(self) -> list[dict[str, Any]]:
        from mal.automl.report import history_entries

        return history_entries(self.state)

    def _say(self, record: Mapping[str, Any]) -> None:
        if self.live:
            return
        metric = record["metric"]
        text = f"{metric:.4f}" if metric is not None else (record["failure"] or {}).get("reason", "no metric")
        text = redact_text(text)  # a failure reason quotes the trial's stderr, which may name a data URL
        self.console.print(f"{record['job_id']}: {record['state']} ({record['budget']} epochs) {self.metric} {text}")


def _absolute_data_paths(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides with relative local data paths made absolute: trials run in their own folders, and a
    resume may start from another directory."""
    nested = nest_dotted(overrides)
    for key in DATA_KEYS:
        value = get_dotted(nested, key)
        if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
            set_dotted(nested, key, str(Path(value).expanduser().resolve()))
    return nested


def _path_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def compare(value: float | None, reference: float | None, direction: str) -> dict[str, Any] | None:
    """How `value` compares with `reference` (None when either is missing)."""
    if value is None or reference is None:
        return None
    delta = value - reference
    return {
        "value": value,
        "reference": reference,
        "delta": delta,
        "relative": delta / abs(reference) if reference else None,
        "improved": delta > 0 if direction == "maximize" else delta < 0,
    }


def _compare(final: dict[str, Any], baseline: Mapping[str, Any], direction: str) -> dict[str, Any]:
    final["comparison_to_baseline"] = compare(final.get("metric_value"), baseline.get("metric_value"), direction)
    return final
