"""`mal automl run|status|resume|report`: the study from the command line.

    mal automl run -e automl.yaml [--yes]     start a study described by a YAML file (keys below)
    mal automl status RUN_DIR [--json]        progress, best so far, every trial
    mal automl resume RUN_DIR [--yes]         continue a stopped or crashed study from its folder alone
    mal automl report RUN_DIR                 (re)write report/report.md and report.html

automl.yaml keys: skill_dir (default: generated with `mal schema` into the workspace), workspace_dir,
algorithm, automl_settings, spec_overrides, hyperparameters (or automl_hyperparameters), custom_param_ranges,
poll_interval, command (the trial command template, default `python -m mal {action} -e {spec}`), kill_grace.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from mal.errors import SpecError, UserError

STUDY_KEYS = (
    "skill_dir",
    "workspace_dir",
    "algorithm",
    "automl_settings",
    "spec_overrides",
    "hyperparameters",
    "automl_hyperparameters",
    "custom_param_ranges",
    "poll_interval",
    "command",
    "kill_grace",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mal automl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
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
    resume = commands.add_parser("resume", help="continue a study from its run folder")
    resume.add_argument("run_dir", type=Path)
    for sub in (run, resume):
        sub.add_argument("--yes", "-y", action="store_true", help="launch without the confirmation prompt")
        sub.add_argument("--poll-interval", type=float, default=None, help="seconds between looks at trials")
        sub.add_argument("--no-live", action="store_true", help="print one line per trial instead of a live table")
    status = commands.add_parser("status", help="progress and trials of a study")
    status.add_argument("run_dir", type=Path)
    status.add_argument("--json", action="store_true", help="print the result dict as JSON")
    report = commands.add_parser("report", help="write the study's report")
    report.add_argument("run_dir", type=Path)
    return parser


def read_study_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SpecError(f"AutoML study file {path} does not exist; pass the path of your automl.yaml.") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"AutoML study file {path} is not valid YAML ({exc}); fix it.") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"AutoML study file {path} must hold a mapping of keys; see `mal automl --help`.")
    for key in data:
        if key not in STUDY_KEYS:
            hint = difflib.get_close_matches(str(key), STUDY_KEYS, n=1, cutoff=0.6)
            tip = f" Did you mean {hint[0]}?" if hint else f" Known keys: {', '.join(STUDY_KEYS)}."
            raise SpecError(f"AutoML study file {path} has unknown key {key!r}.{tip}")
    if "hyperparameters" in data and "automl_hyperparameters" in data:
        raise SpecError(f"{path} sets both hyperparameters and automl_hyperparameters; keep one.")
    return dict(data)


def generate_skill_dir(out: Path) -> Path:
    """Write our skill layout with `mal schema` (a subprocess: AutoML never imports the spec models' users)."""
    done = subprocess.run(
        [sys.executable, "-m", "mal", "schema", "--out", str(out)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise UserError(f"`mal schema --out {out}` failed: {done.stderr.strip().splitlines()[-1:]}")
    return out


def _platform(study: Mapping[str, Any], settings: Mapping[str, Any] | None) -> Any:
    from mal.automl.platforms.local import DEFAULT_COMMAND, LocalPlatform
    from mal.automl.settings import parse_settings

    parsed = parse_settings(settings or {})
    return LocalPlatform(
        max_concurrent=parsed.automl_max_concurrent,
        command=study.get("command") or DEFAULT_COMMAND,
        kill_grace=float(study.get("kill_grace", 5.0)),
    )


def _run(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.runner import AutoMLRunner

    study = read_study_file(args.spec)
    workspace_dir = Path(args.workspace or study.get("workspace_dir") or "automl_runs")
    skill_dir = study.get("skill_dir")
    if skill_dir is None:
        skill_dir = generate_skill_dir(workspace_dir / "skill")
    settings = dict(study.get("automl_settings") or {})
    runner = AutoMLRunner(
        skill_dir=skill_dir,
        platform=_platform(study, settings),
        workspace_dir=workspace_dir,
        poll_interval=args.poll_interval or float(study.get("poll_interval", 5.0)),
        console=console,
        live=console.is_terminal and not args.no_live,
    )
    result = runner.run(
        automl_algorithm=study.get("algorithm"),
        automl_settings=settings,
        spec_overrides=study.get("spec_overrides"),
        automl_hyperparameters=study.get("hyperparameters") or study.get("automl_hyperparameters"),
        custom_param_ranges=study.get("custom_param_ranges"),
        yes=args.yes,
    )
    _print_summary(result, console)
    return 0


def _resume(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.platforms.local import DEFAULT_COMMAND, LocalPlatform
    from mal.automl.runner import AutoMLRunner
    from mal.automl.workspace import RUN_FILE, Workspace

    workspace = Workspace.open(args.run_dir)
    config = workspace.read_json(RUN_FILE)
    platform = LocalPlatform(
        max_concurrent=config["settings"]["automl_max_concurrent"], command=config.get("command") or DEFAULT_COMMAND
    )
    runner = AutoMLRunner(
        platform=platform,
        workspace_dir=workspace.root,
        poll_interval=args.poll_interval or 5.0,
        console=console,
        live=console.is_terminal and not args.no_live,
    )
    result = runner.run(resume=True, yes=args.yes)
    _print_summary(result, console)
    return 0


def _print_summary(result: Mapping[str, Any], console: Console) -> None:
    best, final, baseline = result["best"], result["final_evaluation"], result["baseline"]
    metric = result.get("metric") or "metric"
    console.print(f"study: {result['workspace']} ({result['phase']})")
    console.print(f"baseline {metric}: {baseline.get('metric_value')} ({baseline['status']})")
    console.print(f"best {metric}: {best['metric_value']} ({best['job_id']}, checkpoint {best['checkpoint']})")
    console.print(f"final evaluation: {final.get('metric_value')} ({final['status']})")
    console.print(f"report: {result['report']}")


def _status(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.report import study_result, trials_table

    result = study_result(args.run_dir)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    progress = result["progress"]
    console.print(trials_table(result["history"], title=f"{result['workspace']} ({result['phase']})"))
    console.print(
        f"{progress['completed']}/{progress['total']} finished, {progress['running']} running, "
        f"{progress['failed']} failed; best {result.get('metric')} = {progress['best_metric']} "
        f"(rec {progress['best_rec_id']})"
    )
    if result["stopped_reason"]:
        console.print(f"stopped: {result['stopped_reason']}")
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from mal.automl.report import write_report

    console.print(str(write_report(args.run_dir)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    console = Console()
    handler = {"run": _run, "resume": _resume, "status": _status, "report": _report}[args.command]
    try:
        return handler(args, console)
    except UserError as exc:
        print(f"mal automl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mal automl {args.command}: interrupted; continue with `mal automl resume`.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
