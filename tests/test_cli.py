"""The `mal` command as users call it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml


def mal(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mal", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_help_lists_actions():
    result = mal("--help")
    assert result.returncode == 0
    for action in ("train", "evaluate", "inference", "export", "schema", "demo", "automl", "dataset"):
        assert action in result.stdout


def test_action_help():
    result = mal("train", "--help")
    assert result.returncode == 0
    assert "-e" in result.stdout and "--print-spec" in result.stdout


def test_misplaced_key_exits_2_with_one_line_naming_the_right_key(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  arch: vit-tiny/16\n")
    result = mal("train", "-e", str(spec), "model.crop_size=256")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "dataset.crop_size" in lines[0]
    assert "Traceback" not in result.stderr


def test_print_spec_shows_resolved_values(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  lr: 2e-6\n")
    result = mal("train", "-e", str(spec), "train.num_epochs=7", "--print-spec")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["num_epochs"] == 7
    assert resolved["train"]["lr"] == 2e-6


def test_missing_spec_file_exits_2(tmp_path):
    result = mal("evaluate", "-e", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr.strip().splitlines()[-1]


def test_schema_command_writes_a_valid_skill_dir(tmp_path):
    result = mal("schema", "--out", str(tmp_path / "skill"))
    assert result.returncode == 0, result.stderr
    schema = json.loads((tmp_path / "skill/schemas/train.schema.json").read_text())
    template = yaml.safe_load((tmp_path / "skill/references/spec_template_train.yaml").read_text())
    jsonschema.validate(template, schema)
    assert schema["automl_default_parameters"] == ["train.lr", "train.wd"]


def test_schema_without_target_is_a_user_error():
    result = mal("schema")
    assert result.returncode == 2
    assert "--out" in result.stderr


def test_ctrl_c_prints_the_resume_command_without_a_password(monkeypatch, capsys):
    import mal.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mal.cli, "_run_spec_action", interrupted)
    code = mal.cli.main(["train", "-e", "spec.yaml", "dataset.train_img_dir=https://user:planted-pw-99@host/x.zip"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130 and "planted-pw-99" not in line
    assert line.startswith("mal train: interrupted; continue from the last checkpoint with: mal train -e spec.yaml")
    assert "https://user:***@host/x.zip" in line and line.endswith("train.resume_training_checkpoint_path=auto")
