"""`mal automl run|status|resume|report`: the study from the command line.

    mal automl run -e automl.yaml [--yes]     start a study described by a YAML file (keys below)
    mal automl status RUN_DIR [--json]        progress, best so far, every trial
    mal automl resume RUN_DIR [--yes]         continue a stopped or crashed study from its folder alone
                                              (Ctrl-C or SIGTERM stop a study's trainings with it: exit 130/143)
    mal automl report RUN_DIR                 (re)write report/report.md and report.html

Distributed studies (one study in a shared store, any number of workers on any machines; docs/SCALING.md):
    mal automl run -e automl.yaml --storage URL --study NAME [--create-only]   create it (and work on it);
        hyperband, dehb, mobster, pbt and the LLM searches run their one scheduler here (a run folder the workers share)
    mal automl worker --storage URL --study NAME [--platform local|slurm]     run its trials here
    mal automl status --storage URL --study NAME [--json]                     progress, from the store
    mal automl report --storage URL --study NAME [--out DIR]                  report page, from the store
        (and the final evaluation of a study created with --create-only, once every trial has ended)

A local study: preflight -> baseline (measured before the review, as TAO) -> launch review -> confirmation ->
search -> final evaluation of the best checkpoint -> report; docs/AUTOML.md walks through it.

automl.yaml keys: skill_dir (default: generated with `mal schema` into the workspace), workspace_dir,
algorithm (or TAO's automl_algorithm), spec (a base spec file, relative to the study file), automl_settings (TAO's
names; unprefixed max_epochs, reduction_factor, ... are read as automl_*), spec_overrides, hyperparameters (or
automl_hyperparameters), custom_param_ranges,
poll_interval, command (the trial command template, default `python -m mal {action} -e {spec}`), kill_grace,
platform (local | slurm), slurm (partition, account, time_limit, cpus_per_task, mem, use_gpus, extra_sbatch_args),
heartbeat_interval and grace_period (distributed studies: seconds between a worker's heartbeats, and silence
after which its trial is failed and retried once).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from mal.automl.cli_shared import (
    distributed_target,
    print_summary,
    resume_scheduled,
    run_distributed,
    status_distributed,
    study_runner,
)
from mal.automl.cli_shared import worker_command as _worker
from mal.automl.stopping import TerminatedError, sigterm_as_interrupt
from mal.automl.study_file import (
    command_problem,
    generate_skill_dir,
    read_study_file,
    run_arguments,
    shown,
    study_value,
)
from mal.errors import UserError
from mal.redaction import redact_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mal automl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="command", required=True,
                                     help="what to do with a study (`mal automl COMMAND --help` for its options)")
    run = commands.add_parser("run", help="start a study from an automl.yaml")
    run.add_argument(
        "-e",
        "--experiment_spec",
        "--experiment-spec",
        dest="spec",
        required=True,
        type=Path,
        metavar="AUTOML_YAML",
        help="study file (see `mal automl --help`)",
    )
    run.add_argument("--workspace", type=Path, default=None, help="override workspace_dir")
    run.add_argument("--storage", default=None, help="shared store URL: run the study distributed (docs/SCALING.md)")
    run.add_argument("--study", default=None, help="name of the distributed study (default: the file's stem)")
    run.add_argument("--create-only", action="store_true", help="create the distributed study, run no trials here")
    resume = commands.add_parser("resume", help="continue a study from its run folder")
    resume.add_argument("run_dir", type=Path, help="the study's run folder, e.g. automl_runs/run_20261205T120000Z")
    for sub in (run, resume):
        sub.add_argument("--yes", "-y", action="store_true", help="launch without the confirmation prompt")
        sub.add_argument("--poll-interval", type=float, default=None, help="seconds between looks at trials")
        sub.add_argument("--no-live", action="store_true", help="print one line per trial instead of a live table")
    status = commands.add_parser("status", help="progress and trials of a study")
    status.add_argument("run_dir", type=Path, nargs="?",
                        help="the study's run folder, e.g. automl_runs/run_20261205T120000Z (or --storage and --study)")
    status.add_argument("--json", action="store_true", help="print the result dict as JSON")
    report = commands.add_parser("report", help="write the study's report")
    report.add_argument("run_dir", type=Path, nargs="?",
                        help="the study's run folder, e.g. automl_runs/run_20261205T120000Z (or --storage and --study)")
    report.add_argument("--out", type=Path, default=None, help="report folder of a distributed study")
    for sub in (status, report):
        sub.add_argument("--storage", default=None, help="shared store URL of a distributed study")
        sub.add_argument("--study", default=None, help="name of the distributed study")
    worker = commands.add_parser("worker", help="run trials of a distributed study on this machine or on Slurm")
    worker.add_argument("--storage", required=True, help="shared store URL (postgresql://..., a journal file)")
    worker.add_argument("--study", required=True, help="name of the distributed study")
    worker.add_argument("--platform", choices=("local", "slurm"), default="local", help="where trials run")
    worker.add_argument("--workspace", type=Path, default=Path("automl_runs"), help="parent of trial folders")
    worker.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: the study's)")
    worker.add_argument("--poll-interval", type=float, default=2.0, help="seconds between looks at trials")
    worker.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the study to be created")
    worker.add_argument("--partition", default=None, help="Slurm partition (overrides the study's)")
    worker.add_argument("--account", default=None, help="Slurm account (overrides the study's)")
    worker.add_argument("--time", dest="time_limit", default=None, help="Slurm time limit, e.g. 04:00:00")
    return parser


def _platform(study: Mapping[str, Any], settings: Mapping[str, Any] | None) -> Any:
    from mal.automl.platforms.factory import make_platform
    from mal.automl.settings import parse_settings

    return make_platform(
        study_value(study, "platform", "local"),
        max_concurrent=parse_settings(settings or {}).automl_max_concurrent,
        command=study.get("command"),
        kill_grace=float(study_value(study, "kill_grace", 5.0)),
        slurm=study.get("slurm"),
    )


def _check_poll_interval(args: argparse.Namespace) -> None:
    value = args.poll_interval
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"--poll-interval {value} must be a number of seconds > 0.")


def _run(args: argparse.Namespace, console: Console) -> int:

    _check_poll_interval(args)
    study = read_study_file(args.spec)
    workspace_dir = Path(args.workspace or study.get("workspace_dir") or "automl_runs")
    settings = dict(study.get("automl_settings") or {})
    # The platform checks its own settings: build it before `mal schema` writes the skill dir into the workspace.
    platform = None if args.storage or args.study else _platform(study, settings)
    skill_dir = study.get("skill_dir")
    if skill_dir is None:
        skill_dir = generate_skill_dir(workspace_dir / "skill")
    if args.storage or args.study:
        return run_distributed(args, study, Path(skill_dir), settings, workspace_dir, console)
    runner = study_runner(
        args, study, skill_dir, platform, workspace_dir, console, console.is_terminal and not args.no_live
    )
    result = runner.run(**run_arguments(study, settings, args.yes))
    print_summary(result, console)
    return 0


def _resume(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.runner import STORE_FILE, AutoMLRunner
    from mal.automl.workspace import RUN_FILE, Workspace

    _check_poll_interval(args)
    workspace = Workspace.open(args.run_dir)
    config = _read_run_file(workspace.root / RUN_FILE)
    if workspace.path(STORE_FILE).is_file():
        return resume_scheduled(args, workspace, config, console)
    # The runner builds the study's own platform again from the run folder (a Slurm study stays on Slurm).
    runner = AutoMLRunner(
        workspace_dir=workspace.root,
        poll_interval=args.poll_interval or 5.0,
        console=console,
        live=console.is_terminal and not args.no_live,
    )
    result = runner.run(resume=True, yes=args.yes)
    print_summary(result, console)
    return 0


def _read_run_file(path: Path) -> dict[str, Any]:
    """The study's saved run.json, checked enough that a damaged one is a one-line error, not a traceback."""
    from mal.automl.settings import parse_settings

    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__}); the study cannot be resumed from it.") from None
    except RecursionError:
        raise UserError(f"{path} nests too deeply to be read; the study cannot be resumed from it.") from None
    if not isinstance(config, dict) or not isinstance(config.get("settings"), dict):
        raise UserError(f"{path} holds no study settings (it is damaged); the study cannot be resumed from it.")
    command = config.get("command")
    if command is not None and command_problem(command) is not None:
        raise UserError(f"{path}: command = {shown(command)} {command_problem(command)}.")
    parse_settings(config["settings"], source=f"{path} settings")
    return config


def _status(args: argparse.Namespace, console: Console) -> int:
    try:
        # rich meets a closed pipe with SystemExit(1) (Console.on_broken_pipe): its text is written here instead,
        # so a reader that stopped early is handled below for the table as for --json.
        with console.capture() as captured:
            code = _show_status(args, console)
        sys.stdout.write(captured.get())
        # Flushed inside the try: a reader that stopped early (`| head -1`) must fail this flush, not the
        # interpreter's own at exit, which would print "Exception ignored ... BrokenPipeError" and exit 120.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader took what it wanted and closed the pipe: status has done its job. Python's recipe
        # (docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at devnull so nothing is flushed
        # into the closed pipe again.
        _stdout_to_devnull()
        return 0


def _show_status(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.eta import eta_text
    from mal.automl.report import annotated_history, study_result, trials_table

    target = distributed_target(args)
    if target is not None:
        return status_distributed(*target, args.json, console)
    result = study_result(args.run_dir)
    if args.json:
        # Each trial as the table shows it too: wall_seconds (so far, while running), epochs_trained, params_text.
        result = {**result, "history": annotated_history(result["history"])}
        print(json.dumps(result, indent=2, default=str))
        return 0
    progress = result["progress"]
    console.print(trials_table(result["history"], title=f"{result['workspace']} ({result['phase']})", eta=""))
    console.print(
        f"{progress['completed']}/{progress['total']} finished, {progress['running']} running, "
        f"{progress['failed']} failed; best {result.get('metric')} = {progress['best_metric']} "
        f"(rec {progress['best_rec_id']})"
    )
    console.print(eta_text(progress))
    if result["stopped_reason"]:
        console.print(f"stopped: {result['stopped_reason']}")
    return 0


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        # stdout is no file descriptor (a test's capture): replacing the object does the same.
        sys.stdout = os.fdopen(devnull, "w")
        return
    os.close(devnull)


def _report(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.report import write_report

    target = distributed_target(args)
    if target is not None:
        from mal.automl.distributed_report import write_distributed_report
        from mal.automl.store_final import evaluate_best_in_store

        # A study created with --create-only has had no final evaluation yet: it runs here once every trial ended.
        evaluate_best_in_store(*target, Path("automl_runs"), console)
        out = args.out or Path("automl_runs") / target[1] / "report"
        console.print(str(write_distributed_report(*target, out)))
        return 0
    console.print(str(write_report(args.run_dir)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    console = Console()
    handler = {"run": _run, "resume": _resume, "status": _status, "report": _report, "worker": _worker}[args.command]
    try:
        with sigterm_as_interrupt():
            return handler(args, console)
    except UserError as exc:
        print(f"mal automl {args.command}: error: {redact_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # 128 + the signal, as a shell reports a process that signal ended; the running trainings are stopped.
        terminated = isinstance(exc, TerminatedError)
        code, how = (143, "terminated (SIGTERM)") if terminated else (130, "interrupted")
        if args.command == "worker" or getattr(args, "storage", None):
            # A scheduled study (hyperband, dehb, mobster, pbt, LLM) keeps its search in a run folder: resume
            # continues it.
            then = (
                "; a scheduled study's scheduler continues with `mal automl resume RUN_DIR`"
                if args.command == "run"
                else ""
            )
            print(
                f"mal automl {args.command}: stopped; its running trials went back to the study{then}.", file=sys.stderr
            )
            return code
        then = "; continue with `mal automl resume`" if args.command in ("run", "resume") else ""
        print(f"mal automl {args.command}: {how}{then}.", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
