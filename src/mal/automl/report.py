"""What a study found: the result dict, a live table of its trials, and the report page, for local studies (read
from the run folder alone) and shared ones (`distributed_report`) through the same renderer.

`study_result(workspace)` builds the dict `AutoMLRunner.run` returns (also what `mal automl status` shows);
`write_report(workspace)` writes `report/report.md`, `report/report.html`, the plots (optimisation history,
parameter importance, learning curves) and `report/best_spec.yaml` with the command that reproduces the best
training from scratch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from mal.automl.eta import epochs_trained, eta_text, study_progress_eta, wall_seconds
from mal.automl.evaluation import compare
from mal.automl.platforms.contract import dump_yaml, load_yaml
from mal.automl.report_page import markdown, page_html, sections
from mal.automl.report_plots import parameter_importance, plot_curves, plot_history, plot_importance
from mal.automl.study_state import StudyState
from mal.automl.trial_record import FINAL_STATES, best_entry
from mal.automl.workspace import RUN_FILE, Workspace
from mal.dotted import deep_merge, nest_dotted, set_dotted
from mal.fileio import atomic_write_text
from mal.redaction import redact_text, redact_tree

__all__ = [
    "annotated_history",
    "compact_params",
    "parameter_importance",
    "render_report",
    "study_result",
    "trials_table",
    "write_report",
]

EMPTY_BEST = {"rec_id": None, "job_id": None, "specs": None, "params": None, "metric_value": None,
              "checkpoint": None, "budget": None, "results_dir": None}  # fmt: skip


# -- the result dict ---------------------------------------------------------------------------------------------


def best_of_history(history: list[dict[str, Any]], direction: str, counted: tuple[str, ...] = ("done", "stopped")
                    ) -> dict[str, Any]:  # fmt: skip
    """The result's `best` block: the best trial's values, metric, checkpoint and spec."""
    entry = best_entry(history, direction, counted)
    best = dict(EMPTY_BEST)
    if entry is not None:
        spec_path = Path(entry["results_dir"] or "") / "spec.yaml"
        best.update(
            rec_id=entry["rec_id"],
            job_id=entry["job_id"],
            params=entry["params"],
            specs=load_yaml(spec_path) if entry["results_dir"] and spec_path.is_file() else None,
            metric_value=entry["metric"],
            checkpoint=entry["checkpoint"],
            budget=entry["budget"],
            results_dir=entry["results_dir"],
        )
    return best


def study_result(workspace: Workspace | str | Path) -> dict[str, Any]:
    """The result dict of a study, from its files (works while it runs, after a crash, or at the end)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    config = ws.read_json(RUN_FILE) or {}
    settings = config.get("settings", {})
    direction = settings.get("direction", "maximize")
    state = StudyState.from_dict(ws.read_json("state.json") or {})
    review = ws.read_json("launch_review.json") or {}
    measured = ws.read_json("baseline.json")
    # Plain records, the same as a journal reads back: the derived per-trial view (`annotated_history`) is a
    # moment's reading (a running trial's time so far), added by `mal automl status`, not kept in result.json.
    history = [record.entry() for record in sorted(state.trials.values(), key=lambda r: r.rec_id)]
    best = best_of_history(history, direction)
    phase = state.phase
    finished = [h for h in history if h["status"] in FINAL_STATES]
    total = (
        len(history) if phase in ("final", "done") else max(review.get("planned_recommendations") or 0, len(history))
    )
    progress = {
        "completed": len(finished),
        "total": total,
        "best_metric": best["metric_value"],
        "best_rec_id": best["rec_id"],
        "algorithm": settings.get("algorithm"),
        "running": sum(h["status"] == "running" for h in history),
        "failed": sum(h["status"] == "failed" for h in history),
        "phase": phase,
        **study_progress_eta(history, review, measured, phase),
    }
    baseline = measured or {
        "status": "not_run",
        "metric_value": None,
        "reason": "the study has not reached its baseline",
    }
    baseline = dict(baseline)
    baseline.pop("specs", None)
    baseline["comparison_to_best"] = compare(best["metric_value"], baseline.get("metric_value"), direction)
    final = ws.read_json("final_evaluation.json") or {
        "status": "not_run",
        "metric_value": None,
        "comparison_to_baseline": None,
        "reason": state.stopped_reason
        or ("the launch was declined" if phase == "declined" else "the search has not finished"),
    }
    # Hidden here, not only in result.json: `mal automl status --json` prints this dict and best.specs is read
    # from the trial's own spec, which keeps data URLs whole for the training.
    return redact_tree(
        {
            "workspace": str(ws.root),
            "phase": phase,
            "stopped_reason": state.stopped_reason,
            "metric": settings.get("metric"),
            "direction": direction,
            "best": best,
            "progress": progress,
            "baseline": baseline,
            "final_evaluation": final,
            "history": history,
            "report": str(ws.report_dir / "report.md"),
        }
    )


# -- the live table ----------------------------------------------------------------------------------------------


def compact_params(params: Mapping[str, Any]) -> str:
    """A trial's values on one short line: `lr=1.23e-05 wd=0.001 arch=vit-tiny/16`.

    Keys are cut to their last dotted part, or as many last parts as keep them apart (`train.lr` and `head.lr`
    both searched show as `train.lr` and `head.lr`); floats keep 3 significant digits."""
    keys = list(params)
    short: dict[str, str] = {}
    for key in keys:
        parts = str(key).split(".")
        for cut in range(1, len(parts) + 1):
            name = ".".join(parts[-cut:])
            clash = any(other != key and str(other).split(".")[-cut:] == parts[-cut:] for other in keys)
            if not clash or cut == len(parts):
                short[key] = name
                break
    return " ".join(f"{short[key]}={_compact_value(params[key])}" for key in keys)


def _compact_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def short_duration(seconds: float | None) -> str:
    """`8.2s`, `3m05s`, `2h07m`: a trial's wall time in the table's narrow column."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def annotated_history(history: Sequence[Mapping[str, Any]], now: datetime | None = None) -> list[dict[str, Any]]:
    """Report entries with what is derived from them: `wall_seconds` (start to end; a running trial's time so
    far), `epochs_trained` (its own new epochs) and `params_text` (its values, compact). Recomputed from the
    entry's own fields every time, so the live table (plain `TrialRecord.entry()` dicts) and status agree."""
    by_rec = {int(h["rec_id"]): h for h in history}
    out = []
    for entry in history:
        wall = wall_seconds(entry, now)
        out.append(
            {
                **entry,
                "wall_seconds": None if wall is None else round(wall, 3),
                "epochs_trained": epochs_trained(entry, by_rec),
                "params_text": compact_params(entry.get("params") or {}),
            }
        )
    return out


def trials_table(history: Sequence[Mapping[str, Any]], title: str = "AutoML trials", eta: str | None = None) -> Table:
    """The trials, one row each (values, epochs, metric, wall time), with the study's ETA as its caption.

    `eta` None: computed from the run folder the trials lie in (`<run>/trials/<job>`), because the scheduler's
    live table passes its trials alone; no caption when that folder is not a local study's (a shared store's
    workers). Pass "" for no caption."""
    history = annotated_history(history)
    table = Table(title=title)
    for column in ("trial", "rung", "epoch", "metric", "state", "wall", "values", "note"):
        table.add_column(column, overflow="fold" if column == "values" else "ellipsis")
    for entry in history:
        reached, last = entry["epochs"][-1] if entry["epochs"] else (0, None)
        metric = entry["metric"] if entry["metric"] is not None else last
        note = entry["failure_reason"] or (
            f"from {entry['resume_from']}" if entry.get("resume_from") is not None else ""
        )
        table.add_row(
            entry["job_id"],
            str(entry["info"].get("rung", "-")),
            f"{reached}/{entry['budget']}",
            "-" if metric is None else f"{metric:.4f}",
            entry["status"],
            short_duration(entry["wall_seconds"]),
            entry["params_text"],
            (note or "")[:60],
        )
    if eta is None:
        eta = _live_eta(history)
    if eta:
        table.caption = eta
    return table


def _live_eta(history: Sequence[Mapping[str, Any]]) -> str | None:
    """The ETA line of a local study's live table, read from the run folder its trials lie in."""
    folders = {Path(h["results_dir"]).parent.parent for h in history if h.get("results_dir")}
    if len(folders) != 1:
        return None
    root = folders.pop()
    if not (root / RUN_FILE).is_file():
        return None
    progress = study_progress_eta(history, _json_or_none(root / "launch_review.json"),
                                  _json_or_none(root / "baseline.json"))  # fmt: skip
    return eta_text(progress)


def _json_or_none(path: Path) -> Any:
    """A study file, or None when missing or unreadable: the live table must never stop the search it shows."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- the report ----------------------------------------------------------------------------------------------------


def write_report(workspace: Workspace | str | Path) -> Path:
    """Write a local study's report/ folder; returns the markdown path."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    result = study_result(ws)
    review = ws.read_json("launch_review.json") or {}
    base_path = ws.path("base_spec.yaml")
    base = load_yaml(base_path) if base_path.is_file() else {}
    state = StudyState.from_dict(ws.read_json("state.json") or {})
    record = state.trials.get(result["best"]["job_id"] or "")
    values = None if record is None else (record.spec_params or record.params)
    return render_report(result, review.get("space", []), ws.report_dir, base, values, ws.root / "best_reproduction")


def render_report(
    result: Mapping[str, Any],
    space: Sequence[Mapping[str, Any]],
    out: Path,
    base_spec: Mapping[str, Any],
    best_values: Mapping[str, Any] | None,
    reproduction_dir: Path,
) -> Path:
    """report.md, report.html, the three plots and best_spec.yaml in `out`, for any study's result dict."""
    out.mkdir(parents=True, exist_ok=True)
    importance, method = parameter_importance(result["history"], space, result["direction"])
    plot_history(result, out / "optimisation_history.png")
    plot_importance(importance, method, out / "parameter_importance.png")
    plot_curves(result, out / "learning_curves.png")
    command = None
    if best_values is not None:
        path = _write_best_spec(out, base_spec, best_values, int(result["best"]["budget"]), reproduction_dir)
        command = f"mal train -e {path}"
    parts = sections(result, importance, method, command)
    atomic_write_text(out / "report.md", redact_text(markdown(result, parts)))
    atomic_write_text(out / "report.html", redact_text(page_html(result, parts)))
    return out / "report.md"


def _write_best_spec(
    out: Path, base_spec: Mapping[str, Any], values: Mapping[str, Any], budget: int, results_dir: Path
) -> Path:
    """best_spec.yaml: the base spec with the best values, trained from scratch for the best budget."""
    spec = deep_merge(base_spec, nest_dotted(values))
    spec["results_dir"] = str(results_dir)
    set_dotted(spec, "train.num_epochs", budget)
    set_dotted(spec, "train.resume_training_checkpoint_path", None)
    path = out / "best_spec.yaml"
    text = dump_yaml(spec)
    shown = redact_text(text)
    if shown != text:
        shown = "# Passwords in URLs are shown as ***: put yours back before training with this spec.\n" + shown
    atomic_write_text(path, shown)
    return path
