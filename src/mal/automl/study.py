"""One local study from start to end, in phases that survive a restart:

    new (preflight) -> baseline -> review (+ confirmation) -> search -> final -> done
                                       declined <-+         stopped <-+ (repeated failures; resume continues)

Each phase's outcome is on disk before the next starts (state.json, baseline.json, final_evaluation.json), so
`mal automl resume` picks up at the phase it stopped in. The parts live in their own modules: the launch review
(`review`), baseline and final evaluation (`evaluation`), the search loop (`scheduler`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.console import Console

from mal.automl.algorithms import make_algorithm
from mal.automl.evaluation import baseline_blocks, final_evaluation, run_baseline
from mal.automl.failures import StudyStoppedError
from mal.automl.hooks import Hooks
from mal.automl.platforms.base import Platform
from mal.automl.platforms.contract import count_train_samples, dump_yaml, load_yaml
from mal.automl.review import PREFLIGHT_FILE, confirm, launch_review, preflight, print_review
from mal.automl.scheduler import Scheduler
from mal.automl.settings import AutoMLSettings
from mal.automl.study_inputs import StudyInputs
from mal.automl.study_journal import JOURNAL_FILE, StudyJournal
from mal.automl.study_state import StudyContext, StudyState
from mal.automl.tracking import StudyTracker
from mal.automl.workspace import Workspace
from mal.redaction import MASK


def open_study(
    workspace: Workspace,
    config: dict[str, Any],
    settings: AutoMLSettings,
    platform: Platform,
    hooks: Hooks,
    poll_interval: float,
    console: Console,
    live: bool,
) -> StudyContext:
    """The context of the study in `workspace` (its inputs read, its algorithm fresh, its state empty)."""
    inputs = StudyInputs.build(config, settings)
    base_spec = inputs.base_spec
    if MASK in json.dumps(config.get("spec_overrides")) and workspace.path("base_spec.yaml").is_file():
        # run.json keeps overrides with their secrets hidden; the trainings of a resumed study need the data
        # URLs whole, which only the owner-only base_spec.yaml written at the start still holds.
        base_spec = load_yaml(workspace.path("base_spec.yaml"))
    space = inputs.space
    journal = StudyJournal(
        workspace.path(JOURNAL_FILE), workspace.root.name, settings.direction, [p.describe() for p in space.params]
    )
    return StudyContext(
        ws=workspace,
        config=config,
        settings=settings,
        platform=platform,
        hooks=hooks,
        space=space,
        base_spec=base_spec,
        algorithm=make_algorithm(settings.algorithm, space, settings),
        tracker=StudyTracker(workspace.root, settings.metric, base_spec.get("wandb")),
        journal=journal,
        console=console,
        poll_interval=poll_interval,
        live=live,
    )


def execute(ctx: StudyContext, resume: bool, yes: bool) -> dict[str, Any]:
    """Run (or continue) the study to its end; the result dict (also result.json)."""
    from mal.automl.report import study_result, write_report

    scheduler = Scheduler(ctx)
    if resume:
        _restore(ctx, scheduler)
    state = ctx.state
    if resume and state.phase == "declined":
        state.phase = "review"  # resuming a declined launch shows the review again
    if not ctx.ws.path("base_spec.yaml").exists():
        ctx.ws.write_input_text("base_spec.yaml", dump_yaml(ctx.base_spec))
    ctx.sample_count = ctx.settings.train_sample_count or count_train_samples(ctx.base_spec)
    try:
        if state.phase == "new":
            if not ctx.ws.path(PREFLIGHT_FILE).is_file():
                preflight(ctx)
            state.phase = "baseline"
            ctx.save()
        if state.phase == "baseline":
            # Measured before the review, as TAO does: the review shows its metric and the time it took.
            baseline = run_baseline(ctx)
            ctx.ws.write_json("baseline.json", baseline)
            blocked = baseline_blocks(baseline)
            if blocked is not None:
                ctx.state.jobs.pop("baseline", None)  # the resume after the fix measures it again
                code = 2 if baseline.get("failure_class") in (None, "spec", "data", "metric_missing") else 1
                raise StudyStoppedError(f"{blocked}. Fix it, then launch with `mal automl resume {ctx.ws.root}`.",
                                        code)  # fmt: skip
            state.phase = "review"
            ctx.save()
        if state.phase == "review":
            print_review(ctx, launch_review(ctx, ctx.ws.read_json("baseline.json")))
            if not yes and not confirm(ctx):
                state.phase = "declined"
                ctx.save()
                return _finish(ctx, study_result(ctx.ws))
            state.phase = "search"
            ctx.save()
        if state.phase in ("search", "stopped"):
            state.phase, state.stopped_reason, state.no_metric_streak = "search", None, []
            ctx.save()
            scheduler.run()
            no_metric_anywhere(ctx)
            state.phase = "final"
            ctx.save()
        if state.phase == "final":
            ctx.ws.write_json("final_evaluation.json", final_evaluation(ctx))
            state.phase = "done"
            ctx.save()
    except StudyStoppedError as exc:
        scheduler.stop_running()
        # A failed baseline stays in its phase: the next resume measures it again before the review.
        state.phase = "stopped" if state.phase == "search" else state.phase
        state.stopped_reason = str(exc)
        ctx.save()
        write_report(ctx.ws)
        raise
    except BaseException:
        # Ctrl-C or a bug: running trials are stopped and re-run by the next resume.
        scheduler.stop_running()
        ctx.save()
        raise
    finally:
        ctx.tracker.close([param.name for param in ctx.space.params])
    write_report(ctx.ws)
    return _finish(ctx, study_result(ctx.ws))


def no_metric_anywhere(ctx: StudyContext) -> None:
    """A search that ended without one trial with a metric has found nothing: stop (never exit 0) and say why."""
    if ctx.algorithm.best() is not None or not ctx.state.trials:
        return
    failures = [r.failure for r in ctx.state.trials.values() if r.failure]
    causes = Counter(f"{f['category']}: {f['reason']}" for f in failures).most_common(1)
    cause = causes[0][0] if causes else "no trial reported the metric"
    user_caused = {f["category"] for f in failures} <= {"spec", "data", "metric_missing"}
    raise StudyStoppedError(
        f"No trial of the study finished with a metric ({len(ctx.state.trials)} trials; most common cause {cause}). "
        f"Fix it, then continue with `mal automl resume {ctx.ws.root}`.",
        2 if failures and user_caused else 1,
    )


def _restore(ctx: StudyContext, scheduler: Scheduler) -> None:
    saved = ctx.ws.read_json("state.json")
    if saved is None:
        return  # killed before the first save: start the study in the same folder
    ctx.state = StudyState.from_dict(saved)
    if saved.get("algorithm"):
        ctx.algorithm.load_state_dict(saved["algorithm"])
    scheduler.restore()
    ctx.save()


def _finish(ctx: StudyContext, result: dict[str, Any]) -> dict[str, Any]:
    ctx.ws.write_json("result.json", result)
    return result
