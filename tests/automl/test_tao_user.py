"""AutoML as a TAO user runs it: TAO's names, the baseline measured before the launch review, the final evaluation
on by default, and nothing the user wrote silently replaced (issue "AutoML as a TAO user runs it")."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from mal.automl import AutoMLRunner, LocalPlatform
from mal.automl.failures import StudyStoppedError
from mal.automl.settings import parse_settings
from mal.errors import SpecError, UserError
from support.dummy_job import quality
from support.study import (
    automl_run_command,
    dummy_command,
    launches,
    make_skill_dir,
    quiet_runner,
    spec_overrides,
    write_dummy_study,
)

TAO_STUDY = {
    "automl_algorithm": "random",
    "automl_settings": {
        "metric": "mIoU",
        "max_recommendations": 2,
        "max_epochs": 2,
        "max_concurrent": 2,
        "run_baseline": True,
        "run_final_evaluation": True,
    },
}


def _tao_study_file(tmp_path, **extra):
    """The dummy study rewritten with TAO's names only (no algorithm / automl_* keys of ours)."""
    path = write_dummy_study(tmp_path, tmp_path / "ws")
    study = yaml.safe_load(path.read_text())
    del study["algorithm"], study["automl_settings"]
    path.write_text(yaml.safe_dump({**study, **TAO_STUDY, **extra}))
    return path


def _run_dir(tmp_path):
    return next((tmp_path / "ws").glob("run_*"))


def test_a_study_file_in_taos_words_runs_unchanged_and_answers_with_taos_fields(tmp_path):
    done = subprocess.run(automl_run_command(_tao_study_file(tmp_path)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = _run_dir(tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    # Aliases are stored once, in canonical form; metric: mIoU is the KPI the job reports.
    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    assert (settings["algorithm"], settings["metric"], settings["automl_max_epochs"]) == ("random", "val/mIoU", 2)
    review = json.loads((run_dir / "launch_review.json").read_text())
    assert "max_epochs read as automl_max_epochs" in review["notes"]
    assert "metric 'mIoU' is the job's KPI 'val/mIoU'" in review["notes"]
    # TAO's result fields.
    assert {"rec_id", "specs", "metric_value"} <= set(result["best"])
    assert {"completed", "total", "best_metric", "best_rec_id", "algorithm"} <= set(result["progress"])
    assert result["progress"]["completed"] == result["progress"]["total"] == 2
    assert {"rec_id", "metric", "status", "failure_reason", "adjustments"} <= set(result["history"][0])
    assert result["baseline"]["status"] == "measured"
    assert result["baseline"]["comparison_to_best"]["reference"] == result["baseline"]["metric_value"]
    final = result["final_evaluation"]
    assert final["status"] == "measured" and final["reason"] == "mal evaluate on the best checkpoint"
    best_ckpt = json.loads(Path(result["best"]["checkpoint"]).read_text())
    assert final["metric_value"] == quality(best_ckpt["lr"], best_ckpt["wd"], best_ckpt["epoch"])
    assert final["comparison_to_baseline"]["reference"] == result["baseline"]["metric_value"]


def test_the_baseline_is_measured_before_the_review_which_shows_it_and_a_measured_estimate(tmp_path):
    runner = quiet_runner(tmp_path)
    runner.run(automl_algorithm="random", automl_settings={"automl_max_recommendations": 2, "automl_max_epochs": 4},
               spec_overrides=spec_overrides(tmp_path))  # fmt: skip
    run_dir = _run_dir(tmp_path)
    baseline = json.loads((run_dir / "baseline.json").read_text())
    review = json.loads((run_dir / "launch_review.json").read_text())
    # TAO's default: on. A calibration training of one resource unit, which the review names as such.
    assert (baseline["kind"], baseline["status"], baseline["budget"]) == ("calibration", "measured", 1)
    assert baseline["metric_value"] == quality(baseline["specs"]["train"]["lr"], baseline["specs"]["train"]["wd"], 1)
    assert review["baseline"]["metric_value"] == baseline["metric_value"]
    assert "calibration: the spec's own values trained for 1 epoch(s), not a full training" in review["baseline_text"]
    assert review["estimated_seconds"] > 0 and "from the measured calibration training" in review["estimate_text"]
    # The review was written after the baseline, and before the first trial started.
    first_trial = min(p.stat().st_mtime for p in (run_dir / "trials").glob("*/spec.yaml"))
    assert (run_dir / "baseline.json").stat().st_mtime <= (run_dir / "launch_review.json").stat().st_mtime
    assert (run_dir / "launch_review.json").stat().st_mtime <= first_trial


def test_a_failed_baseline_blocks_the_launch_and_the_resume_after_the_fix_measures_it_again(tmp_path):
    log = tmp_path / "launches.log"
    settings = {"automl_max_recommendations": 2, "automl_max_epochs": 2}
    with pytest.raises(StudyStoppedError, match=r"The baseline \(calibration\) did not give val/mIoU: the calibration "
                       r"training failed \(data\)") as info:  # fmt: skip
        quiet_runner(tmp_path, env={"MAL_DUMMY_MODE": "exit2", "MAL_DUMMY_STARTED_LOG": str(log)}).run(
            automl_algorithm="random", automl_settings=settings, spec_overrides=spec_overrides(tmp_path)
        )
    assert info.value.exit_code == 2
    run_dir = _run_dir(tmp_path)
    assert not list(run_dir.glob("trials/*")) and not (run_dir / "launch_review.json").exists()
    assert json.loads((run_dir / "state.json").read_text())["phase"] == "baseline"
    fixed = LocalPlatform(max_concurrent=2, command=dummy_command(), gpus=[], env={"MAL_DUMMY_STARTED_LOG": str(log)})
    result = AutoMLRunner(workspace_dir=run_dir, platform=fixed, console=Console(file=io.StringIO()),
                          poll_interval=0.05).run(resume=True)  # fmt: skip
    assert result["baseline"]["status"] == "measured" and result["phase"] == "done"
    # The failed calibration stopped before it trained; the resume trained it once, then the trials.
    started = [d.rsplit("/", 1)[-1] for d, _ in launches(log)]
    assert started[0] == "baseline" and sorted(started[1:]) == ["rec_000", "rec_001"]


def test_the_baseline_evaluates_the_specs_checkpoint_when_it_names_one(tmp_path):
    checkpoint = tmp_path / "start.pth"
    checkpoint.write_text(json.dumps({"epoch": 3, "lr": 3e-6, "wd": 1e-3}))
    result = quiet_runner(tmp_path).run(
        automl_algorithm="random",
        automl_settings={"automl_max_recommendations": 1, "automl_max_epochs": 2},
        spec_overrides=spec_overrides(tmp_path, **{"evaluate.checkpoint": str(checkpoint)}),
    )
    baseline = result["baseline"]
    assert (baseline["kind"], baseline["status"]) == ("evaluation", "measured")
    assert baseline["metric_value"] == quality(3e-6, 1e-3, 3)
    review = json.loads((_run_dir(tmp_path) / "launch_review.json").read_text())
    assert review["estimated_seconds"] is None and "an evaluation times no training" in review["estimate_text"]


def test_the_users_num_epochs_is_the_full_budget_and_the_review_lists_what_the_runner_sets(tmp_path):
    result = quiet_runner(tmp_path).run(
        automl_algorithm="random",
        automl_settings={"automl_max_recommendations": 2, "run_baseline": False},
        spec_overrides=spec_overrides(tmp_path, **{"train.num_epochs": 3, "train.lr": 2e-6}),
    )
    assert [h["budget"] for h in result["history"]] == [3, 3]
    assert all(h["epochs"][-1][0] == 3 for h in result["history"])
    run_dir = _run_dir(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["settings"]["automl_max_epochs"] == 3
    review = json.loads((run_dir / "launch_review.json").read_text())
    keys = {k["key"]: k for k in review["runner_keys"]}
    assert {"results_dir", "train.num_epochs", "train.resume_training_checkpoint_path", "train.lr", "train.wd"} <= set(
        keys
    )
    assert "your train.num_epochs" in keys["train.num_epochs"]["source"]
    assert "your 2e-06 is the baseline's value" in keys["train.lr"]["source"]
    text = (run_dir / "launch_review.md").read_text()
    assert "## Keys the runner sets in every trial" in text and "| `train.num_epochs` |" in text


@pytest.mark.parametrize(
    ("settings", "overrides", "message"),
    [
        ({"automl_max_epochs": 27}, {"train.num_epochs": 5},
         "sets train.num_epochs = 5 but automl_max_epochs x epoch_multiplier makes a full training 27"),
        ({"epoch_multiplier": 2}, {"train.num_epochs": 5}, "must be a whole number of resource units"),
        ({"algorithm": "pbt"}, {"train.num_epochs": 5}, "must be a whole number of pbt generations of"),
        ({"algorithm": "pbt", "max_generations": 3}, {"train.num_epochs": 20},
         "but pbt trains automl_max_generations (3) x automl_eval_interval (10) epochs"),
        ({}, {"train.resume_training_checkpoint_path": "/data/ckpt.pth"},
         "which every trial would replace (a trial trains from the start"),
        ({"automl_budget": 10}, {}, "automl_budget, which is not a MAL setting: a study's work is set by"),
        ({"metric": "mAP"}, {}, "automl_settings.metric 'mAP' is not a KPI the train job reports; it reports "
                                "train/loss, train/loss_mil, train/loss_crf, train/lr, val/mIoU, val/instances"),
    ],
)  # fmt: skip
def test_a_value_the_runner_cannot_honour_is_refused_before_anything_runs(tmp_path, settings, overrides, message):
    log = tmp_path / "launches.log"
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        quiet_runner(tmp_path, env={"MAL_DUMMY_STARTED_LOG": str(log)}).run(
            automl_settings={"automl_max_recommendations": 1, **settings},
            spec_overrides=spec_overrides(tmp_path, **overrides),
        )
    assert not (tmp_path / "ws").exists() and launches(log) == []


def test_unprefixed_and_tao_spellings_are_aliases_and_both_spellings_at_once_are_refused():
    settings = parse_settings({"reduction_factor": 2, "population_size": 4, "max_trials": 6, "kde_samples": 8})
    assert (settings.automl_reduction_factor, settings.automl_population_size) == (2, 4)
    assert (settings.automl_max_trials, settings.automl_kde_samples) == (6, 8)
    assert "reduction_factor" not in settings.to_json_dict()
    with pytest.raises(SpecError, match="sets both max_epochs and automl_max_epochs; keep only automl_max_epochs"):
        parse_settings({"max_epochs": 3, "automl_max_epochs": 3})


def test_platform_sdk_is_taos_name_for_the_platform(tmp_path):
    platform = LocalPlatform(max_concurrent=1, command=dummy_command(), gpus=[])
    runner = AutoMLRunner(skill_dir=make_skill_dir(tmp_path), platform_sdk=platform, workspace_dir=tmp_path / "ws")
    assert runner.platform is platform
    with pytest.raises(SpecError, match="takes one of platform=, sdk= and platform_sdk="):
        AutoMLRunner(skill_dir=make_skill_dir(tmp_path), platform=platform, platform_sdk=platform)


def test_a_skill_with_automl_switched_off_or_without_its_template_is_refused_before_the_run_folder(tmp_path):
    skill = make_skill_dir(tmp_path)
    info_path = skill / "references" / "skill_info.yaml"
    info = yaml.safe_load(info_path.read_text())
    info_path.write_text(yaml.safe_dump({**info, "automl_enabled": False}))
    with pytest.raises(SpecError, match="sets automl_enabled: false: this skill does not allow AutoML studies"):
        quiet_runner(tmp_path).run(spec_overrides=spec_overrides(tmp_path))
    info_path.write_text(yaml.safe_dump(info))
    (skill / "references" / "spec_template_train.yaml").unlink()
    with pytest.raises(SpecError, match="has no references/spec_template_train.yaml, so trials would train on an"):
        quiet_runner(tmp_path).run(spec_overrides=spec_overrides(tmp_path))
    assert not (tmp_path / "ws").exists()


def test_a_failed_preflight_leaves_no_run_folder(tmp_path):
    overrides = spec_overrides(tmp_path, **{"dataset.train_img_dir": str(tmp_path / "no-such-folder")})
    with pytest.raises(UserError, match="AutoML preflight failed: dataset.train_img_dir = .* does not exist"):
        quiet_runner(tmp_path).run(spec_overrides=overrides)
    assert not (tmp_path / "ws").exists()


def test_a_study_file_can_name_its_base_spec(tmp_path):
    base = tmp_path / "specs" / "base.yaml"
    base.parent.mkdir()
    overrides = spec_overrides(tmp_path)
    base.write_text(yaml.safe_dump({"train": {"num_epochs": 2, "lr": 2e-6}, **overrides}))
    path = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=1)
    study = yaml.safe_load(path.read_text())
    study["spec_overrides"] = {"train.wd": 1e-3}
    path.write_text(yaml.safe_dump({**study, "spec": "specs/base.yaml"}))
    done = subprocess.run(automl_run_command(path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    base_spec = yaml.safe_load((_run_dir(tmp_path) / "base_spec.yaml").read_text())
    assert (base_spec["train"]["lr"], base_spec["train"]["wd"], base_spec["train"]["num_epochs"]) == (2e-6, 1e-3, 2)
    path.write_text(yaml.safe_dump({**study, "spec": "specs/missing.yaml"}))
    missing = subprocess.run(automl_run_command(path), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "spec specs/missing.yaml" in missing.stderr
    assert "`spec:` is read relative to" in missing.stderr


def test_end_of_input_at_the_launch_prompt_is_a_decline(tmp_path):
    path = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=1)
    primary, secondary = os.openpty()
    command = [arg for arg in automl_run_command(path) if arg != "--yes"]
    process = subprocess.Popen(command, stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(secondary)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ws").exists() or not list((tmp_path / "ws").glob("run_*/launch_review.md")):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    time.sleep(0.5)
    os.write(primary, b"\x04")  # Ctrl-D: end of input on a terminal
    out, err = process.communicate(timeout=60)
    os.close(primary)
    assert process.returncode == 0, err.decode()[-2000:]
    assert b"launch declined; nothing ran" in out
    assert json.loads((_run_dir(tmp_path) / "state.json").read_text())["phase"] == "declined"
    assert not list(_run_dir(tmp_path).glob("trials/*"))


def test_tao_settings_in_the_python_api(tmp_path):
    result = quiet_runner(tmp_path).run(
        automl_settings={"automl_algorithm": "random", "max_recommendations": 1, "max_epochs": 2, "metric": "mIoU"},
        spec_overrides=spec_overrides(tmp_path),
    )
    assert result["progress"]["algorithm"] == "random" and result["metric"] == "val/mIoU"
    assert result["best"]["metric_value"] is not None and result["final_evaluation"]["status"] == "measured"

