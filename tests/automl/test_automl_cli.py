"""`mal automl run|status|resume|report` in-process (the SIGKILL + resume path is in test_runner_resume.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
from study_kit import dummy_command, spec_overrides

from mal.automl.cli import main
from mal.cli import main as mal_main


def test_unknown_study_key_exits_2_with_a_suggestion(tmp_path, capsys):
    study = tmp_path / "automl.yaml"
    study.write_text(yaml.safe_dump({"algoritm": "random"}))
    assert main(["run", "-e", str(study), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'algoritm'" in err and "Did you mean algorithm?" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "automl.yaml does not exist; pass the path of your automl.yaml."),
        ("algorithm: [random\n", "is not valid YAML"),
        ("- random\n", "must hold a mapping of keys"),
        ("hyperparameters: [train.lr]\nautoml_hyperparameters: [train.wd]\n",
         "sets both hyperparameters and automl_hyperparameters; keep one."),
    ],
)
def test_a_bad_study_file_exits_2_naming_the_file(tmp_path, capsys, text, message):
    study = tmp_path / "automl.yaml"
    if text is not None:
        study.write_text(text)
    assert main(["run", "-e", str(study), "--yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mal automl run: error: ") and str(study) in err and message in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "automl_runs").exists()


def test_resume_of_a_folder_without_a_study_exits_2(tmp_path, capsys):
    assert main(["resume", str(tmp_path), "--yes"]) == 2
    assert "holds no AutoML study" in capsys.readouterr().err


@pytest.mark.slow
def test_run_with_a_generated_skill_dir_then_status_and_report(tmp_path, capsys):
    study = tmp_path / "automl.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "workspace_dir": str(tmp_path / "ws"),  # no skill_dir: generated with `mal schema`
                "algorithm": "random",
                "automl_settings": {
                    "automl_max_recommendations": 2,
                    "automl_max_epochs": 1,
                    "automl_max_concurrent": 2,
                },
                "spec_overrides": spec_overrides(tmp_path),
                "command": dummy_command(),
                "poll_interval": 0.05,
            }
        )
    )
    assert main(["run", "-e", str(study), "--yes", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "best val/mIoU" in out and "final evaluation" in out
    assert (tmp_path / "ws" / "skill" / "schemas" / "train.schema.json").is_file()
    run_dir = next((tmp_path / "ws").glob("run_*"))

    assert mal_main(["automl", "status", str(run_dir), "--json"]) == 0  # forwarded by the top-level `mal`
    result = json.loads(capsys.readouterr().out)
    assert result["progress"]["completed"] == 2 and result["phase"] == "done"

    assert main(["status", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "rec_000" in table and "rec_001" in table and "2/2 finished" in table

    (run_dir / "report" / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "report.html").is_file()

    # Resuming a finished study changes nothing and says so.
    assert main(["resume", str(run_dir), "--yes", "--no-live"]) == 0
    assert json.loads((run_dir / "result.json").read_text())["progress"]["completed"] == 2
