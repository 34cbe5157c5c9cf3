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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from mal import __version__
from mal.automl.failures import StudyStoppedError
from mal.automl.hooks import Hooks
from mal.automl.platforms.base import Platform
from mal.automl.platforms.factory import make_platform
from mal.automl.platforms.local import DEFAULT_COMMAND, LocalPlatform
from mal.automl.review import PREFLIGHT_FILE, check_before_launch
from mal.automl.settings import AutoMLSettings, parse_settings, settings_for_algorithm
from mal.automl.stopping import sigterm_as_interrupt
from mal.automl.study import execute, open_study
from mal.automl.study_inputs import StudyInputs, absolute_data_paths
from mal.automl.workspace import RUN_FILE, Workspace
from mal.errors import SpecError
from mal.redaction import MASK, redact_tree

__all__ = ["STORE_FILE", "AutoMLRunner", "Hooks", "StudyStoppedError"]

# In the run folder of a scheduled shared study: the store and study its jobs go to.
STORE_FILE = "store.json"
# In the run folder: how the study's platform was built (make_platform's arguments), so a resume keeps it.
PLATFORM_FILE = "platform.json"


def _saved_platform(workspace: Workspace | None, config: Mapping[str, Any], settings: AutoMLSettings) -> Platform:
    """The platform a resumed study ran on (platform.json), or local CPU slots for a new study or an old folder."""
    if workspace is not None and workspace.path(PLATFORM_FILE).is_file():
        recipe = json.loads(workspace.path(PLATFORM_FILE).read_text(encoding="utf-8"))
        return make_platform(**recipe)
    if workspace is not None and config.get("platform") not in (None, "LocalPlatform"):
        raise SpecError(
            f"{workspace.root} ran on a {config['platform']} built in Python; resume it from Python with "
            "AutoMLRunner(platform=<the same platform>, workspace_dir=RUN_DIR).run(resume=True)."
        )
    command = config.get("command") or DEFAULT_COMMAND
    return LocalPlatform(max_concurrent=settings.automl_max_concurrent, command=command)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
        platform_sdk: Platform | None = None,
    ) -> None:
        # Resolved once, here: trials run with their own folder as working directory, so a relative path would
        # point somewhere else for them (and for a resume started from another directory).
        self.skill_dir = None if skill_dir is None else Path(skill_dir).expanduser().resolve()
        given = [p for p in (platform, sdk, platform_sdk) if p is not None]
        if len(given) > 1:
            raise SpecError("AutoMLRunner takes one of platform=, sdk= and platform_sdk= (TAO's names), not two.")
        self.platform = given[0] if given else None
        self.workspace_dir = Path(workspace_dir).expanduser().resolve()
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
                "spec_overrides": absolute_data_paths(spec_overrides or {}),
                "hyperparameters": list(automl_hyperparameters) if automl_hyperparameters else None,
                "custom_param_ranges": dict(custom_param_ranges or {}),
            }
            workspace = None
        platform = self.platform or _saved_platform(workspace, config, settings)
        preflight_report = None
        if not resume:
            # The algorithm must plan for the concurrency the platform really gives.
            settings.automl_max_concurrent = min(settings.automl_max_concurrent, platform.capacity)
            if isinstance(platform, LocalPlatform):
                config["command"] = platform.command
            config["platform"] = type(platform).__name__
            # Parse and check everything before creating a folder: a typo or a failed preflight must not leave an
            # empty run behind. Building the inputs may fit the metric and the full budget to what the user wrote.
            inputs = StudyInputs.build(config, settings)
            config["notes"] = inputs.notes
            config["settings"] = settings.to_json_dict()
            preflight_report = check_before_launch(inputs, settings)
            workspace = Workspace.create(self.workspace_dir)
            workspace.write_json(RUN_FILE, config)
            workspace.write_json(PREFLIGHT_FILE, preflight_report.to_dict())
            recipe = getattr(platform, "recipe", None)
            if recipe is not None:
                # How to build the platform again on resume; owner-only: Slurm env or a command may hold a secret.
                workspace.write_input_text(PLATFORM_FILE, json.dumps(recipe))
            store_url = getattr(platform, "storage_url", None)
            if store_url is not None:
                # Where a scheduled study's jobs go, for `mal automl resume`; owner-only: the URL may hold a password.
                store = {"storage": store_url, "study": getattr(platform, "study_name", None)}
                workspace.write_input_text(STORE_FILE, json.dumps(store))
        assert workspace is not None
        self.workspace = workspace
        # SIGTERM (kill, systemd, docker stop) stops the running trainings as Ctrl-C does, for API callers too.
        with workspace.runner_lock(), sigterm_as_interrupt():
            ctx = open_study(workspace, config, settings, platform, hooks, self.poll_interval, self.console, self.live)
            return execute(ctx, resume=resume, yes=yes)

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
