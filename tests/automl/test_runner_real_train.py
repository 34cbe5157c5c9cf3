"""One study with the real `mal train` / `mal evaluate` on synthetic data (slow: real trainings on the CPU).

ASHA with two configurations on rung 0 (1 epoch) and one promotion to 2 epochs, so the real job's
checkpoint resume is exercised through the contract; the final evaluation runs the real evaluate action.
"""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from mal.automl import LocalPlatform
from support.study import quiet_runner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("mal.engine.train") is None, reason="mal train is not built yet"),
]


def test_asha_study_with_the_real_training(tmp_path):
    from mal.data.synthetic import make_synthetic_coco

    ann = make_synthetic_coco(tmp_path / "data", num_images=6, image_size=(64, 64), objects_per_image=(2, 3), seed=1)
    runner = quiet_runner(tmp_path, platform=LocalPlatform(max_concurrent=2, gpus=[]), poll_interval=0.2)
    result = runner.run(
        automl_algorithm="asha",
        automl_settings={
            "automl_max_epochs": 2,
            "automl_reduction_factor": 2,
            "automl_max_recommendations": 2,
            "automl_min_top_configs": 1,
            "automl_max_concurrent": 2,
            "run_final_evaluation": True,
        },
        spec_overrides={
            "dataset.train_ann_path": str(ann),
            "dataset.train_img_dir": str(ann.parent / "images"),
            "dataset.crop_size": 32,
            "dataset.min_obj_size": 0,
            "dataset.num_workers_per_gpu": 0,
            "model.arch": "vit-tiny/16",
            "train.batch_size": 4,
            "train.num_threads": 1,
        },
    )
    history = result["history"]
    # Two configurations at 1 epoch, then promotions; how many depends on which of the two finishes first.
    assert len(history) >= 3 and all(h["status"] == "done" for h in history), [h["failure_reason"] for h in history]
    assert all(0.0 <= h["metric"] <= 1.0 for h in history)
    promoted = next(h for h in history if h["resume_from"] is not None)
    assert promoted["budget"] == 2 and promoted["resume_from"] in (0, 1)
    rec = f"rec_{promoted['rec_id']:03d}"
    spec = yaml.safe_load((tmp_path / "ws").glob(f"run_*/trials/{rec}/spec.yaml").__next__().read_text())
    assert "/rec_00" in spec["train"]["resume_training_checkpoint_path"]
    assert [e for e, _ in promoted["epochs"]] == [2]  # continued from epoch 1, trained only epoch 2
    final = result["final_evaluation"]
    assert final["status"] == "measured" and final["metric"] == "mIoU"
    assert final["checkpoint"] == result["best"]["checkpoint"] and final["checkpoint"].endswith("mal_model_best.pth")
    assert {"mIoU", "AP", "AP50", "per_class"} <= set(final["metrics"])
    assert result["report"].endswith("report.md")
