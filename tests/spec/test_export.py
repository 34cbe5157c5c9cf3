"""The skill layout generated from the spec models: schemas validate templates, templates round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from mal.spec import ExperimentSpec, load_spec
from mal.spec.export import spec_reference_markdown, write_skill_dir
from mal.spec.schema import ACTIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def skill_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("skill")
    write_skill_dir(out)
    return out


def test_layout(skill_dir):
    for action in ACTIONS:
        assert (skill_dir / "schemas" / f"{action}.schema.json").is_file()
        assert (skill_dir / "references" / f"spec_template_{action}.yaml").is_file()
    manifest = json.loads((skill_dir / "schemas" / "manifest.json").read_text())
    assert set(manifest["actions"]) == set(ACTIONS)
    info = yaml.safe_load((skill_dir / "references" / "skill_info.yaml").read_text())
    assert info["actions"]["train"]["command"] == "mal train -e {config_path}"
    assert info["actions"]["train"]["automl_enabled"] is True


@pytest.mark.parametrize("action", ACTIONS)
def test_templates_validate_and_round_trip(skill_dir, action):
    schema = json.loads((skill_dir / "schemas" / f"{action}.schema.json").read_text())
    template_path = skill_dir / "references" / f"spec_template_{action}.yaml"
    template = yaml.safe_load(template_path.read_text())
    jsonschema.validate(template, schema)
    assert load_spec(template_path) == ExperimentSpec()


def test_schema_rejects_a_wrong_value(skill_dir):
    schema = json.loads((skill_dir / "schemas" / "train.schema.json").read_text())
    bad = ExperimentSpec().model_dump(mode="json")
    bad["model"]["arch"] = "resnet50"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_train_schema_lists_lr_and_wd_as_automl_defaults_with_bounds(skill_dir):
    schema = json.loads((skill_dir / "schemas" / "train.schema.json").read_text())
    assert schema["automl_default_parameters"] == ["train.lr", "train.wd"]
    lr = schema["properties"]["train"]["properties"]["lr"]
    wd = schema["properties"]["train"]["properties"]["wd"]
    assert (lr["minimum"], lr["maximum"], lr["default"]) == (1e-7, 1e-5, 1e-6)
    assert (wd["minimum"], wd["maximum"], wd["default"]) == (1e-5, 1e-2, 5e-4)
    assert lr["automl_enabled"] and wd["automl_enabled"]
    assert lr["type"] == "number" and lr["description"]
    arch = schema["properties"]["model"]["properties"]["arch"]
    assert "vit-tiny/16" in arch["enum"] and arch["automl_enabled"] is False
    assert "model.arch" in schema["automl_disabled_parameters"]
    assert "train.lr" not in schema["automl_disabled_parameters"]


def test_every_leaf_has_a_description(skill_dir):
    schema = json.loads((skill_dir / "schemas" / "train.schema.json").read_text())
    for section, node in schema["properties"].items():
        leaves = node["properties"].items() if node.get("type") == "object" else [(section, node)]
        for name, leaf in leaves:
            assert leaf.get("description"), f"{section}.{name} has no description"


def test_docs_spec_reference_is_generated_from_the_models():
    committed = (ROOT / "docs" / "SPEC.md").read_text()
    assert committed == spec_reference_markdown(), "docs/SPEC.md is stale: run `make docs`"
