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
from mal.automl.preflight import format_duration, review_markdown, run_preflight
from mal.automl.study_state import StudyContext
from mal.errors import UserError
from mal.redaction import redact_tree


def preflight(ctx: StudyContext) -> None:
    """preflight.json; a failed check stops the launch with every reason in one line."""
    report = run_preflight(Path(ctx.config["skill_dir"]), ctx.base_spec, ctx.settings, None, len(ctx.space.params))
    ctx.ws.write_json("preflight.json", report.to_dict())
    if report.errors:
        raise UserError("AutoML preflight failed: " + "; ".join(report.errors) + ".")


def launch_review(ctx: StudyContext, baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """The review dict (also written as launch_review.json and .md)."""
    recs, epochs = ctx.algorithm.planned_work()
    capacity = ctx.platform.capacity
    seconds_per_epoch = None
    if baseline and baseline.get("seconds") and baseline.get("budget"):
        seconds_per_epoch = baseline["seconds"] / baseline["budget"]
    estimate = None if seconds_per_epoch is None else seconds_per_epoch * epochs / capacity
    if baseline is None:
        baseline_text = "not run yet" if baseline_planned(ctx) else "none (run_baseline is off)"
    else:
        value = baseline.get("metric_value")
        baseline_text = f"{baseline['status']}" + (f", {ctx.metric} = {value:.4f}" if value is not None else "")
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
        "estimate_text": (format_duration(estimate) + " (from the measured baseline)")
        if estimate is not None
        else "unknown until a baseline is measured (set run_baseline: true)",
        "preflight": preflight_report,
        "command": _command_text(ctx, "{spec}"),
        "settings": ctx.settings.to_json_dict(),
    }
    review = redact_tree(review)  # printed as well as written: the settings may hold an endpoint's password
    ctx.ws.write_json("launch_review.json", review)
    ctx.ws.write_text("launch_review.md", review_markdown(review))
    return review


def _command_text(ctx: StudyContext, spec: str) -> list[str]:
    if isinstance(ctx.platform, LocalPlatform):
        return ctx.platform.build_command(ctx.action, spec)
    return ["mal", ctx.action, "-e", spec]


def print_review(ctx: StudyContext, review: Mapping[str, Any]) -> None:
    from rich.markdown import Markdown

    ctx.console.print(Markdown(review_markdown(review)))


def confirm(ctx: StudyContext) -> bool:
    """Ask on the terminal whether to launch; without one, refuse (a study must not start unseen)."""
    if not sys.stdin.isatty():
        raise UserError(
            "The launch needs a confirmation but there is no terminal; rerun with --yes "
            "(or yes=True) to launch without the prompt."
        )
    from rich.prompt import Confirm

    return Confirm.ask("Launch this study?", console=ctx.console, default=False)
