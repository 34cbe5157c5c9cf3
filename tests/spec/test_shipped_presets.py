"""The spec presets we ship (src/mal/presets/*.yaml: the CPU presets and the demo's embedded default) are valid specs
with the settings docs promise: a typo in a preset would otherwise surface only when a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal.presets import list_presets, preset_path
from mal.spec import load_spec

PRESETS = [preset.path for preset in list_presets()]


def test_the_package_holds_the_documented_presets() -> None:
    assert {path.name for path in PRESETS} >= {"cpu_nuclei.yaml", "cpu_natural.yaml", "demo.yaml"}
    assert preset_path("demo").name == "demo.yaml"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: Path(p).name)
def test_preset_loads_and_labels_with_the_test_time_refinement(path: Path) -> None:
    spec = load_spec(path)
    assert spec.model.arch == "vit-tiny/16"  # the CPU presets stay small
    assert spec.inference.crf_refine_iter > 0 and spec.evaluate.crf_refine_iter > 0


def test_cpu_natural_stops_where_its_warm_up_ends_after_a_fixed_number_of_boxes() -> None:
    """The measured setting (docs/QUALITY.md, "Stop in the warm-up"): one epoch of 416 boxes, all of it warm-up, so
    every file trains the same 26 steps of 16 and stops before the masks drift."""
    train = load_spec(preset_path("cpu-natural")).train
    assert (train.num_epochs, train.warmup_epochs, train.boxes_per_epoch, train.batch_size) == (1, 1.0, 416, 16)
