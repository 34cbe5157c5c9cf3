"""The report's figures (optimisation history, parameter importance, learning curves) and the importance itself:
Optuna's PED-ANOVA evaluator where it works, else |Spearman rho| with the metric. Drawn with matplotlib's
object API (no global pyplot state), so a study can write its report from any thread.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mal.automl.study_journal import hashable, optuna_distributions


def _score(metric: float, direction: str) -> float:
    return metric if direction == "maximize" else -metric


def plot_history(result: Mapping[str, Any], path: Path) -> None:
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

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = optuna_distributions(space)
    study = optuna.create_study(direction=direction)
    for entry in scored:
        params = {name: hashable(entry["params"][name]) for name in distributions if name in entry["params"]}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=entry["metric"]))
    with warnings.catch_warnings():
        # Optuna warns when every trial scores alike; the (equal) importances still say so plainly.
        warnings.simplefilter("ignore", UserWarning)
        importances = optuna.importance.get_param_importances(study)
    return {name: float(value) for name, value in importances.items()}


def plot_importance(importance: Mapping[str, float], method: str, path: Path) -> None:
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


def plot_curves(result: Mapping[str, Any], path: Path) -> None:
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
