"""The coordinator's view of a shared study: the result dict and the report, read from the store alone.

`distributed_result(storage, study)` has the shape of a local study's `study_result` (best, progress, history
with the same entry keys, built from the same `TrialRecord`), plus which worker and host ran each trial.
`write_distributed_report(storage, study, out_dir)` writes the same report a local study gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mal.automl.report import best_of_history, render_report
from mal.automl.storage import build_space, load_distributed_study, redact
from mal.automl.store_final import FINAL_ATTR
from mal.automl.study_journal import record_from_frozen
from mal.automl.trial_record import FINAL_STATES
from mal.redaction import redact_tree


def distributed_result(storage: str | Path, study_name: str) -> dict[str, Any]:
    """Progress, best trial and every trial of a shared study (works while workers run)."""
    result, _ = _result_and_config(storage, study_name)
    return result


def _result_and_config(storage: str | Path, study_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    study, config = load_distributed_study(storage, study_name)
    settings = config["settings"]
    direction = settings.get("direction", "maximize")
    records = [record_from_frozen(trial, config.get("full_budget")) for trial in study.get_trials(deepcopy=False)]
    history = [record.entry() for record in records]
    # Optuna keeps no value for a pruned trial: only complete ones compete for best.
    best = best_of_history(history, direction, counted=("done",))
    count = {status: sum(h["status"] == status for h in history) for status in ("running", "pending", "failed",
                                                                                  "stopped")}  # fmt: skip
    finished = sum(h["status"] in FINAL_STATES for h in history)
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
    result = redact_tree(
        {
            "study": study_name,
            "storage": redact(str(storage)),
            "workspace": None,
            "phase": progress["phase"],
            "stopped_reason": None,
            "metric": settings.get("metric"),
            "direction": direction,
            "settings": settings,
            "space": build_space(config).describe(),
            "best": best,
            "progress": progress,
            "baseline": {"status": "not_run", "metric_value": None, "reason": "distributed studies run no baseline",
                         "comparison_to_best": None},
            "final_evaluation": {"comparison_to_baseline": None, **(study.user_attrs.get(FINAL_ATTR) or {
                "status": "not_run", "metric_value": None,
                "reason": "runs once every trial has ended: `mal automl run --storage` does it after its worker, "
                          "or `mal automl report --storage URL --study NAME`"})},
            "history": history,
        }
    )  # fmt: skip
    return result, config


def write_distributed_report(storage: str | Path, study_name: str, out_dir: str | Path) -> Path:
    """The report folder (report.md, report.html, plots, best_spec.yaml) of a shared study."""
    out = Path(out_dir)
    result, config = _result_and_config(storage, study_name)  # first: a missing study leaves no empty folder
    best_values = result["best"]["params"]
    return render_report(result, result["space"], out, config.get("base_spec") or {}, best_values,
                         out / "best_reproduction")  # fmt: skip


def summary_line(result: Mapping[str, Any]) -> str:
    p = result["progress"]
    return (
        f"{p['completed']}/{p['total']} finished, {p['running']} running, {p['pending']} waiting, "
        f"{p['pruned']} pruned, {p['failed']} failed, {p['retried']} retried; best {result['metric']} = "
        f"{p['best_metric']} (trial {p['best_rec_id']})"
    )
