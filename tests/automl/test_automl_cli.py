"""`mal automl run|status|resume|report` in-process (the SIGKILL + resume path is in test_runner_resume.py)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from mal.automl.cli import main
from mal.cli import main as mal_main
from support.study import dummy_command, spec_overrides


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


def _on_a_terminal(args: list[str], answer: str, timeout: float = 90) -> tuple[int, str]:
    """Run `mal automl ARGS` with a pseudo-terminal as stdin/stdout, answering the launch prompt with `answer`."""
    import pty
    import select
    import subprocess
    import time

    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "MAL_DUMMY_SLEEP": "0.01"}
    proc = subprocess.Popen([sys.executable, "-m", "mal", "automl", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)  # fmt: skip
    os.close(slave)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        chunk = b""
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            out += chunk
        if not answered and b"Launch this study?" in out:
            os.write(master, answer.encode() + b"\r")
            answered = True
        if not chunk and proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.slow
def test_the_launch_review_asks_on_a_terminal_and_a_declined_study_resumes_to_the_same_question(tmp_path):
    from support.study import write_dummy_study

    study = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=2, automl_max_epochs=2)
    code, text = _on_a_terminal(["run", "-e", str(study), "--no-live", "--poll-interval", "0.05"], "n")
    assert code == 0, text[-2000:]
    assert "Preflight" in text and "Launch this study?" in text
    assert "launch declined; nothing ran. Launch it later with `mal automl resume" in " ".join(text.split())
    (run_dir,) = (tmp_path / "ws").glob("run_*")
    assert not (run_dir / "trials").exists() or not any((run_dir / "trials").iterdir())

    code, text = _on_a_terminal(["resume", str(run_dir), "--no-live", "--poll-interval", "0.05"], "y")
    assert code == 0, text[-2000:]
    assert "Launch this study?" in text
    result = json.loads((run_dir / "result.json").read_text())
    assert result["phase"] == "done" and [h["status"] for h in result["history"]] == ["done", "done"]


def test_without_a_terminal_the_launch_needs_yes(tmp_path, capsys, monkeypatch):
    from support.study import write_dummy_study

    study = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=1)
    with open(os.devnull) as no_terminal:
        monkeypatch.setattr(sys, "stdin", no_terminal)
        assert main(["run", "-e", str(study), "--no-live"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("mal automl run: error: The launch needs a confirmation but there is no terminal; rerun with "
                       "--yes (or yes=True) to launch without the prompt.")  # fmt: skip


@pytest.mark.parametrize("command", [["python", "train.py"], "python train.py {spec}"])
def test_a_trial_command_without_the_spec_placeholder_exits_2_with_an_example(tmp_path, capsys, command):
    from support.study import write_dummy_study

    study = write_dummy_study(tmp_path, tmp_path / "ws")
    data = yaml.safe_load(study.read_text()) | {"command": command}
    study.write_text(yaml.safe_dump(data))
    assert main(["run", "-e", str(study), "--yes", "--no-live"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no '{spec}' argument" in err
    assert "e.g. [python, -m, mal, '{action}', -e, '{spec}']" in err


@pytest.mark.parametrize(
    ("command", "stop", "code", "line"),
    [
        ("status", KeyboardInterrupt, 130, "mal automl status: interrupted."),
        ("report", "sigterm", 143, "mal automl report: terminated (SIGTERM)."),
        ("resume", "sigterm", 143, "mal automl resume: terminated (SIGTERM); continue with `mal automl resume`."),
    ],
)
def test_an_interrupted_command_says_how_it_stopped_and_offers_resume_only_for_a_study(
    tmp_path, capsys, monkeypatch, command, stop, code, line
):
    """SIGTERM is delivered for real (to this process, inside the command); only run and resume leave a study
    that `mal automl resume` continues, so only they suggest it."""
    import signal

    import mal.automl.cli as automl_cli

    def stopped(args, console):
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the test: the command did not handle it")

    monkeypatch.setattr(automl_cli, f"_{command}", stopped)
    previous = signal.signal(signal.SIGTERM, unhandled)  # so that a regression fails here instead of killing pytest
    try:
        assert main([command, str(tmp_path)]) == code
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command put the handler it found back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.strip() == line
