"""SearchSpace: schema parsing (JSON-schema and TAO types), sampling, conditions, encoding, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mal.automl.space import SearchSpace
from mal.errors import SpecError

SCHEMA = {
    "type": "object",
    "properties": {
        "train": {
            "type": "object",
            "properties": {
                "lr": {"type": "float", "default": 1e-6, "minimum": 1e-7, "maximum": 1e-5, "automl_enabled": True},
                "wd": {
                    "type": "number",
                    "default": 5e-4,
                    "minimum": 1e-5,
                    "maximum": 1e-2,
                    "valid_min": 0.0,
                    "valid_max": 1.0,
                    "automl_enabled": True,
                },
                "momentum": {
                    "type": "number",
                    "minimum": 0.1,
                    "maximum": 0.99,
                    "math_cond": "> 0.0",
                    "automl_enabled": True,
                },
                "warmup_lr": {"type": "number", "minimum": 0.001, "maximum": 0.05, "automl_enabled": True},
                "batch_size": {
                    "type": "int",
                    "default": 8,
                    "minimum": 1,
                    "maximum": 64,
                    "math_cond": "^ 2",
                    "automl_enabled": True,
                },
                "crop": {
                    "type": "integer",
                    "default": 512,
                    "minimum": 100,
                    "maximum": 700,
                    "math_cond": "/ 8",
                    "automl_enabled": True,
                },
                "num_epochs": {"type": "integer", "default": 10, "minimum": 4, "maximum": 20, "automl_enabled": True},
                "val_interval": {
                    "type": "integer",
                    "default": 2,
                    "minimum": 1,
                    "maximum": 20,
                    "math_cond": "/ 2",
                    "depends_on": "train.num_epochs",
                    "automl_enabled": True,
                },
                "min_scale": {"type": "number", "default": 0.2, "minimum": 0.1, "maximum": 0.9, "automl_enabled": True},
                "max_scale": {
                    "type": "number",
                    "default": 0.8,
                    "minimum": 0.1,
                    "maximum": 0.9,
                    "math_cond": "> depends_on",
                    "depends_on": "train.min_scale",
                    "automl_enabled": True,
                },
                "optim": {
                    "type": "categorical",
                    "enum": ["sgd", "adam", "adamw", "lamb"],
                    "option_weights": [0.1, 0.1, 0.4, 0.4],
                    "default": "adamw",
                    "automl_enabled": True,
                },
                "amp": {"type": "bool", "default": True, "automl_enabled": True},
                "betas": {"type": "array", "enum": [[0.9, 0.999], [0.9, 0.9]], "automl_enabled": True},
                "seed": {"type": "integer", "default": 1, "minimum": 0, "maximum": 10, "automl_enabled": False},
                "gpus": {"type": "integer", "default": 1, "minimum": 1, "maximum": 8, "automl_enabled": True},
            },
        },
    },
    "automl_default_parameters": ["train.lr", "train.wd"],
    "automl_disabled_parameters": ["train.gpus"],
}
ALL = [
    "train.lr",
    "train.wd",
    "train.momentum",
    "train.warmup_lr",
    "train.batch_size",
    "train.crop",
    "train.num_epochs",
    "train.val_interval",
    "train.min_scale",
    "train.max_scale",
    "train.optim",
    "train.amp",
    "train.betas",
]


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.from_schema(SCHEMA, {"train": {"lr": 2e-6}}, parameters=ALL)


@pytest.fixture(scope="module")
def samples(space: SearchSpace) -> list[dict]:
    rng = np.random.default_rng(0)
    return [space.sample(rng) for _ in range(2000)]


def test_default_parameters_and_template_defaults():
    space = SearchSpace.from_schema(SCHEMA, {"train": {"lr": 2e-6}})
    assert space.names == ["train.lr", "train.wd"]
    assert space.defaults() == {"train.lr": 2e-6, "train.wd": 5e-4}  # the template wins over the schema default


def test_kinds_from_json_schema_and_tao_types(space):
    kinds = {p.name: p.kind for p in space.params}
    assert kinds["train.lr"] == "float" and kinds["train.wd"] == "float"
    assert kinds["train.batch_size"] == "int" and kinds["train.crop"] == "int"
    assert kinds["train.optim"] == "categorical" and kinds["train.betas"] == "categorical"
    assert kinds["train.amp"] == "bool"


def test_samples_stay_in_bounds_with_their_types(space, samples):
    for param in space.params:
        values = [s[param.name] for s in samples]
        if param.kind == "float":
            assert all(isinstance(v, float) and param.low <= v <= param.high for v in values)
        elif param.kind == "int":
            assert all(type(v) is int and param.low <= v <= param.high for v in values)
        else:
            assert {json.dumps(v) for v in values} == {json.dumps(c) for c in param.choices}


def test_option_weights_set_choice_frequencies(samples):
    counts = {
        name: sum(s["train.optim"] == name for s in samples) / len(samples) for name in ("sgd", "adam", "adamw", "lamb")
    }
    assert counts["sgd"] == pytest.approx(0.1, abs=0.03)
    assert counts["adamw"] == pytest.approx(0.4, abs=0.04)


def test_math_cond_powers_of_two_and_multiples_of_eight(samples):
    sizes = {s["train.batch_size"] for s in samples}
    assert sizes == {1, 2, 4, 8, 16, 32, 64}
    assert all(s["train.crop"] % 8 == 0 and 100 <= s["train.crop"] <= 700 for s in samples)


def test_depends_on_conditions_hold(samples):
    assert all(s["train.max_scale"] > s["train.min_scale"] for s in samples)
    assert all(s["train.val_interval"] <= s["train.num_epochs"] and s["train.val_interval"] % 2 == 0 for s in samples)
    assert all(s["train.momentum"] > 0.0 for s in samples)


def test_log_scale_rule(space, samples):
    assert space["train.lr"].log and space["train.wd"].log  # lr / wd spanning >= 100x
    assert not space["train.warmup_lr"].log  # an lr name, but only a 50x range
    assert not space["train.momentum"].log
    lrs = np.array([s["train.lr"] for s in samples])
    assert np.median(lrs) == pytest.approx(1e-6, rel=0.2)  # log-uniform median: the geometric mean
    explicit = SearchSpace.from_schema(
        {"properties": {"a": {"type": "number", "minimum": 1.0, "maximum": 10.0, "log_scale": True}}}, parameters=["a"]
    )
    assert explicit["a"].log


def test_from_unit_repairs_any_vector(space):
    rng = np.random.default_rng(1)
    for _ in range(300):
        config = space.from_unit(rng.random(len(space)))
        assert space.validate(config) == config


def test_unit_round_trip(space, samples):
    for config in samples[:200]:
        again = space.from_unit(space.to_unit(config))
        for param in space.params:
            if param.kind == "float":
                assert again[param.name] == pytest.approx(config[param.name], rel=1e-9)
            else:
                assert again[param.name] == config[param.name]


def test_repair_pushes_max_above_min_at_the_ceiling(space):
    config = space.defaults() | {"train.min_scale": 0.9, "train.max_scale": 0.9}
    repaired = space.repair(config)
    assert repaired["train.max_scale"] > repaired["train.min_scale"]


def test_validate_rejects_broken_conditions_and_unknown_keys(space):
    good = space.defaults()
    with pytest.raises(SpecError, match=r"train.batch_size = 12.*\^ 2"):
        space.validate(good | {"train.batch_size": 12})
    with pytest.raises(SpecError, match="outside its search space"):
        space.validate(good | {"train.lr": 1.0})
    with pytest.raises(SpecError, match="Did you mean train.lr"):
        space.validate(good | {"train.lrr": 1e-6})
    assert space.validate(good | {"train.batch_size": 16.0})["train.batch_size"] == 16


def test_custom_ranges_inside_limits_are_used_and_outside_rejected():
    space = SearchSpace.from_schema(
        SCHEMA, custom_param_ranges={"train.wd": [1e-4, 0.5], "train.lr": {"min": 1e-7, "max": 1e-6}}
    )
    assert (space["train.wd"].low, space["train.wd"].high) == (1e-4, 0.5)  # beyond the search range, inside valid_max
    assert space["train.lr"].high == 1e-6
    with pytest.raises(SpecError, match=r"train.wd.*above the schema's limit 1.0"):
        SearchSpace.from_schema(SCHEMA, custom_param_ranges={"train.wd": [1e-4, 2.0]})
    with pytest.raises(SpecError, match=r"train.lr.*below the schema's limit 1e-07"):
        SearchSpace.from_schema(SCHEMA, custom_param_ranges={"train.lr": [1e-9, 1e-6]})
    with pytest.raises(SpecError, match="not among the searched parameters"):
        SearchSpace.from_schema(SCHEMA, custom_param_ranges={"train.momentum": [0.5, 0.9]})
    with pytest.raises(SpecError, match="does not allow"):
        SearchSpace.from_schema(SCHEMA, parameters=["train.optim"], custom_param_ranges={"train.optim": ["rmsprop"]})


def test_unknown_and_disabled_parameters_are_errors():
    with pytest.raises(SpecError, match="Did you mean train.momentum"):
        SearchSpace.from_schema(SCHEMA, parameters=["train.momentun"])
    with pytest.raises(SpecError, match="train.gpus is disabled"):
        SearchSpace.from_schema(SCHEMA, parameters=["train.gpus"])
    with pytest.raises(SpecError, match="train.seed is disabled"):
        SearchSpace.from_schema(SCHEMA, parameters=["train.seed"])


def test_nest_builds_spec_dicts():
    assert SearchSpace.nest({"train.lr": 1e-6, "train.optim": "adamw", "model.vit_dpr": 0.1}) == {
        "train": {"lr": 1e-6, "optim": "adamw"},
        "model": {"vit_dpr": 0.1},
    }


def test_reads_the_skill_dir_written_by_mal_schema(tmp_path):
    from mal.spec.export import write_skill_dir

    write_skill_dir(tmp_path)
    space = SearchSpace.from_skill_dir(tmp_path)
    assert space.names == ["train.lr", "train.wd"]
    assert (space["train.lr"].low, space["train.lr"].high, space["train.lr"].log) == (1e-7, 1e-5, True)
    assert (space["train.wd"].low, space["train.wd"].high) == (1e-5, 1e-2)
    assert not math.isnan(space.defaults()["train.lr"])
    with pytest.raises(SpecError, match="no schemas"):
        SearchSpace.from_skill_dir(tmp_path / "missing")


def test_a_broken_template_in_the_skill_dir_is_one_line_naming_file_and_position(tmp_path):
    from mal.spec.export import write_skill_dir

    write_skill_dir(tmp_path)
    template = tmp_path / "references" / "spec_template_train.yaml"
    template.write_text("train:\n  lr: [1e-6\n")
    with pytest.raises(SpecError) as caught:
        SearchSpace.from_skill_dir(tmp_path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{template} is not valid YAML (line 3, column 1: ") and message.endswith("rewrite it.")


def _leaf_schema(**leaves: dict) -> dict:
    return {"properties": {"train": {"type": "object", "properties": leaves}}}


@pytest.mark.parametrize(
    ("leaves", "custom", "message"),
    [
        ({"lr": {"type": "object"}}, None, "AutoML parameter train.lr in the schema has type 'object', which AutoML "
         "cannot search."),
        ({"lr": {"type": "number"}}, None, "train.lr in the schema has no finite search range (minimum/maximum); give "
         "one in custom_param_ranges."),
        ({"lr": {"type": "number", "minimum": 1.0, "maximum": 0.1}}, None, "train.lr has minimum 1.0 above maximum "
         "0.1; swap them."),
        ({"lr": {"type": "number", "minimum": 0.0, "maximum": 1.0, "log_scale": True}}, None,
         "train.lr is log scaled but its range starts at 0.0; make it positive."),
        ({"lr": {"type": "number", "minimum": 0.0, "maximum": 1.0}}, {"train.lr": [0.5, 0.1]},
         "custom_param_ranges for train.lr has min 0.5 above max 0.1; swap them."),
        ({"lr": {"type": "number", "minimum": 0.0, "maximum": 1.0}}, {"train.lr": "small"},
         "custom_param_ranges for train.lr is 'small'; give [low, high] or {'min': low, 'max': high}."),
        ({"lr": {"type": "string", "enum": ["a", "b"]}}, {"train.lr": "a"},
         "custom_param_ranges for train.lr is 'a'; give a list of its choices."),
        ({"lr": {"type": "string"}}, None, "train.lr in the schema has no enum of choices"),
        ({"lr": {"type": "string", "enum": ["a", "b"], "option_weights": [1, -1]}}, None,
         "train.lr has option_weights [1, -1]; give 2 non-negative weights"),
        ({"lr": {"type": "integer", "minimum": 3, "maximum": 7, "math_cond": "^ 2"}}, None, None),
        ({"lr": {"type": "integer", "minimum": 5, "maximum": 7, "math_cond": "^ 2"}}, None,
         "train.lr has no value in [5, 7] satisfying math_cond '^ 2'; widen the range."),
        ({"lr": {"type": "number", "minimum": 0, "maximum": 1, "math_cond": "~ 3"}}, None,
         "train.lr has math_cond '~ 3', which is not one of"),
        ({"lr": {"type": "number", "minimum": 0, "maximum": 1, "math_cond": "> depends_on"}}, None,
         "train.lr has math_cond '> depends_on' but no depends_on key; add one."),
        ({"lr": {"type": "number", "minimum": 0, "maximum": 1, "depends_on": "train.wd"}}, None,
         "train.lr depends on train.wd, which is not searched; add train.wd to the AutoML parameters."),
    ],
)
def test_a_schema_or_range_automl_cannot_search_is_refused_with_the_fix(leaves, custom, message):
    schema = _leaf_schema(**leaves)
    if message is None:  # the valid neighbour of the next case: 4 is a power of 2 in [3, 7]
        assert SearchSpace.from_schema(schema, parameters=["train.lr"])["train.lr"].low == 3
        return
    with pytest.raises(SpecError) as refused:
        SearchSpace.from_schema(schema, parameters=["train.lr"], custom_param_ranges=custom)
    assert message in str(refused.value) and len(str(refused.value).splitlines()) == 1


def test_a_depends_on_cycle_and_missing_defaults_are_refused():
    cyclic = _leaf_schema(a={"type": "number", "minimum": 0, "maximum": 1, "depends_on": "train.b"},
                          b={"type": "number", "minimum": 0, "maximum": 1, "depends_on": "train.a"})  # fmt: skip
    with pytest.raises(SpecError, match="is part of a depends_on cycle; break the cycle"):
        SearchSpace.from_schema(cyclic, parameters=["train.a", "train.b"])
    with pytest.raises(SpecError, match="No AutoML parameters were given and the schema lists no automl_default"):
        SearchSpace.from_schema(_leaf_schema(a={"type": "number", "minimum": 0, "maximum": 1}))
    space = SearchSpace.from_schema(_leaf_schema(a={"type": "number", "minimum": 0, "maximum": 1},
                                                 b={"type": "string", "enum": ["x", "y"]}),
                                    parameters=["train.a", "train.b"])  # fmt: skip
    with pytest.raises(SpecError, match="the config lacks a value for train.b; give every searched parameter"):
        space.validate({"train.a": 0.5})
    with pytest.raises(SpecError, match=r"the config sets train.b = 'z', outside its search space \['x', 'y'\]"):
        space.validate({"train.a": 0.5, "train.b": "z"})


def test_a_skill_dir_with_a_broken_schema_names_the_file(tmp_path):
    (tmp_path / "schemas").mkdir()
    schema = tmp_path / "schemas" / "train.schema.json"
    schema.write_text('{"properties": {')
    with pytest.raises(SpecError, match=r"train.schema.json is not valid JSON \(.* at line 1\); rewrite it"):
        SearchSpace.from_skill_dir(tmp_path)
