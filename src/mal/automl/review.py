"""Before a study spends anything: the preflight checks, and the launch review that says what will run, how much
of it, on what, against which baseline, and how long it should take (written to launch_review.{json,md}).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mal.automl.evaluation import baseline_planned
from mal.automl.platforms.local import LocalPlatform
from mal.automl.preflight import PreflightReport, format_duration, review_markdown, run_preflight
from mal.automl.settings import AutoMLSettings
from mal.automl.study_inputs import StudyInputs
from mal.automl.study_rules import runner_set_keys
from mal.automl.study_state import StudyContext
from mal.errors import UserError
from mal.redaction import redact_text, redact_tree

PREFLIGHT_FILE = "preflight.json"


def check_before_launch(inputs: StudyInputs, settings: AutoMLSettings) -> PreflightReport:
    """The preflight report of a study not yet created; a failed check stops the launch with every reason in one
    line, before any run folder exists."""
    report = run_preflight(inputs.skill_dir, inputs.base_spec, settings, None, len(inputs.space.params))
    if report.errors:
        raise UserError("AutoML preflight failed: " + "; ".join(report.errors) + ".")
    return report


def preflight(ctx: StudyContext) -> None:
    """preflight.json of a study whose folder was made before it was checked (killed in between)."""
    report = run_preflight(Path(ctx.config["skill_dir"]), ctx.base_spec, ctx.settings, None, len(ctx.space.params))
    ctx.ws.write_json(PREFLIGHT_FILE, report.to_dict())
    if report.errors:
        raise UserError("AutoML preflight failed: " + "; ".join(report.errors) + ".")


def launch_review(ctx: StudyContext, baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """The review dict (also written as launch_review.json and .md)."""
    recs, epochs = ctx.algorithm.planned_work()
    capacity = ctx.platform.capacity
    estimate = wall_time_estimate(baseline, recs, epochs, capacity)
    if baseline is None:
        baseline_text = "not run yet" if baseline_planned(ctx) else "none (run_baseline is off)"
    else:
        value = baseline.get("metric_value")
        baseline_text = f"{baseline['status']}" + (f", {ctx.metric} = {value:.4f}" if value is not None else "")
        baseline_text += f" ({baseline['reason']})" if baseline.get("reason") else ""
    if estimate is not None:
        estimate_text = format_duration(estimate) + f" (from the measured {baseline_kind(baseline)})"
    elif baseline is not None and baseline.get("kind") == "evaluation":
        estimate_text = "unknown: an evaluation times no training; `mal automl status` shows an ETA once a trial ends"
    else:
        estimate_text = "unknown until a training is measured (set run_baseline: true)"
    user_spec = ctx.config.get("spec_overrides") or {}
    runner_keys = runner_set_keys(ctx.settings, user_spec, ctx.space.names, ctx.algorithm.full_budget,
                                  ctx.platform.devices_per_job)  # fmt: skip
    preflight_report = ctx.ws.read_json("preflight.json") or {"checks": [], "warnings": [], "env": {}}
    devices = f"{ctx.platform.devices_per_job} GPU each" if ctx.platform.devices_per_job else "CPU slots"
    full = ctx.algorithm.full_budget
    review = {
        "workspace": str(ctx.ws.root),
        "algorithm": ctx.settings.algorithm,
        "metric": ctx.metric,
        "direction": ctx.settings.direction,
        "space": [param.describe() for param in ctx.space.params],
        "planned_recommendations": recs,
        "planned_epochs": epochs,
        "full_budget_epochs": full,
        "budget_text": f"≈{recs} trainings, ≈{epochs} epochs in all (a full training is {full} epochs)",
        "concurrency": capacity,
        "devices": devices,
        "train_sample_count": ctx.sample_count,
        "baseline": dict(baseline) if baseline else None,
        "baseline_text": baseline_text,
        "estimated_seconds": estimate,
        "estimate_text": estimate_text,
        "notes": list(ctx.config.get("notes") or []),
        "runner_keys": runner_keys,
        "preflight": preflight_report,
        "command": _command_text(ctx, "{spec}"),
        "settings": ctx.settings.to_json_dict(),
    }
    review = redact_tree(review)  # printed as well as written: the settings may hold an endpoint's password
    ctx.ws.write_json("launch_review.json", review)
    ctx.ws.write_text("launch_review.md", review_text(review))
    return review


def review_text(review: Mapping[str, Any]) -> str:
    """The review as markdown: the preflight's page, then what was read from where and what the runner sets."""
    lines = [review_markdown(review).rstrip("\n"), ""]
    if review.get("notes"):
        lines += ["## Read from your study", "", *[f"- {note}" for note in review["notes"]], ""]
    lines += ["## Keys the runner sets in every trial", "", "| key | value | from |", "|---|---|---|"]
    lines += [f"| `{k['key']}` | {k['value']} | {k['source']} |" for k in review.get("runner_keys") or []]
    return redact_text("\n".join(lines) + "\n")


def wall_time_estimate(baseline: Mapping[str, Any] | None, recs: int, epochs: int, capacity: int) -> float | None:
    """Seconds the planned work should take, from a measured calibration training: each training pays the
    measured start-up once and the measured time per epoch for every epoch (None when nothing was measured)."""
    if not baseline or baseline.get("kind") != "calibration" or not baseline.get("seconds"):
        return None
    per_epoch = baseline.get("seconds_per_epoch") or baseline["seconds"] / max(1, baseline.get("budget") or 1)
    startup = baseline.get("startup_seconds") or 0.0
    return (recs * startup + epochs * per_epoch) / max(1, capacity)


def baseline_kind(baseline: Mapping[str, Any] | None) -> str:
    return "calibration training" if baseline and baseline.get("kind") == "calibration" else "baseline"


def _command_text(ctx: StudyContext, spec: str) -> list[str]:
    if isinstance(ctx.platform, LocalPlatform):
        return ctx.platform.build_command(ctx.action, spec)
    return ["mal", ctx.action, "-e", spec]


def print_review(ctx: StudyContext, review: Mapping[str, Any]) -> None:
    from rich.markdown import Markdown

    ctx.console.print(Markdown(review_text(review)))


def confirm(ctx: StudyContext) -> bool:
    """Ask on the terminal whether to launch; without one, refuse (a study must not start unseen). End of input
    (Ctrl-D) at the prompt is a no."""
    if not sys.stdin.isatty():
        raise UserError(
            "The launch needs a confirmation but there is no terminal; rerun with --yes "
            "(or yes=True) to launch without the prompt."
        )
    from rich.prompt import Confirm

    try:
        return Confirm.ask("Launch this study?", console=ctx.console, default=False)
    except EOFError:
        ctx.console.print()
        return False
