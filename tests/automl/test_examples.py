"""The study files in examples/automl/ run through `mal automl run` as written, with only their data, their trial
command (the dummy job) and their sizes made tiny."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.engine import run_mal
from support.study import automl_run_command, dummy_command, make_skill_dir, write_annotations

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "automl"
TINY = {
    "bayesian.yaml": {"max_recommendations": 2},
    "bohb.yaml": {"max_trials": 3},
    "pbt.yaml": {"population_size": 2},
    "distributed.yaml": {"max_trials": 2},
}


def _copy_examples(tmp_path: Path, name: str) -> Path:
    """examples/automl/ copied whole (each study names base_spec.yaml beside it), with tiny data and the dummy job."""
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder)
    base = yaml.safe_load((folder / "base_spec.yaml").read_text())
    images = tmp_path / "images"
    images.mkdir()
    base["dataset"].update(train_ann_path=str(write_annotations(tmp_path / "train.json", 40)),
                           train_img_dir=str(images), val_ann_path=None, val_img_dir=None, min_obj_size=0)  # fmt: skip
    (folder / "base_spec.yaml").write_text(yaml.safe_dump(base))
    study = yaml.safe_load((folder / name).read_text())
    study["automl_settings"].update(TINY[name])
    study.update(command=dummy_command(), workspace_dir=str(tmp_path / "ws"), skill_dir=str(make_skill_dir(tmp_path)))
    (folder / name).write_text(yaml.safe_dump(study))
    return folder / name


def test_every_example_is_tested():
    assert sorted(path.name for path in EXAMPLES.glob("*.yaml") if path.name != "base_spec.yaml") == sorted(TINY)


@pytest.mark.parametrize("name", ["bayesian.yaml", "bohb.yaml", "pbt.yaml"])
def test_a_local_example_runs_to_its_final_evaluation(tmp_path, name):
    study_file = _copy_examples(tmp_path, name)
    done = subprocess.run(automl_run_command(study_file), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next((tmp_path / "ws").glob("run_*/result.json")).read_text())
    assert result["phase"] == "done" and result["metric"] == "val/mIoU"
    assert result["progress"]["algorithm"] == name.removesuffix(".yaml")
    assert result["baseline"]["status"] == "measured"
    assert result["final_evaluation"]["status"] == "measured"
    # The full budget is the train.num_epochs the example's comment describes (bohb's own, else the base spec's).
    assert max(entry["budget"] for entry in result["history"]) == (9 if name == "bohb.yaml" else 10)


def test_the_distributed_example_runs_on_a_journal_and_reports_from_the_store(tmp_path):
    study_file = _copy_examples(tmp_path, "distributed.yaml")
    journal = str(tmp_path / "asha.journal")
    done = subprocess.run([*automl_run_command(study_file), "--storage", journal, "--study", "asha"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    status = run_mal("automl", "status", "--storage", journal, "--study", "asha", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    result = json.loads(status.stdout)
    assert result["progress"]["completed"] == result["progress"]["total"] >= 2
    assert result["final_evaluation"]["status"] == "measured"
