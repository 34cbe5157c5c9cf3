"""W&B inside a study: with `wandb.enable` in the base spec, every trial gets an offline run and the study a
summary table, holding metrics and searched values only (no settings, keys or environment values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.study import quiet_runner, spec_overrides

pytest.importorskip("wandb")

SETTINGS_KEY, ENV_TOKEN = "sk-wandb-never-logged-31", "tok-wandb-never-logged-47"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb_study")
    runner = quiet_runner(root, env={"MAL_SECRET_TOKEN": ENV_TOKEN, "WANDB_SILENT": "true"})
    overrides = spec_overrides(
        root,
        boxes=5,
        **{"train.batch_size": 8, "wandb.enable": True, "wandb.mode": "offline", "wandb.project": "mal-test"},
    )
    result = runner.run(
        automl_algorithm="random",
        automl_settings={
            "automl_max_recommendations": 3,
            "automl_max_epochs": 2,
            "automl_max_concurrent": 2,
            "llm_api_key": SETTINGS_KEY,
        },
        spec_overrides=overrides,
    )
    return result, Path(result["workspace"]) / "wandb" / "wandb"


def _runs(wandb_dir: Path) -> dict[str, bytes]:
    """Offline run folder name -> the bytes of its .wandb log (protobuf records, searched here as bytes)."""
    return {run.name: next(run.glob("*.wandb")).read_bytes() for run in sorted(wandb_dir.glob("offline-run-*"))}


def test_every_trial_gets_an_offline_run_with_its_metric(study):
    result, wandb_dir = study
    logs = _runs(wandb_dir)
    jobs = [entry["job_id"] for entry in result["history"]]
    assert len(jobs) == 3 and len(logs) == len(jobs) + 1  # one run per trial and the summary run
    for job in jobs:
        holding = [name for name, data in logs.items() if job.encode() in data]
        assert holding, f"no W&B run names {job}"
    trial_logs = [data for data in logs.values() if b"val/mIoU" in data]
    assert len(trial_logs) >= len(jobs)
    assert all(b"train.lr" in data for data in trial_logs)  # the searched values are the run's config


def test_summary_table_lists_each_trial_with_status_metric_and_values(study):
    result, wandb_dir = study
    tables = list(wandb_dir.glob("offline-run-*/files/media/table/trials_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["job", "status", "metric"]
    assert {"train.lr", "train.wd"} <= set(table["columns"][3:])
    rows = {row[0]: row for row in table["data"]}
    for entry in result["history"]:
        row = rows[entry["job_id"]]
        assert row[1] == entry["status"] == "done"
        assert row[2] == pytest.approx(entry["metric"])
        for key, value in entry["params"].items():
            assert row[table["columns"].index(key)] == pytest.approx(value)


def test_no_setting_key_or_environment_value_reaches_wandb(study):
    _, wandb_dir = study
    for path in wandb_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SETTINGS_KEY.encode() not in data, path
            assert ENV_TOKEN.encode() not in data, path
