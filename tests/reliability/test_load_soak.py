"""Load, scaled down from benchmarks/soak.py: 1,000 boxes labeled and a 30-trial study without handle leaks,
unbounded memory growth or lost trials (the full-size figures are in docs/RELIABILITY.md)."""

from __future__ import annotations

import pytest
from soak import label_soak, make_box_dataset, study_soak

pytestmark = pytest.mark.slow


def test_labeling_1000_boxes_keeps_handles_and_memory_flat(tmp_path, trained):
    ann = make_box_dataset(tmp_path, 1000)
    result = label_soak(ann, tmp_path / "images", trained, batch_size=64)
    assert result["boxes"] == result["labeled"] == 1000
    assert result["handles_end"] <= result["handles_before"]  # every image file closed again
    assert result["handles_max"] <= result["handles_before"] + 4
    assert result["rss_growth_mib_after_warmup"] < 150  # no per-box accumulation beyond the labels themselves
    # Time per box is a benchmark figure (benchmarks/soak.py), not asserted here: the CI machine is shared.


def test_a_30_trial_study_keeps_the_runner_flat_and_loses_nothing(tmp_path):
    result = study_soak(tmp_path, trials=30)
    assert result["finished"] == result["unique_rec_ids"] == result["done"] == 30
    assert result["runner_handles_max"] <= result["runner_handles_after_warmup"] + 8
    assert result["runner_rss_growth_mib_after_warmup"] < 60
