"""The two measurements around a search: the baseline (the starting point's metric, before any trial) and the
final evaluation of the BEST checkpoint after it, each compared with the other.

Both are blocking jobs on the study's platform; a runner restarted while one runs re-attaches to it (its job
record is in state.json) instead of starting it again.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mal.automl.failures import classify
from mal.automl.hooks import hook_rec, metric_value, one_line
from mal.automl.platforms.base import JobRecord
from mal.automl.platforms.contract import best_checkpoint, dump_yaml, epoch_metrics, load_yaml, read_eval_metrics
from mal.automl.study_state import StudyContext, job_id_of
from mal.automl.trial_record import best_of
from mal.automl.trials import log_tail, trial_spec
from mal.automl.workspace import write_private_text
from mal.dotted import get_dotted, set_dotted
from mal.jobfiles import final_event, read_status_events


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


def baseline_planned(ctx: StudyContext) -> bool:
    return bool(ctx.hooks.baseline_fn or ctx.settings.baseline_metric is not None or ctx.settings.run_baseline)


def run_baseline(ctx: StudyContext) -> dict[str, Any]:
    """baseline.json, measured before the launch review as TAO does: from baseline_fn or baseline_metric when
    given, else `mal evaluate` of the spec's evaluate.checkpoint, else a calibration training of the spec's own
    values for one resource unit (which also measures the time the review's estimate is made from)."""
    base: dict[str, Any] = {"specs": ctx.base_spec, "metric": ctx.metric}
    if ctx.hooks.baseline_fn is not None:
        try:
            value = metric_value(ctx.hooks.baseline_fn(ctx.base_spec))
        except Exception as exc:
            reason = f"baseline_fn raised {one_line(exc)}"
            return {**base, "kind": "provided", "status": "callback_error", "metric_value": None, "reason": reason}
        status = "provided" if value is not None else "metric_missing"
        return {**base, "kind": "provided", "status": status, "metric_value": value, "reason": "from baseline_fn"}
    if ctx.settings.baseline_metric is not None:
        value = ctx.settings.baseline_metric
        return {**base, "kind": "provided", "status": "provided", "metric_value": value,
                "reason": "automl_settings.baseline_metric"}  # fmt: skip
    if not ctx.settings.run_baseline:
        reason = "run_baseline is off and no baseline_fn / baseline_metric was given"
        return {**base, "kind": None, "status": "skipped", "metric_value": None, "reason": reason}
    checkpoint = get_dotted(ctx.base_spec, "evaluate.checkpoint")
    if checkpoint:
        return {**base, **_evaluated(ctx, "baseline", copy.deepcopy(ctx.base_spec), str(checkpoint),
                                      "the spec's evaluate.checkpoint"), "kind": "evaluation"}
    return {**base, **_calibration(ctx)}


def baseline_blocks(baseline: Mapping[str, Any]) -> str | None:
    """Why a baseline that was meant to be measured stops the launch (None when it does not)."""
    if baseline["status"] in ("failed", "metric_missing", "callback_error", "unavailable"):
        kind = baseline.get("kind") or "baseline"
        return f"The baseline ({kind}) did not give {baseline['metric']}: {baseline['reason']}"
    return None


def _calibration(ctx: StudyContext) -> dict[str, Any]:
    """The spec's own values trained for one resource unit: the baseline metric and the measured times."""
    budget = min(ctx.settings.epoch_multiplier, ctx.algorithm.full_budget)
    results_dir = ctx.ws.root / "baseline"
    spec, adjustments = trial_spec(
        ctx.base_spec, {}, budget, results_dir, None, ctx.platform.devices_per_job, ctx.sample_count
    )
    started = time.time()
    code, events = run_job_blocking(ctx, "baseline", ctx.action, spec, results_dir)
    seconds = time.time() - started
    best = best_checkpoint(results_dir, events)
    out = {
        "kind": "calibration",
        "specs": spec,
        "budget": budget,
        "seconds": round(seconds, 3),
        **_epoch_times(events, seconds, budget),
        "adjustments": adjustments,
        "results_dir": str(results_dir),
        "checkpoint": None if best is None else str(best),
    }
    if code != 0:
        failure = classify(code, log_tail(ctx.platform, "baseline"), (final_event(events) or {}).get("message", ""))
        return {**out, "status": "failed", "metric_value": None, "failure_class": failure.category,
                "reason": f"the calibration training failed ({failure.category}): {failure.reason}"}  # fmt: skip
    value = best_of(epoch_metrics(events, ctx.metric), ctx.settings.direction)
    if value is None:
        reason = f"the calibration training reported no {ctx.metric}"
        return {**out, "status": "metric_missing", "metric_value": None, "reason": reason}
    reason = f"calibration: the spec's own values trained for {budget} epoch(s), not a full training"
    return {**out, "status": "measured", "metric_value": value, "reason": reason}


def _epoch_times(events: Sequence[Mapping[str, Any]], seconds: float, budget: int) -> dict[str, float]:
    """Start-up and per-epoch seconds of a job, split by its status events' clock when they resolve it (the job's
    start-up, paid once per training, must not be charged to every epoch of the estimate)."""
    stamps = []
    for event in events:
        try:
            stamps.append(datetime.fromisoformat(str(event.get("time"))).timestamp())
        except ValueError:
            continue
    span = max(stamps) - min(stamps) if len(stamps) > 1 else 0.0
    if span < 1.0 or span > seconds:
        return {"seconds_per_epoch": round(seconds / max(1, budget), 3), "startup_seconds": 0.0}
    return {"seconds_per_epoch": round(span / max(1, budget), 3), "startup_seconds": round(seconds - span, 3)}


def final_evaluation(ctx: StudyContext) -> dict[str, Any]:
    """final_evaluation.json: the best trial's checkpoint measured by `mal evaluate` (or final_eval_fn)."""
    baseline = ctx.ws.read_json("baseline.json") or {}
    out = _final_evaluation(ctx)
    out["comparison_to_baseline"] = compare(out.get("metric_value"), baseline.get("metric_value"),
                                            ctx.settings.direction)  # fmt: skip
    return out


def _final_evaluation(ctx: StudyContext) -> dict[str, Any]:
    best = ctx.algorithm.best()
    if best is None:
        return {"status": "unavailable", "metric_value": None, "reason": "no trial finished with a metric"}
    record = ctx.state.trials[job_id_of(best.rec_id)]
    out: dict[str, Any] = {
        "rec_id": best.rec_id,
        "job_id": record.job_id,
        "checkpoint": record.checkpoint,
        "search_metric_value": record.metric,
    }
    if ctx.hooks.final_eval_fn is not None:
        try:
            returned = ctx.hooks.final_eval_fn(hook_rec(record), record.job_id)
        except Exception as exc:
            reason = f"final_eval_fn raised {one_line(exc)}"
            return {**out, "status": "callback_error", "metric_value": None, "reason": reason}
        value = metric_value(returned)
        if isinstance(returned, Mapping):
            out["details"] = {k: v for k, v in returned.items() if k != "metric_value"}
        return {
            **out,
            "status": "provided" if value is not None else "metric_missing",
            "metric_value": value,
            "reason": "from final_eval_fn" if value is not None else "final_eval_fn returned no metric",
        }
    if not ctx.settings.run_final_evaluation:
        reason = "run_final_evaluation is off: the best trial's validation metric is reported"
        return {**out, "status": "reused_best", "metric_value": record.metric, "reason": reason}
    if not record.checkpoint or not Path(record.checkpoint).exists():
        reason = f"the best trial {record.job_id} left no best checkpoint to evaluate"
        return {**out, "status": "unavailable", "metric_value": None, "reason": reason}
    spec = load_yaml(Path(record.results_dir) / "spec.yaml")
    return {**out, **_evaluated(ctx, "final_evaluation", spec, record.checkpoint, "the best checkpoint")}


def _evaluated(ctx: StudyContext, job_id: str, spec: dict[str, Any], checkpoint: str, what: str) -> dict[str, Any]:
    """`mal evaluate` of `checkpoint` with `spec` as a blocking job in <run>/<job_id>: status, metric_value,
    reason, metrics (the KPI trainings report as val/mIoU is mIoU in evaluate/metrics.json)."""
    results_dir = ctx.ws.root / job_id
    spec["results_dir"] = str(results_dir)
    set_dotted(spec, "evaluate.checkpoint", checkpoint)
    started = time.time()
    code, events = run_job_blocking(ctx, job_id, "evaluate", spec, results_dir, [f"evaluate.checkpoint={checkpoint}"])
    outcome = evaluation_outcome(code, events, results_dir, ctx.metric, lambda: log_tail(ctx.platform, job_id))
    if outcome["status"] == "measured":
        outcome["reason"] = f"mal evaluate on {what}"
    return {"checkpoint": checkpoint, "seconds": round(time.time() - started, 3), **outcome}


def evaluation_outcome(
    code: int | None, events: list[dict[str, Any]], results_dir: Path, metric: str, tail: Callable[[], str]
) -> dict[str, Any]:
    """What a finished `mal evaluate` job measured: status, metric_value, metric, reason, metrics (the KPI a
    training reports as val/mIoU is mIoU in evaluate/metrics.json). `tail` gives the job's error output."""
    metrics = read_eval_metrics(results_dir)
    out: dict[str, Any] = {"metrics": metrics}
    if code != 0:
        failure = classify(code, tail(), (final_event(events) or {}).get("message", ""))
        reason = f"mal evaluate failed ({failure.category}): {failure.reason}"
        return {**out, "status": "unavailable", "metric_value": None, "reason": reason}
    key = metric.split("/", 1)[-1]
    value = metric_value((metrics or {}).get(key))
    if value is None:
        value = metric_value(((final_event(events) or {}).get("kpi") or {}).get(key))
    if value is None:
        return {**out, "status": "metric_missing", "metric_value": None, "metric": key,
                "reason": f"mal evaluate wrote no {key!r} in evaluate/metrics.json"}  # fmt: skip
    return {**out, "status": "measured", "metric_value": value, "metric": key, "reason": "mal evaluate"}


def run_job_blocking(
    ctx: StudyContext,
    job_id: str,
    action: str,
    spec: dict[str, Any],
    results_dir: Path,
    extra_args: Sequence[str] = (),
) -> tuple[int | None, list[dict[str, Any]]]:
    """Run one job to its end (re-attaching when a previous runner started it); (exit code, events)."""
    platform = ctx.platform
    saved = ctx.state.jobs.get(job_id)
    attached = saved is not None and platform.attach(JobRecord.from_dict(saved))
    if not attached and not (saved is not None and platform.status(job_id).state == "exited"):
        if results_dir.exists():
            shutil.rmtree(results_dir / action, ignore_errors=True)
        spec_path = results_dir / "spec.yaml"
        results_dir.mkdir(parents=True, exist_ok=True)
        write_private_text(spec_path, dump_yaml(spec))
        record = platform.submit(job_id, action, spec_path, results_dir, extra_args)
        ctx.state.jobs[job_id] = record.to_dict()
        ctx.save()
    try:
        while (status := platform.status(job_id)).state == "running":
            platform.wait([job_id], ctx.poll_interval)
    except BaseException:
        # Ctrl-C: stop the job; the next resume starts it again. (A SIGKILLed runner re-attaches instead.)
        platform.cancel(job_id)
        ctx.state.jobs.pop(job_id, None)
        raise
    platform.forget(job_id)
    return status.exit_code, read_status_events(results_dir, action)
