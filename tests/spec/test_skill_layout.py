"""The skill layout a TAO runner reads: SKILL.md, and skill_info.yaml's AutoML policy, checkpoint locations and
per-action KPIs, the last two checked against what a real training and evaluation write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mal import jobfiles
from mal.automl.settings import AutoMLSettings
from mal.spec.export import ACTION_INFO, action_kpis, automl_enabled_keys, write_skill_dir
from mal.spec.schema import ACTIONS, AUTOML_DEFAULT_PARAMETERS, SECTION_DOCS, ExperimentSpec
from support.engine import status_events
from support.specs import write_tiny_spec


@pytest.fixture(scope="module")
def skill_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("skill")
    write_skill_dir(out)
    return out


@pytest.fixture(scope="module")
def info(skill_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((skill_dir / "references" / "skill_info.yaml").read_text())


def _resolve(template: str, results_dir: Path, **values: str) -> Path:
    return Path(template.format(results_dir=results_dir, **values))


def test_skill_md_names_every_action_section_and_searched_key(skill_dir):
    text = (skill_dir / "SKILL.md").read_text()
    front, _, body = text.removeprefix("---\n").partition("\n---\n")
    assert yaml.safe_load(front)["name"] == "mal"
    for action in ACTIONS:
        assert f"### {action}\n" in body
        assert f"mal {action} -e spec.yaml key=value" in body
        for kpi in action_kpis(action):
            assert f"`{kpi}`" in body
    for section, doc in SECTION_DOCS.items():
        assert f"### {section}\n" in body and doc in body
    # Every leaf is a table row with its default, and the default search is marked as such.
    spec = ExperimentSpec().model_dump(mode="json")
    for section, values in spec.items():
        leaves = values.items() if isinstance(values, dict) else [("", values)]
        for name, default in leaves:
            key = f"{section}.{name}" if name else section
            assert f"| `{key}` |" in body and f"`{json.dumps(default)}`" in body
    rows = {line.split("`")[1]: line for line in body.splitlines() if line.startswith("| `")}
    marked = {key for key, row in rows.items() if "(default search)" in row}
    assert marked == set(AUTOML_DEFAULT_PARAMETERS)
    for key in automl_enabled_keys():
        assert f"`{key}`" in body.split("## Spec keys")[0]  # listed in the AutoML section


def test_manifest_lists_skill_md(skill_dir):
    manifest = json.loads((skill_dir / "schemas" / "manifest.json").read_text())
    assert manifest["skill_md"] == "SKILL.md"
    assert (skill_dir / manifest["skill_md"]).is_file()


def test_skill_info_automl_policy_matches_automl_defaults(info):
    assert info["automl_enabled"] is True
    policy = info["automl_policy"]
    settings = AutoMLSettings()
    assert policy["default_algorithm"] == settings.algorithm == "bayesian"
    assert policy["metric"] == settings.metric == "val/mIoU"
    assert policy["direction"] == settings.direction == "maximize"
    assert policy["metric_action"] == "train"
    assert policy["metric"] in info["actions"]["train"]["kpis"]
    assert policy["default_parameters"] == AUTOML_DEFAULT_PARAMETERS == info["automl_default_parameters"]
    assert set(policy["default_parameters"]) <= set(policy["enabled_parameters"]) == set(automl_enabled_keys())
    spec = ExperimentSpec()
    for key in ("epochs_key", "results_dir_key", "resume_checkpoint_key"):
        section, _, leaf = policy[key].rpartition(".")
        assert hasattr(getattr(spec, section) if section else spec, leaf), policy[key]


def test_skill_info_checkpoints_name_spec_keys_and_job_files(info):
    checkpoints = info["checkpoints"]
    assert checkpoints["action"] == "train"
    assert checkpoints["resume_key"] == "train.resume_training_checkpoint_path"
    assert checkpoints["evaluate_key"] == "evaluate.checkpoint"
    spec = ExperimentSpec()
    for key in ("evaluate_key", "inference_key", "export_key", "resume_key"):
        section, leaf = checkpoints[key].split(".")
        assert hasattr(getattr(spec, section), leaf), checkpoints[key]
    root = Path("/r")
    assert _resolve(checkpoints["best"], root) == root / "train" / jobfiles.BEST_CHECKPOINT
    assert _resolve(checkpoints["latest"], root) == root / "train" / jobfiles.LATEST_CHECKPOINT
    assert _resolve(checkpoints["epoch"], root, NNN="007") == root / "train" / jobfiles.epoch_checkpoint_name(7)


def test_every_action_declares_its_kpis(info):
    assert set(info["actions"]) == set(ACTIONS)
    for action, entry in info["actions"].items():
        assert entry["kpis"] == action_kpis(action) == ACTION_INFO[action]["kpis"]
        if "metric" in entry:
            assert entry["metric"] in entry["kpis"]
    assert "val/mIoU" in action_kpis("train") and "train/loss" in action_kpis("train")
    with pytest.raises(ValueError, match="unknown action"):
        action_kpis("pretrain")


# `mal train` then `mal evaluate` in one interpreter: importing torch and Lightning is most of a tiny run's time.
_TRAIN_THEN_EVALUATE = """
import sys
from mal.cli import main
spec, best = sys.argv[1:]
code = main(["train", "-e", spec])
sys.exit(code or main(["evaluate", "-e", spec, best]))
"""


@pytest.mark.slow
def test_a_real_training_reports_only_declared_kpis_where_the_resolver_says(
    info: dict[str, Any], synthetic_coco: Callable[..., Path], tmp_path: Path
) -> None:
    data = synthetic_coco(num_images=4, seed=3)
    results = tmp_path / "results"
    spec = write_tiny_spec(tmp_path / "spec.yaml", data / "annotations.json", data / "images", results)
    checkpoints = info["checkpoints"]
    best = _resolve(checkpoints["best"], results)
    # The checkpoint the resolver calls best is what evaluate_key takes.
    result = subprocess.run([sys.executable, "-c", _TRAIN_THEN_EVALUATE, str(spec),
                             f"{checkpoints['evaluate_key']}={best}"],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, MAL_NO_PROGRESS="1"))
    assert result.returncode == 0, result.stderr[-3000:]

    events = status_events(results)
    reported = {key for event in events for key in event["kpi"]}
    assert "val/mIoU" in reported and "train/loss" in reported  # the run validated and trained
    assert reported <= set(info["actions"]["train"]["kpis"]), reported - set(info["actions"]["train"]["kpis"])
    assert best.is_file()
    assert _resolve(checkpoints["latest"], results).is_file()
    # The newest epoch's file by the documented numbering (from 1, three digits); older ones beyond
    # train.keep_last_checkpoints (default 1) are pruned unless they are the best.
    running = [event for event in events if event["status"] == "RUNNING"]
    assert len(running) == 2
    assert _resolve(checkpoints["epoch"], results, NNN=f"{running[-1]['epoch']:03d}").is_file(), running[-1]
    assert not _resolve(checkpoints["epoch"], results, NNN="000").exists()

    final = status_events(results, "evaluate")[-1]
    assert final["status"] == "SUCCESS" and final["metrics_path"]
    assert info["actions"]["evaluate"]["metric"] in final["kpi"]
    assert set(final["kpi"]) <= set(info["actions"]["evaluate"]["kpis"]), final["kpi"]
