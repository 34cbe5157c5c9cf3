"""The final evaluation of a shared (peer) study: `mal evaluate` of its best trial's checkpoint, once the study
has ended, kept in the store so that `status` and `report` show it as a local study's final_evaluation.json.

`mal automl run --storage` runs it after its worker finds the study done; a study created with --create-only gets
it from `mal automl report --storage URL --study NAME` once every trial has ended.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from mal.automl.evaluation import evaluation_outcome
from mal.automl.platforms.contract import dump_yaml, load_yaml
from mal.automl.platforms.factory import make_platform
from mal.automl.report import best_of_history
from mal.automl.settings import parse_settings
from mal.automl.storage import load_distributed_study
from mal.automl.study_journal import record_from_frozen
from mal.automl.trials import log_tail
from mal.automl.workspace import write_private_text
from mal.dotted import set_dotted
from mal.jobfiles import read_status_events

FINAL_ATTR = "mal:final_evaluation"


def stored_final_evaluation(study: Any) -> dict[str, Any] | None:
    """The final evaluation kept in the study (None when it has not run)."""
    return study.user_attrs.get(FINAL_ATTR)


def evaluate_best_in_store(
    storage: str | Path, study_name: str, workspace_dir: Path, console: Console, poll_interval: float = 1.0
) -> dict[str, Any] | None:
    """Run the study's final evaluation if it is due and has not run; what the study now holds (None while trials
    are still running or waiting)."""
    study, config = load_distributed_study(storage, study_name)
    done = stored_final_evaluation(study)
    if done is not None:
        return done
    records = [record_from_frozen(trial, config.get("full_budget")) for trial in study.get_trials(deepcopy=False)]
    if not records or not all(record.is_final for record in records):
        return None
    settings = parse_settings(config["settings"])
    history = [record.entry() for record in records]
    best = best_of_history(history, settings.direction, counted=("done",))
    out: dict[str, Any] = {"rec_id": best["rec_id"], "job_id": best["job_id"], "checkpoint": best["checkpoint"],
                           "search_metric_value": best["metric_value"]}  # fmt: skip
    if best["rec_id"] is None:
        out.update(status="unavailable", metric_value=None, reason="no trial finished with a metric")
    elif not settings.run_final_evaluation:
        out.update(status="reused_best", metric_value=best["metric_value"],
                   reason="run_final_evaluation is off: the best trial's validation metric is reported")  # fmt: skip
    elif not best["checkpoint"] or not Path(best["checkpoint"]).is_file():
        out.update(status="unavailable", metric_value=None,
                   reason=f"the best trial {best['job_id']} left no checkpoint readable here: {best['checkpoint']}")
    else:
        console.print(f"final evaluation: mal evaluate on the best checkpoint {best['checkpoint']}")
        out.update(_run_evaluation(config, best, Path(workspace_dir) / study_name / "final_evaluation",
                                   settings.metric, poll_interval))  # fmt: skip
    study.set_user_attr(FINAL_ATTR, out)
    return out


def _run_evaluation(
    config: dict[str, Any], best: dict[str, Any], results_dir: Path, metric: str, poll_interval: float
) -> dict[str, Any]:
    spec = load_yaml(Path(best["results_dir"]) / "spec.yaml")
    spec["results_dir"] = str(results_dir)
    set_dotted(spec, "evaluate.checkpoint", best["checkpoint"])
    shutil.rmtree(results_dir / "evaluate", ignore_errors=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    spec_path = results_dir / "spec.yaml"
    write_private_text(spec_path, dump_yaml(spec))
    platform = make_platform("local", 1, command=config.get("command"), kill_grace=config.get("kill_grace"))
    job_id = "final_evaluation"
    platform.submit(job_id, "evaluate", spec_path, results_dir, [f"evaluate.checkpoint={best['checkpoint']}"])
    try:
        while (status := platform.status(job_id)).state == "running":
            platform.wait([job_id], poll_interval)
    except BaseException:
        platform.cancel(job_id)
        raise
    events = read_status_events(results_dir, "evaluate")
    outcome = evaluation_outcome(status.exit_code, events, results_dir, metric, lambda: log_tail(platform, job_id))
    if outcome["status"] == "measured":
        outcome["reason"] = "mal evaluate on the best checkpoint"
    return outcome
