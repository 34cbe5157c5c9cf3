"""AutoMLRunner on the dummy job: result shape, baseline, final evaluation, caps, failures, hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mal.automl import StudyStoppedError
from mal.automl.algorithms import ALGORITHMS, RandomSearch
from mal.automl.report import study_result
from mal.errors import SpecError
from support.study import launches, spec_overrides
from support.study import quiet_runner as runner

# The trials are the subject here: no calibration before them, no evaluation after (tested on their own).
FAST = {"automl_max_epochs": 2, "automl_max_concurrent": 2, "run_baseline": False, "run_final_evaluation": False}
SECRET_KEY, SECRET_ENV = "sk-never-written-123", "tok-never-written-456"


@pytest.fixture(scope="module")
def random_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("random")
    log = root / "launches.log"
    seen = []
    result = runner(root, {"MAL_DUMMY_STARTED_LOG": str(log), "MAL_SECRET_TOKEN": SECRET_ENV}).run(
        automl_algorithm="random",
        automl_settings={
            **FAST,
            "automl_max_recommendations": 4,
            "run_baseline": True,
            "run_final_evaluation": True,
            "llm_api_key": SECRET_KEY,
        },
        # 5 boxes: a batch of 8 would give zero steps per epoch.
        spec_overrides=spec_overrides(root, boxes=5, **{"train.batch_size": 8}),
        on_result=lambda rec, metric, status: seen.append((rec["job_id"], metric, status)),
    )
    return result, root, seen, log


def test_result_dict_shape(random_study):
    result, _, _, _ = random_study
    assert {"best", "progress", "baseline", "final_evaluation", "history"} <= set(result)
    assert {"rec_id", "specs", "metric_value", "checkpoint"} <= set(result["best"])
    assert {"completed", "total", "best_metric", "best_rec_id", "algorithm"} <= set(result["progress"])
    assert result["progress"]["completed"] == result["progress"]["total"] == 4
    assert result["progress"]["algorithm"] == "random"
    assert len(result["history"]) == 4
    for entry in result["history"]:
        assert {
            "rec_id",
            "params",
            "metric",
            "status",
            "failure_reason",
            "adjustments",
            "budget",
            "started",
            "finished",
            "seconds",
        } <= set(entry)
        assert entry["status"] == "done" and entry["metric"] is not None and entry["budget"] == 2
    best = max(result["history"], key=lambda h: h["metric"])
    assert result["best"]["rec_id"] == best["rec_id"] and result["best"]["metric_value"] == best["metric"]
    assert result["best"]["specs"]["train"]["lr"] == best["params"]["train.lr"]
    assert json.loads(json.dumps(result)) == result  # plain JSON all the way down


def test_baseline_and_final_evaluation_use_the_best_checkpoint(random_study):
    result, _, _, _ = random_study
    baseline, final = result["baseline"], result["final_evaluation"]
    assert baseline["status"] == "measured" and baseline["metric_value"] > 0
    assert baseline["comparison_to_best"]["delta"] == pytest.approx(
        result["best"]["metric_value"] - baseline["metric_value"]
    )
    assert final["status"] == "measured"
    assert final["checkpoint"].endswith("mal_model_best.pth")
    assert final["checkpoint"] == result["best"]["checkpoint"]
    # The dummy evaluate recomputes the metric of the checkpoint it is given: equal to the search's value.
    assert final["metric_value"] == pytest.approx(result["best"]["metric_value"])
    assert final["comparison_to_baseline"]["improved"] == (final["metric_value"] > baseline["metric_value"])


def test_batch_size_capped_and_recorded(random_study):
    result, _, _, _ = random_study
    for entry in result["history"]:
        assert entry["adjustments"] == [
            {"key": "train.batch_size", "from": 8, "to": 5, "reason": pytest.approx(entry["adjustments"][0]["reason"])}
        ]
        assert "zero steps per epoch" in entry["adjustments"][0]["reason"]
    assert result["best"]["specs"]["train"]["batch_size"] == 5


def test_workspace_report_hooks_and_tracking(random_study):
    result, root, seen, log = random_study
    run_dir = Path(result["workspace"])
    assert run_dir.parent == root / "ws" and run_dir.name.startswith("run_")
    for name in (
        "run.json",
        "state.json",
        "baseline.json",
        "final_evaluation.json",
        "launch_review.md",
        "preflight.json",
        "result.json",
        "report/report.md",
        "report/report.html",
        "report/optimisation_history.png",
        "report/parameter_importance.png",
        "report/best_spec.yaml",
    ):
        assert (run_dir / name).is_file(), name
    report = (run_dir / "report" / "report.md").read_text()
    assert "mal train -e" in report and "baseline" in report and "(best)" in report
    review = json.loads((run_dir / "launch_review.json").read_text())
    assert review["baseline"]["status"] == "measured" and review["estimated_seconds"] > 0
    assert sorted(job for job, _, _ in seen) == [f"rec_{i:03d}" for i in range(4)]
    assert all(status == "done" for _, _, status in seen)
    assert len(launches(log)) == 4 + 1  # four trials and the baseline, each once
    assert any((run_dir / "tensorboard" / "rec_000").iterdir())
    # Intermediate checkpoints of trials that are not the best are deleted; the best keeps its own.
    best_job = result["best"]["job_id"]
    for entry in result["history"]:
        pth = list((run_dir / "trials" / entry["job_id"] / "train").glob("*.pth"))
        assert bool(pth) == (entry["job_id"] == best_job)
    assert study_result(run_dir) == json.loads((run_dir / "result.json").read_text())


def test_secrets_are_written_nowhere(random_study):
    result, _, _, _ = random_study
    for path in Path(result["workspace"]).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_KEY.encode() not in data and SECRET_ENV.encode() not in data, path


class StopAtEpochTwo(RandomSearch):
    """Random search whose `report` stops every training at epoch 2 (a stand-in for a median-stopping rule)."""

    def _should_stop(self, trial, epoch, metric):
        return epoch >= 2


def test_a_trial_the_algorithm_stops_is_cancelled_and_keeps_its_metric(tmp_path, monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "random", StopAtEpochTwo)
    result = runner(tmp_path, {"MAL_DUMMY_SLEEP": "0.3"}).run(
        automl_algorithm="random",
        automl_settings={"automl_max_epochs": 8, "automl_max_recommendations": 2, "automl_max_concurrent": 2},
        spec_overrides=spec_overrides(tmp_path),
    )
    for entry in result["history"]:
        assert entry["status"] == "stopped"
        reached = [epoch for epoch, _ in entry["epochs"]]
        assert 2 <= max(reached) < 8
        assert entry["metric"] == max(value for _, value in entry["epochs"])
        train_dir = Path(result["workspace"]) / "trials" / entry["job_id"] / "train"
        assert not (train_dir / "mal_model_epoch_008.pth").exists()
        assert json.loads((train_dir / "status.json").read_text().splitlines()[-1])["status"] != "SUCCESS"


def test_unknown_setting_is_an_error_before_any_folder(tmp_path):
    with pytest.raises(SpecError, match="Did you mean automl_max_epochs"):
        runner(tmp_path).run(automl_algorithm="random", automl_settings={"automl_max_epoch": 3})
    assert not (tmp_path / "ws").exists()


def test_bad_spec_key_fails_as_spec_and_stops_after_three(tmp_path):
    with pytest.raises(StudyStoppedError, match=r"same cause \(spec\).*train\.bad_key") as info:
        runner(tmp_path).run(
            automl_algorithm="random",
            automl_settings={**FAST, "automl_max_recommendations": 6},
            spec_overrides=spec_overrides(tmp_path, **{"train.bad_key": 1}),
        )
    assert info.value.exit_code == 2
    state = study_result(tmp_path / "ws")
    failed = [h for h in state["history"] if h["status"] == "failed"]
    assert len(failed) >= 3 and {h["failure_class"] for h in failed} == {"spec"}
    assert state["phase"] == "stopped" and "train.bad_key" in state["stopped_reason"]
    assert state["final_evaluation"]["status"] == "not_run"


def test_crashing_trials_are_model_code_and_the_study_goes_on(tmp_path):
    # lr above 2e-6 crashes in "training": some trials fail, the others still finish.
    result = runner(tmp_path, {"MAL_DUMMY_CRASH_LR_ABOVE": "2e-6"}).run(
        automl_algorithm="random",
        automl_settings={**FAST, "automl_max_recommendations": 4, "seed": 0},
        spec_overrides=spec_overrides(tmp_path),
    )
    statuses = {h["status"] for h in result["history"]}
    assert statuses == {"done", "failed"}
    for entry in result["history"]:
        crashed = entry["params"]["train.lr"] > 2e-6
        assert (entry["status"] == "failed") == crashed
        if crashed:
            assert entry["failure_class"] == "model_code"
            assert entry["failure_reason"].startswith("ZeroDivisionError")
    assert result["final_evaluation"]["status"] == "reused_best"
    assert result["baseline"]["status"] == "skipped"


def test_same_invalid_configuration_is_not_paid_for_twice(tmp_path):
    log = tmp_path / "launches.log"
    result = runner(
        tmp_path, {"MAL_DUMMY_OOM_BATCH_ABOVE": "2", "MAL_DUMMY_STARTED_LOG": str(log)}, max_concurrent=1
    ).run(
        automl_algorithm="random",
        automl_settings={**FAST, "automl_max_recommendations": 6, "seed": 1},
        spec_overrides=spec_overrides(tmp_path),
        automl_hyperparameters=["train.batch_size"],
        custom_param_ranges={"train.batch_size": [2, 3]},
    )
    oom = [h for h in result["history"] if h["params"]["train.batch_size"] == 3]
    assert len(oom) >= 2, "seed 1 should sample batch size 3 at least twice"
    assert {h["failure_class"] for h in oom} == {"out_of_memory"}
    assert [h["cached"] for h in oom] == [False] + [True] * (len(oom) - 1)
    launched = {Path(d).name for d, _ in launches(log)}
    assert launched == {h["job_id"] for h in result["history"] if not h["cached"]}


def test_missing_metric_three_times_stops_with_an_explicit_error(tmp_path):
    with pytest.raises(StudyStoppedError, match="val/mIoU"):
        runner(tmp_path, {"MAL_DUMMY_MODE": "nometric"}).run(
            automl_algorithm="random",
            automl_settings={**FAST, "automl_max_recommendations": 5},
            spec_overrides=spec_overrides(tmp_path),
        )


def test_hooks_decide_metrics_and_final_evaluation(tmp_path):
    calls = []

    def eval_fn(rec, job_id):
        calls.append(job_id)
        assert rec["specs"]["results_dir"] == rec["results_dir"]
        return {"metric_value": -rec["params"]["train.lr"]}

    def final_eval_fn(best_rec, job_id):
        return 0.5

    result = runner(tmp_path).run(
        automl_algorithm="random",
        automl_settings={**FAST, "automl_max_recommendations": 3},
        spec_overrides=spec_overrides(tmp_path),
        eval_fn=eval_fn,
        baseline_fn=lambda specs: 0.25,
        final_eval_fn=final_eval_fn,
    )
    assert sorted(calls) == ["rec_000", "rec_001", "rec_002"]
    smallest_lr = min(result["history"], key=lambda h: h["params"]["train.lr"])
    assert result["best"]["rec_id"] == smallest_lr["rec_id"]
    assert result["baseline"]["status"] == "provided" and result["baseline"]["metric_value"] == 0.25
    assert result["final_evaluation"]["status"] == "provided"
    assert result["final_evaluation"]["comparison_to_baseline"]["delta"] == pytest.approx(0.25)

    def broken(best_rec, job_id):
        raise RuntimeError("evaluation server down")

    again = runner(tmp_path / "again").run(
        automl_algorithm="random",
        automl_settings={**FAST, "automl_max_recommendations": 2},
        spec_overrides=spec_overrides(tmp_path),
        final_eval_fn=broken,
        metric_extractor=lambda logs, name: None,
    )
    assert again["final_evaluation"]["status"] == "callback_error"
    assert "evaluation server down" in again["final_evaluation"]["reason"]


def test_a_failing_final_evaluation_is_reported_and_the_best_training_still_stands(tmp_path):
    result = runner(tmp_path, {"MAL_DUMMY_EVALUATE_CRASH": "1"}).run(
        automl_algorithm="random",
        automl_settings={**FAST, "automl_max_recommendations": 2, "run_final_evaluation": True},
        spec_overrides=spec_overrides(tmp_path),
    )
    assert result["phase"] == "done" and [h["status"] for h in result["history"]] == ["done", "done"]
    final = result["final_evaluation"]
    assert final["status"] == "unavailable" and final["metric_value"] is None
    assert final["reason"].startswith("mal evaluate failed (")
    assert "illegal memory access" in final["reason"]
    assert result["best"]["metric_value"] == max(h["metric"] for h in result["history"])
    report = (Path(result["report"])).read_text()
    assert "unavailable" in report and "illegal memory access" in report


def test_a_promotion_whose_parent_checkpoint_is_gone_fails_as_infrastructure_and_the_search_ends(tmp_path):
    """Someone cleans the trial folders while the search runs: a promotion cannot continue its parent's training.
    It fails with the reason, is not retrained from scratch, and the search still comes to an end."""

    def clean(rec, metric, status):
        for checkpoint in (Path(rec["results_dir"]) / "train").glob("*.pth"):
            checkpoint.unlink()

    result = runner(tmp_path).run(
        automl_algorithm="hyperband",
        automl_settings={"automl_max_epochs": 4, "automl_reduction_factor": 2, "automl_max_concurrent": 1},
        spec_overrides=spec_overrides(tmp_path),
        on_result=clean,
    )
    promotions = [h for h in result["history"] if h["resume_from"] is not None]
    assert promotions and all(h["status"] == "failed" for h in promotions)
    assert {h["failure_class"] for h in promotions} == {"infrastructure"}
    assert all(h["failure_reason"] == f"the checkpoint of rec {h['resume_from']} to continue from is missing"
               for h in promotions)  # fmt: skip
    assert all(h["started"] is None for h in promotions)  # never launched
    assert result["phase"] == "done"


def test_a_relative_workspace_and_skill_dir_work_and_are_resolved_once(tmp_path, monkeypatch):
    """Trials run inside their own folders: relative paths given by the caller must still reach them."""
    from mal.automl import AutoMLRunner, LocalPlatform
    from support.study import dummy_command, make_skill_dir

    make_skill_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    study = AutoMLRunner(
        skill_dir="skill", workspace_dir="ws", poll_interval=0.05, console=runner(tmp_path).console,
        platform=LocalPlatform(max_concurrent=2, command=dummy_command(), gpus=[]),
    )  # fmt: skip
    result = study.run(
        automl_settings={**FAST, "automl_max_recommendations": 2}, spec_overrides=spec_overrides(tmp_path)
    )
    assert [h["status"] for h in result["history"]] == ["done", "done"]
    assert Path(result["workspace"]).is_absolute() and Path(result["workspace"]).parent == tmp_path / "ws"
    assert json.loads((Path(result["workspace"]) / "run.json").read_text())["skill_dir"] == str(tmp_path / "skill")


def test_a_study_where_every_trial_failed_never_ends_as_done(tmp_path):
    # Two crashing trials are fewer than the three-in-a-row stop: the end of the search must say it found nothing.
    expected = r"No trial of the study finished with a metric \(2 trials; most common cause model_code: RuntimeError"
    with pytest.raises(StudyStoppedError, match=expected) as info:
        runner(tmp_path, {"MAL_DUMMY_MODE": "crash"}).run(
            automl_algorithm="random",
            automl_settings={**FAST, "automl_max_recommendations": 2},
            spec_overrides=spec_overrides(tmp_path),
        )
    assert info.value.exit_code == 1
    run_dir = next((tmp_path / "ws").glob("run_*"))
    assert study_result(run_dir)["phase"] == "stopped"
    assert (run_dir / "report" / "report.md").is_file()
