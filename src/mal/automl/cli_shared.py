"""The shared-study commands of `mal automl`: create a study in a store (and work on it), its scheduler when the
algorithm needs one, `mal automl worker`, and status read from the store."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from mal.automl.study_file import run_arguments, study_value
from mal.errors import UserError


def print_summary(result: Mapping[str, Any], console: Console) -> None:
    if result["phase"] == "declined":
        console.print(
            f"launch declined; nothing ran. Launch it later with `mal automl resume {result['workspace']}` "
            f"(it shows the review again)."
        )
        return
    best, final, baseline = result["best"], result["final_evaluation"], result["baseline"]
    metric = result.get("metric") or "metric"
    console.print(f"study: {result['workspace']} ({result['phase']})")
    console.print(f"baseline {metric}: {baseline.get('metric_value')} ({baseline['status']})")
    console.print(f"best {metric}: {best['metric_value']} ({best['job_id']}, checkpoint {best['checkpoint']})")
    console.print(f"final evaluation: {final.get('metric_value')} ({final['status']})")
    console.print(f"report: {result['report']}")


def run_distributed(
    args: argparse.Namespace,
    study: Mapping[str, Any],
    skill_dir: Path,
    settings: dict[str, Any],
    workspace_dir: Path,
    console: Console,
) -> int:
    from mal.automl.storage import CONFIG_ATTR, create_distributed_study, redact

    name = args.study or args.spec.stem
    storage = args.storage or str(workspace_dir / f"{name}.journal")
    if study.get("algorithm") is not None:
        settings.setdefault("algorithm", study["algorithm"])
    workspace_dir.mkdir(parents=True, exist_ok=True)
    created = create_distributed_study(
        storage,
        name,
        skill_dir,
        automl_settings=settings,
        spec_overrides=study.get("spec_overrides"),
        automl_hyperparameters=study.get("hyperparameters") or study.get("automl_hyperparameters"),
        custom_param_ranges=study.get("custom_param_ranges"),
        command=study.get("command"),
        slurm=study.get("slurm"),
        heartbeat_interval=float(study_value(study, "heartbeat_interval", 10.0)),
        grace_period=float(study_value(study, "grace_period", 60.0)),
        kill_grace=study.get("kill_grace"),
    )
    console.print(
        f"study {name!r} is ready in {redact(storage)}; add workers with "
        f"`mal automl worker --storage {redact(storage)} --study {name}`"
    )
    if created.user_attrs[CONFIG_ATTR].get("scheduler"):
        return run_scheduled(args, study, name, storage, skill_dir, settings, workspace_dir, console)
    if args.create_only:
        return 0
    _study_worker(args, study, storage, name, workspace_dir, console).run()
    from mal.automl.store_final import evaluate_best_in_store

    evaluate_best_in_store(storage, name, workspace_dir, console)
    return status_distributed(storage, name, False, console)


def run_scheduled(
    args: argparse.Namespace,
    study: Mapping[str, Any],
    name: str,
    storage: str,
    skill_dir: Path,
    settings: dict[str, Any],
    workspace_dir: Path,
    console: Console,
) -> int:
    """An algorithm that needs one scheduler (hyperband, dehb, mobster, pbt, the LLM searches): the study runs here as a
    local study whose jobs the workers run; with --create-only no worker runs in this process."""
    from mal.automl.platforms.store import StorePlatform
    from mal.automl.scheduled import run_scheduled_study
    from mal.automl.settings import parse_settings

    platform = StorePlatform(storage, name, parse_settings(settings).automl_max_concurrent)
    worker = None
    if not args.create_only:
        worker = _study_worker(args, study, storage, name, workspace_dir, console)
    console.print(f"study {name!r} runs one scheduler (its {settings.get('algorithm')} search) in this process")
    runner = study_runner(args, study, skill_dir, platform, workspace_dir, console, live=False)
    run_kwargs = run_arguments(study, settings, args.yes)
    print_summary(run_scheduled_study(runner, run_kwargs, worker), console)
    return 0


def worker_command(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.worker import StudyWorker

    StudyWorker(
        args.storage,
        args.study,
        platform_name=args.platform,
        workspace_dir=args.workspace,
        poll_interval=args.poll_interval,
        max_concurrent=args.max_concurrent,
        console=console,
        wait_for_study=args.wait,
        partition=args.partition,
        account=args.account,
        time_limit=args.time_limit,
    ).run()
    return 0


def status_distributed(storage: str, study: str, as_json: bool, console: Console) -> int:
    from mal.automl.distributed_report import distributed_result, summary_line
    from mal.automl.report import trials_table

    result = distributed_result(storage, study)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    console.print(trials_table(result["history"], title=f"{study} ({result['storage']})"))
    console.print(summary_line(result))
    return 0


def distributed_target(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.storage is None and args.study is None:
        if args.run_dir is None:
            raise UserError(f"mal automl {args.command} needs a RUN_DIR, or --storage and --study.")
        return None
    if args.storage is None or args.study is None:
        raise UserError(f"mal automl {args.command} of a distributed study needs both --storage and --study.")
    return args.storage, args.study


def resume_scheduled(args: argparse.Namespace, workspace: Any, config: Mapping[str, Any], console: Console) -> int:
    """Continue the scheduler of a shared study (its store and study are in the run folder's store.json), with a
    worker beside it as `mal automl run --storage` had."""
    from mal.automl.platforms.store import StorePlatform
    from mal.automl.runner import STORE_FILE, AutoMLRunner
    from mal.automl.scheduled import run_scheduled_study
    from mal.automl.worker import StudyWorker

    store = json.loads(workspace.path(STORE_FILE).read_text(encoding="utf-8"))
    capacity = config["settings"]["automl_max_concurrent"]
    platform = StorePlatform(store["storage"], store["study"], capacity)
    worker = StudyWorker(store["storage"], store["study"], workspace_dir=workspace.root.parent,
                         poll_interval=args.poll_interval or 2.0, console=console)  # fmt: skip
    runner = AutoMLRunner(platform=platform, workspace_dir=workspace.root, poll_interval=args.poll_interval or 5.0,
                          console=console)  # fmt: skip
    print_summary(run_scheduled_study(runner, {"resume": True, "yes": args.yes}, worker), console)
    return 0


def _study_worker(
    args: argparse.Namespace, study: Mapping[str, Any], storage: str, name: str, workspace_dir: Path, console: Console
) -> Any:
    """The worker `mal automl run --storage` runs in its own process, on the study file's platform."""
    from mal.automl.worker import StudyWorker

    return StudyWorker(
        storage,
        name,
        platform_name=study_value(study, "platform", "local"),
        workspace_dir=workspace_dir,
        poll_interval=args.poll_interval or float(study_value(study, "poll_interval", 2.0)),
        console=console,
    )


def study_runner(
    args: argparse.Namespace,
    study: Mapping[str, Any],
    skill_dir: str | Path,
    platform: Any,
    workspace_dir: Path,
    console: Console,
    live: bool,
) -> Any:
    """The `AutoMLRunner` a study file describes, on `platform` (None: local CPU slots)."""
    from mal.automl.runner import AutoMLRunner

    return AutoMLRunner(
        skill_dir=skill_dir,
        platform=platform,
        workspace_dir=workspace_dir,
        poll_interval=args.poll_interval or float(study_value(study, "poll_interval", 5.0)),
        console=console,
        live=live,
    )
