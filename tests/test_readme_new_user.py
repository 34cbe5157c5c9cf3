"""The README as a new user follows it: copy the spec block of "The spec" into spec.yaml, lay the data out as the
README says (data/annotations.json, data/images/), and run the commands. The block is used verbatim; only the
training is made tiny with command-line overrides so that it takes seconds."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mal.weights import timm_arch
from support.reliability import mal_env, run_mal
from support.specs import TINY

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_spec_block() -> str:
    """The first ```yaml block under the README's "## The spec" heading."""
    section = README.read_text(encoding="utf-8").split("\n## The spec\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "README's 'The spec' section has no yaml block"
    return match.group(1)


def tiny_overrides() -> list[str]:
    """The test suite's tiny settings (support.specs.TINY) as key=value overrides, one epoch."""

    def flatten(node: dict[str, Any], prefix: str = "") -> list[str]:
        items = []
        for key, value in node.items():
            if isinstance(value, dict):
                items += flatten(value, f"{prefix}{key}.")
            else:
                items.append(f"{prefix}{key}={json.dumps(value)}")
        return items

    return [*flatten(TINY), "train.num_epochs=1"]


def test_readme_spec_block_names_no_weights_nobody_has_and_no_mismatched_weights():
    spec = yaml.safe_load(readme_spec_block())
    assert "pretrained_model_path" not in (spec.get("train") or {}), "weights must stay optional in the README"
    # A commented-out weights line, when the user enables it, must fit the block's model.arch.
    commented = re.search(r"#\s*pretrained_model_path:\s*(\S+)", readme_spec_block())
    if commented:
        assert timm_arch(commented.group(1)) == spec["model"]["arch"]


def test_readme_spec_works_verbatim_train_inference_evaluate(tmp_path, synthetic_coco: Callable[..., Path]):
    source = synthetic_coco(num_images=6, seed=5)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "annotations.json").symlink_to(source / "annotations.json")
    (tmp_path / "data" / "images").symlink_to(source / "images")
    (tmp_path / "spec.yaml").write_text(readme_spec_block())
    env = mal_env()

    def mal(*args: str) -> str:
        result = run_mal(*args, cwd=tmp_path, env=env)
        assert result.returncode == 0, f"mal {' '.join(args)}:\n{result.stderr[-3000:]}"
        return result.stdout

    # Verbatim: the spec is valid as printed, and the data check (weights included) passes.
    resolved = yaml.safe_load(mal("train", "-e", "spec.yaml", "--print-spec"))
    assert resolved["dataset"]["train_ann_path"] == "data/annotations.json"
    mal("dataset", "check", "-e", "spec.yaml")

    tiny = tiny_overrides()
    mal("train", "-e", "spec.yaml", *tiny)
    assert list((tmp_path / "results" / "train").glob("mal_model_*.pth"))
    mal("inference", "-e", "spec.yaml", *tiny)
    labels = json.loads((tmp_path / "results" / "inference" / "labels.json").read_text())
    boxes = json.loads((source / "annotations.json").read_text())["annotations"]
    assert len(labels["annotations"]) == len(boxes) > 0
    assert all(ann["segmentation"]["counts"] for ann in labels["annotations"])
    mal("evaluate", "-e", "spec.yaml", *tiny)
    metrics = json.loads((tmp_path / "results" / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0
