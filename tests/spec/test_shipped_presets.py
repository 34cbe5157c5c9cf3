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


def test_the_second_round_preset_is_cpu_natural_plus_the_mask_loss() -> None:
    """cpu-natural-round2 must train exactly as cpu-natural does, plus the measured mask loss: an edit to one preset
    and not the other would silently change what the second round measured."""
    first = load_spec(preset_path("cpu-natural")).model_dump()
    second = load_spec(preset_path("cpu-natural-round2")).model_dump()
    assert (second["train"]["loss_mask_weight"], second["train"]["loss_mask_min_quality"]) == (4.0, 0.65)
    assert first["train"]["loss_mask_weight"] == 0.0
    for spec in (first, second):
        del spec["train"]["loss_mask_weight"], spec["train"]["loss_mask_min_quality"]
    assert first == second
