"""The callbacks a caller may hand `AutoMLRunner.run` (TAO's names), and how their answers are read.

`metric_extractor(logs, metric_name)`, `eval_fn(rec, job_id)`, `baseline_fn(base_specs)`, `final_eval_fn(best_rec,
job_id)` (each a float or {"metric_value": ...}) and `on_result(rec, metric, status)`. `rec` is a dict: rec_id,
job_id, params, specs (the trial's whole spec), budget, results_dir, checkpoint, metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.automl.platforms.contract import load_yaml
from mal.automl.trial_record import TrialRecord


@dataclass
class Hooks:
    metric_extractor: Callable[[str, str], Any] | None = None
    eval_fn: Callable[[dict[str, Any], str], Any] | None = None
    baseline_fn: Callable[[dict[str, Any]], Any] | None = None
    final_eval_fn: Callable[[dict[str, Any], str], Any] | None = None
    on_result: Callable[[dict[str, Any], float | None, str], Any] | None = None


def metric_value(returned: Any) -> float | None:
    """A hook's answer: a number or {"metric_value": number}; None when neither is finite."""
    if isinstance(returned, Mapping):
        returned = returned.get("metric_value")
    if isinstance(returned, bool) or not isinstance(returned, int | float) or not math.isfinite(returned):
        return None
    return float(returned)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def hook_rec(record: TrialRecord) -> dict[str, Any]:
    """The `rec` dict a hook receives."""
    spec_path = Path(record.results_dir) / "spec.yaml"
    return {
        "rec_id": record.rec_id,
        "job_id": record.job_id,
        "params": dict(record.params),
        "specs": load_yaml(spec_path) if spec_path.is_file() else None,
        "budget": record.budget,
        "results_dir": record.results_dir,
        "checkpoint": record.checkpoint,
        "metric": record.metric,
    }
