"""The coordinator's view of a shared study: the result dict and a report page, read from the store alone.

`distributed_result(storage, study)` has the same shape as `study_result` of a local run (best, progress,
history with the same entry keys, so `trials_table` draws it too), plus which worker and host ran each trial.
`write_distributed_report(storage, study, out_dir)` writes report.md and its plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from mal.automl.platforms.contract import dump_yaml, load_yaml
from mal.automl.storage import build_space, load_distributed_study, redact
from mal.fileio import atomic_write_text
from mal.redaction import redact_text, redact_tree

_STATUS = {
    TrialState.COMPLETE: "done",
    TrialState.PRUNED: "stopped",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "pending",
}


def _entry(trial: FrozenTrial, budget: int | None) -> dict[str, Any]:
    attrs = trial.user_attrs
    failure = attrs.get("failure") if trial.state == TrialState.FAIL else None
    metric = trial.value if trial.state == TrialState.COMPLETE else attrs.get("metric")
    info = {key: attrs[key] for key in ("worker", "host", "platform", "platform_job_id", "retry_of") if key in attrs}
    return {
        "rec_id": trial.number,
        "job_id": attrs.get("job_id", f"trial_{trial.number:04d}"),
        "params": attrs.get("params") or {},
        "metric": metric if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
        "status": _STATUS.get(trial.state, trial.state.name.lower()),
        "failure_reason": (failure or {}).get("reason"),
        "failure_class": (failure or {}).get("category"),
        "adjustments": attrs.get("adjustments", []),
        "budget": attrs.get("budget", budget),
        "resume_from": None,
        "info": info,
        "epochs": sorted([int(step), value] for step, value in trial.intermediate_values.items()),
        "started": attrs.get("started"),
        "finished": attrs.get("finished"),
        "seconds": attrs.get("seconds"),
        "checkpoint": _best_checkpoint(attrs.get("results_dir")) if trial.state == TrialState.COMPLETE else None,
        "results_dir": attrs.get("results_dir"),
        "attempts": 1,
        "cached": False,
        "retry_of": attrs.get("retry_of"),
    }


def _best_checkpoint(results_dir: str | None) -> str | None:
    if not results_dir:
        return None
    path = Path(results_dir) / "train" / "mal_model_best.pth"
    return str(path) if path.exists() else None


def distributed_result(storage: str | Path, study_name: str) -> dict[str, Any]:
    """Progress, best trial and every trial of a shared study (works while workers run)."""
    study, config = load_distributed_study(storage, study_name)
    settings = config["settings"]
    direction = settings.get("direction", "maximize")
    history = [_entry(trial, config.get("full_budget")) for trial in study.get_trials(deepcopy=False)]
    done = [h for h in history if h["status"] == "done" and h["metric"] is not None]
    sign = 1.0 if direction == "maximize" else -1.0
    best_entry = max(done, key=lambda h: (sign * h["metric"], -h["rec_id"])) if done else None
    best = {
        "rec_id": None,
        "job_id": None,
        "params": None,
        "metric_value": None,
        "checkpoint": None,
        "specs": None,
        "results_dir": None,
    }
    if best_entry is not None:
        spec_path = Path(best_entry["results_dir"] or "") / "spec.yaml"
        best.update(
            rec_id=best_entry["rec_id"],
            job_id=best_entry["job_id"],
            params=best_entry["params"],
            metric_value=best_entry["metric"],
            checkpoint=best_entry["checkpoint"],
            results_dir=best_entry["results_dir"],
            specs=load_yaml(spec_path) if spec_path.is_file() else None,
        )
    count = {status: sum(h["status"] == status for h in history) for status in _STATUS.values()}
    finished = count["done"] + count["stopped"] + count["failed"]
    progress = {
        "completed": finished,
        "total": len(history),
        "planned": config.get("planned_trials"),
        "running": count["running"],
        "pending": count["pending"],
        "failed": count["failed"],
        "pruned": count["stopped"],
        "retried": sum(h["retry_of"] is not None for h in history),
        "best_metric": best["metric_value"],
        "best_rec_id": best["rec_id"],
        "algorithm": settings.get("algorithm"),
        "workers": sorted({h["info"]["worker"] for h in history if "worker" in h["info"]}),
        "phase": "done" if finished == len(history) else "search",
    }
    # Settings and best.specs come from the store and the trial's spec, which keep secrets for the workers.
    return redact_tree(
        {
            "study": study_name,
            "storage": redact(str(storage)),
            "phase": progress["phase"],
            "metric": settings.get("metric"),
            "direction": direction,
            "settings": settings,
            "space": build_space(config).describe(),
            "best": best,
            "progress": progress,
            "baseline": {"status": "not_run", "metric_value": None, "reason": "distributed studies run no baseline"},
            "history": history,
        }
    )


def write_distributed_report(storage: str | Path, study_name: str, out_dir: str | Path) -> Path:
    """report.md (+ history, importance and learning-curve plots, best_spec.yaml) for a shared study."""
    from mal.automl.report import _plot_curves, _plot_history, _plot_importance, parameter_importance

    out = Path(out_dir)
    result = distributed_result(storage, study_name)  # first: a study that is not there leaves no empty folder
    out.mkdir(parents=True, exist_ok=True)
    importance, method = parameter_importance(result["history"], result["space"], result["direction"])
    _plot_history(result, out / "history.png")
    _plot_importance(importance, method, out / "importance.png")
    _plot_curves(result, out / "curves.png")
    best, progress = result["best"], result["progress"]
    lines = [
        f"# AutoML study `{study_name}`",
        "",
        f"Storage `{result['storage']}`, algorithm **{progress['algorithm']}**, metric `{result['metric']}` "
        f"({result['direction']}).",
        "",
        f"{progress['completed']}/{progress['total']} trials finished ({progress['pruned']} pruned, "
        f"{progress['failed']} failed, {progress['retried']} retries of dead workers' trials, "
        f"{progress['running']} running) by {len(progress['workers'])} worker(s).",
        "",
    ]
    if best["rec_id"] is not None:
        lines += [
            f"**Best**: trial {best['rec_id']}, {result['metric']} = {best['metric_value']:.4f}, "
            f"checkpoint `{best['checkpoint']}`.",
            "",
        ]
        if best["specs"] is not None:
            atomic_write_text(out / "best_spec.yaml", redact_text(dump_yaml(best["specs"])))
            lines += ["Reproduce it: `mal train -e best_spec.yaml`", ""]
    lines += [
        "![history](history.png)",
        "",
        f"![importance](importance.png) ({method})",
        "",
        "![curves](curves.png)",
        "",
        "| trial | status | metric | params | worker | note |",
        "|---|---|---|---|---|---|",
    ]
    for entry in result["history"]:
        metric = "-" if entry["metric"] is None else f"{entry['metric']:.4f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in entry["params"].items())
        note = entry["failure_reason"] or (f"retry of {entry['retry_of']}" if entry["retry_of"] is not None else "")
        lines.append(
            f"| {entry['rec_id']} | {entry['status']} | {metric} | {params} | "
            f"{entry['info'].get('worker', '-')} | {note.replace('|', '/')} |"
        )
    path = out / "report.md"
    atomic_write_text(path, redact_text("\n".join(lines) + "\n"))
    return path


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_line(result: Mapping[str, Any]) -> str:
    p = result["progress"]
    return (
        f"{p['completed']}/{p['total']} finished, {p['running']} running, {p['pending']} waiting, "
        f"{p['pruned']} pruned, {p['failed']} failed, {p['retried']} retried; best {result['metric']} = "
        f"{p['best_metric']} (trial {p['best_rec_id']})"
    )
