"""The spec presets we ship (specs/*.yaml, the demo's embedded default) are valid specs with the settings docs
promise: a typo in a preset would otherwise surface only when a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal.presets import preset_path
from mal.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))


def test_specs_folder_holds_the_documented_presets() -> None:
    assert {path.name for path in SPECS} >= {"cpu_nuclei.yaml", "cpu_natural.yaml"}


@pytest.mark.parametrize("path", [*SPECS, preset_path("demo")], ids=lambda p: Path(p).name)
def test_preset_loads_and_labels_with_the_test_time_refinement(path: Path) -> None:
    spec = load_spec(path)
    assert spec.model.arch == "vit-tiny/16"  # the CPU presets stay small
    assert spec.inference.crf_refine_iter > 0 and spec.evaluate.crf_refine_iter > 0
