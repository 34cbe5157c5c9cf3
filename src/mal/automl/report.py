"""What a study found, read from its workspace alone: the result dict, a live table, and the report page.

`study_result(workspace)` builds the dict `AutoMLRunner.run` returns (also what `mal automl status` shows);
`write_report(workspace)` writes `report/report.md`, `report/report.html`, the plots (optimisation history,
parameter importance, learning curves) and `report/best_spec.yaml` with the command that reproduces the best
training from scratch.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from mal.automl.platforms.contract import dump_yaml, load_yaml
from mal.automl.workspace import RUN_FILE, Workspace
from mal.dotted import deep_merge, nest_dotted, set_dotted
from mal.fileio import atomic_write_text
from mal.redaction import redact_text, redact_tree

FINAL_STATES = ("done", "stopped", "failed")


# -- the result dict ---------------------------------------------------------------------------------------------


def history_entries(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per recommendation, in rec id order."""
    entries = []
    for record in sorted(state.get("trials", {}).values(), key=lambda r: r["rec_id"]):
        failure = record.get("failure") or {}
        entries.append(
            {
                "rec_id": record["rec_id"],
                "job_id": record["job_id"],
                "params": record["params"],
                "metric": record.get("metric"),
                "status": record["state"],
                "failure_reason": failure.get("reason"),
                "failure_class": failure.get("category"),
                "adjustments": record.get("adjustments", []),
                "budget": record["budget"],
                "resume_from": record.get("resume_from"),
                "info": record.get("info", {}),
                "epochs": sorted([int(k), v] for k, v in record.get("epochs", {}).items()),
                "started": record.get("started"),
                "finished": record.get("finished"),
                "seconds": record.get("seconds"),
                "checkpoint": record.get("checkpoint"),
                "attempts": record.get("attempts", 0),
                "cached": record.get("cached", False),
            }
        )
    return entries


def _score(metric: float, direction: str) -> float:
    return metric if direction == "maximize" else -metric


def study_result(workspace: Workspace | str | Path) -> dict[str, Any]:
    """The result dict of a study, from its files (works while it runs, after a crash, or at the end)."""
    from mal.automl.runner import compare

    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    config = ws.read_json(RUN_FILE) or {}
    settings = config.get("settings", {})
    direction = settings.get("direction", "maximize")
    state = ws.read_json("state.json") or {}
    review = ws.read_json("launch_review.json") or {}
    history = history_entries(state)
    scored = [h for h in history if h["metric"] is not None]
    best_entry = max(scored, key=lambda h: (_score(h["metric"], direction), -h["rec_id"])) if scored else None
    best: dict[str, Any] = {
        "rec_id": None,
        "job_id": None,
        "specs": None,
        "params": None,
        "metric_value": None,
        "checkpoint": None,
        "budget": None,
    }
    if best_entry is not None:
        spec_path = ws.trial_dir(best_entry["job_id"]) / "spec.yaml"
        best.update(
            rec_id=best_entry["rec_id"],
            job_id=best_entry["job_id"],
            params=best_entry["params"],
            specs=load_yaml(spec_path) if spec_path.is_file() else None,
            metric_value=best_entry["metric"],
            checkpoint=best_entry["checkpoint"],
            budget=best_entry["budget"],
        )
    phase = state.get("phase", "new")
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
    }
    baseline = ws.read_json("baseline.json") or {
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
        "reason": state.get("stopped_reason")
        or ("the launch was declined" if phase == "declined" else "the search has not finished"),
    }
    # Hidden here, not only in result.json: `mal automl status --json` prints this dict and best.specs is read
    # from the trial's own spec, which keeps data URLs whole for the training.
    return redact_tree(
        {
            "workspace": str(ws.root),
            "phase": phase,
            "stopped_reason": state.get("stopped_reason"),
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


def trials_table(history: Sequence[Mapping[str, Any]], title: str = "AutoML trials") -> Table:
    table = Table(title=title)
    for column in ("trial", "rung", "epoch", "metric", "state", "note"):
        table.add_column(column)
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
            (note or "")[:60],
        )
    return table


# -- plots ---------------------------------------------------------------------------------------------------------


def _plot_history(result: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    direction = result["direction"]
    ordered = sorted((h for h in result["history"] if h["finished"]), key=lambda h: h["finished"])
    xs, ys, budgets, best_line, best = [], [], [], [], None
    for index, entry in enumerate(ordered, start=1):
        if entry["metric"] is None:
            continue
        xs.append(index)
        ys.append(entry["metric"])
        budgets.append(entry["budget"])
        if best is None or _score(entry["metric"], direction) > _score(best, direction):
            best = entry["metric"]
        best_line.append(best)
    if xs:
        points = ax.scatter(xs, ys, c=budgets, cmap="viridis", label="trial")
        fig.colorbar(points, ax=ax, label="budget (epochs)")
        ax.step(xs, best_line, where="post", color="tab:red", label="best so far")
    base = result["baseline"].get("metric_value")
    if base is not None:
        ax.axhline(base, color="gray", linestyle="--", label="baseline")
    ax.set_xlabel("trial (completion order)")
    ax.set_ylabel(result.get("metric") or "metric")
    ax.set_title("Optimisation history")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)


def parameter_importance(
    history: Sequence[Mapping[str, Any]], space: Sequence[Mapping[str, Any]], direction: str
) -> tuple[dict[str, float], str]:
    """Importance of each searched parameter: Optuna's default evaluator (PED-ANOVA) on an in-memory study, else
    |Spearman rho| with the metric."""
    scored = [h for h in history if h["metric"] is not None]
    names = [p["name"] for p in space]
    if len(scored) < 3 or not names:
        return {}, "too few trials with a metric"
    try:
        return _optuna_importance(scored, space, direction), "PED-ANOVA (optuna.importance)"
    except Exception:  # degenerate studies (one distinct value, ...): fall back to rank correlation
        pass
    import numpy as np

    metrics = np.array([h["metric"] for h in scored], dtype=float)
    ranks_y = np.argsort(np.argsort(metrics))
    importance = {}
    for name in names:
        raw = [h["params"].get(name) for h in scored]
        keys = [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v) for v in raw]
        order = {
            value: index
            for index, value in enumerate(
                sorted(set(keys), key=str if any(isinstance(k, str) for k in keys) else float)
            )
        }
        ranks_x = np.array([order[k] for k in keys], dtype=float)
        if ranks_x.std() == 0:
            importance[name] = 0.0
            continue
        importance[name] = float(abs(np.corrcoef(ranks_x, ranks_y)[0, 1]))
    return importance, "|Spearman rank correlation| with the metric"


def _optuna_importance(
    scored: Sequence[Mapping[str, Any]], space: Sequence[Mapping[str, Any]], direction: str
) -> dict[str, float]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, Any] = {}
    for param in space:
        if "low" in param:
            log = bool(param.get("log_scale")) and param["low"] > 0
            if param["type"] == "int":
                distributions[param["name"]] = IntDistribution(int(param["low"]), int(param["high"]), log=log)
            else:
                distributions[param["name"]] = FloatDistribution(float(param["low"]), float(param["high"]), log=log)
        else:
            distributions[param["name"]] = CategoricalDistribution([_hashable(c) for c in param["choices"]])
    study = optuna.create_study(direction=direction)
    for entry in scored:
        params = {name: _hashable(entry["params"][name]) for name in distributions if name in entry["params"]}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=entry["metric"]))
    with warnings.catch_warnings():
        # Optuna warns when every trial scores alike; the (equal) importances still say so plainly.
        warnings.simplefilter("ignore", UserWarning)
        importances = optuna.importance.get_param_importances(study)
    return {name: float(value) for name, value in importances.items()}


def _hashable(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _plot_importance(importance: Mapping[str, float], method: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 1.5 + 0.4 * max(1, len(importance))), dpi=100)
    ax = fig.add_subplot()
    names = sorted(importance, key=importance.get)
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance")
    ax.set_title(f"Parameter importance: {method}")
    if not importance:
        ax.text(0.5, 0.5, method, ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)


def _plot_curves(result: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for entry in result["history"]:
        if entry["epochs"]:
            epochs, values = zip(*entry["epochs"])
            ax.plot(epochs, values, marker=".", alpha=0.7, linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(result.get("metric") or "metric")
    ax.set_title("Learning curves (every trial)")
    fig.tight_layout()
    fig.savefig(path)


# -- the page ------------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def _best_spec(ws: Workspace, result: Mapping[str, Any]) -> tuple[Path | None, str | None]:
    """report/best_spec.yaml: the base spec with the best values, trained from scratch for the best budget."""
    best = result["best"]
    if best["job_id"] is None:
        return None, None
    state = ws.read_json("state.json") or {}
    record = state["trials"][best["job_id"]]
    base_path = ws.path("base_spec.yaml")
    base = load_yaml(base_path) if base_path.is_file() else {}
    spec = deep_merge(base, nest_dotted(record.get("spec_params") or record["params"]))
    spec["results_dir"] = str(ws.root / "best_reproduction")
    set_dotted(spec, "train.num_epochs", int(record["budget"]))
    set_dotted(spec, "train.resume_training_checkpoint_path", None)
    path = ws.report_dir / "best_spec.yaml"
    text = dump_yaml(spec)
    shown = redact_text(text)
    if shown != text:
        shown = "# Passwords in URLs are shown as ***: put yours back before training with this spec.\n" + shown
    atomic_write_text(path, shown)
    return path, f"mal train -e {path}"


def write_report(workspace: Workspace | str | Path) -> Path:
    """Write report.md, report.html and the plots; returns the markdown path."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    result = study_result(ws)
    out = ws.report_dir
    out.mkdir(parents=True, exist_ok=True)
    review = ws.read_json("launch_review.json") or {}
    space = review.get("space", [])
    importance, method = parameter_importance(result["history"], space, result["direction"])
    _plot_history(result, out / "optimisation_history.png")
    _plot_importance(importance, method, out / "parameter_importance.png")
    _plot_curves(result, out / "learning_curves.png")
    _, command = _best_spec(ws, result)
    sections = _sections(result, importance, method, command)
    atomic_write_text(out / "report.md", redact_text(_markdown(result, sections)))
    atomic_write_text(out / "report.html", redact_text(_html(result, sections)))
    return out / "report.md"


def _sections(
    result: Mapping[str, Any], importance: Mapping[str, float], method: str, command: str | None
) -> dict[str, Any]:
    metric = result.get("metric") or "metric"
    baseline, final, best, progress = (
        result["baseline"],
        result["final_evaluation"],
        result["best"],
        result["progress"],
    )
    summary = [
        ("workspace", result["workspace"]),
        ("algorithm", progress["algorithm"]),
        ("phase", result["phase"] + (f" ({result['stopped_reason']})" if result["stopped_reason"] else "")),
        ("trials", f"{progress['completed']} finished of {progress['total']}, {progress['failed']} failed"),
        (f"baseline {metric}", f"{_fmt(baseline.get('metric_value'))} ({baseline['status']})"),
        (f"best {metric}", f"{_fmt(best['metric_value'])} ({best['job_id'] or 'none'})"),
        ("best vs baseline", _delta_text(baseline.get("comparison_to_best"))),
        ("final evaluation", f"{_fmt(final.get('metric_value'))} ({final['status']}: {final.get('reason', '')})"),
        ("final vs baseline", _delta_text(final.get("comparison_to_baseline"))),
        ("best checkpoint", best["checkpoint"] or "-"),
    ]
    names = sorted({name for h in result["history"] for name in h["params"]})
    rows = [
        [
            "baseline",
            "-",
            _fmt(baseline.get("budget")),
            _fmt(baseline.get("metric_value")),
            baseline["status"],
            *["default"] * len(names),
            baseline.get("reason") or "",
        ]
    ]
    for h in result["history"]:
        label = h["job_id"] + (" (best)" if h["job_id"] == best["job_id"] else "")
        note = h["failure_reason"] or "; ".join(f"{a['key']} {a['from']} -> {a['to']}" for a in h["adjustments"])
        rows.append(
            [
                label,
                str(h["info"].get("rung", "-")),
                _fmt(h["budget"]),
                _fmt(h["metric"]),
                h["status"],
                *[_fmt(h["params"].get(n)) for n in names],
                note or "",
            ]
        )
    return {
        "summary": summary,
        "columns": ["trial", "rung", "budget", metric, "status", *names, "note"],
        "rows": rows,
        "importance": importance,
        "method": method,
        "command": command,
    }


def _delta_text(comparison: Mapping[str, Any] | None) -> str:
    if not comparison:
        return "-"
    relative = comparison.get("relative")
    rel = f" ({relative:+.1%})" if relative is not None else ""
    return f"{comparison['delta']:+.4f}{rel}, " + ("better" if comparison["improved"] else "not better")


def _markdown(result: Mapping[str, Any], sections: Mapping[str, Any]) -> str:
    lines = ["# AutoML report", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in sections["summary"]]
    lines += ["", "## Reproduce the best training", ""]
    lines += [f"```\n{sections['command']}\n```" if sections["command"] else "No trial finished with a metric."]
    lines += [
        "",
        "## Optimisation history",
        "",
        "![optimisation history](optimisation_history.png)",
        "",
        "## Parameter importance",
        "",
        f"Method: {sections['method']}.",
        "",
    ]
    lines += [
        f"- `{name}`: {value:.3f}" for name, value in sorted(sections["importance"].items(), key=lambda kv: -kv[1])
    ]
    lines += [
        "",
        "![parameter importance](parameter_importance.png)",
        "",
        "## Learning curves",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Baseline, every trial, best",
        "",
        "| " + " | ".join(sections["columns"]) + " |",
        "|" + "---|" * len(sections["columns"]),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in sections["rows"]]
    return "\n".join(lines) + "\n"


def _html(result: Mapping[str, Any], sections: Mapping[str, Any]) -> str:
    esc = html.escape
    summary = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in sections["summary"])
    head = "".join(f"<th>{esc(c)}</th>" for c in sections["columns"])
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in sections["rows"])
    importance = "".join(
        f"<li><code>{esc(n)}</code>: {v:.3f}</li>"
        for n, v in sorted(sections["importance"].items(), key=lambda kv: -kv[1])
    )
    command = f"<pre>{esc(sections['command'])}</pre>" if sections["command"] else "<p>No trial finished.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoML report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>AutoML report</h1><table>{summary}</table>
<h2>Reproduce the best training</h2>{command}
<h2>Optimisation history</h2><img src="optimisation_history.png" alt="optimisation history">
<h2>Parameter importance</h2><p>Method: {esc(sections["method"])}.</p><ul>{importance}</ul>
<img src="parameter_importance.png" alt="parameter importance">
<h2>Learning curves</h2><img src="learning_curves.png" alt="learning curves">
<h2>Baseline, every trial, best</h2><table><tr>{head}</tr>{body}</table>
</body></html>
"""
