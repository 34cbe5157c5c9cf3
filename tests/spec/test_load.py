"""Spec loading: YAML + overrides, and every error path naming the key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal.errors import SpecError
from mal.spec import ExperimentSpec, load_spec
from mal.spec.load import parse_override, suggest_key


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_tao():
    spec = ExperimentSpec()
    assert spec.dataset.crop_size == 512
    assert spec.dataset.min_obj_size == 2048
    assert spec.train.lr == 1e-6
    assert spec.train.wd == 5e-4
    assert spec.train.margin_rate == [0.0, 1.2]
    assert spec.train.test_margin_rate == [0.6, 0.6]
    assert spec.model.arch == "vit-mae-base/16"
    assert spec.model.teacher_momentum == 0.996
    assert spec.train.loss_mil_weight == 4 and spec.train.loss_crf_weight == 0.5


def test_yaml_then_overrides_of_nested_keys_and_lists(tmp_path):
    path = write(tmp_path, "model:\n  arch: vit-tiny/16\ntrain:\n  lr: 1e-5\n  mask_thres: [0.2]\n")
    spec = load_spec(path, ["train.lr=3e-6", "train.mask_thres=[0.1, 0.2, 0.3]", "dataset.crop_size=128",
                            "train.gpu_ids=[0,1]", "wandb.tags=[a, b]", "inference.gallery=true"])
    assert spec.model.arch == "vit-tiny/16"
    assert spec.train.lr == pytest.approx(3e-6)
    assert spec.train.mask_thres == [0.1, 0.2, 0.3]
    assert spec.dataset.crop_size == 128
    assert spec.train.gpu_ids == [0, 1]
    assert spec.wandb.tags == ["a", "b"]
    assert spec.inference.gallery is True


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    spec = load_spec(write(tmp_path, "train:\n  lr: 1e-5\n"))
    assert spec.train.lr == pytest.approx(1e-5)


def test_override_on_empty_section(tmp_path):
    spec = load_spec(write(tmp_path, "train:\n"), ["train.num_epochs=3"])
    assert spec.train.num_epochs == 3


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.crop_size=256", "did you mean dataset.crop_size?"),
        ("train.lrr=1", "did you mean train.lr?"),
        ("dataset.train_ann=x", "did you mean dataset.train_ann_path?"),
    ],
)
def test_unknown_override_names_nearest_key(override, expected):
    with pytest.raises(SpecError, match=expected.replace("?", r"\?")):
        load_spec(None, [override])


def test_unknown_key_in_file_names_file_and_nearest_key(tmp_path):
    path = write(tmp_path, "model:\n  crop_size: 256\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert "model.crop_size" in str(info.value) and "dataset.crop_size" in str(info.value)


def test_unknown_section(tmp_path):
    with pytest.raises(SpecError, match="unknown key trian.lr; did you mean train.lr"):
        load_spec(write(tmp_path, "trian:\n  lr: 1\n"))


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("train.lr=-1", ["train.lr", "-1", "greater than 0"]),
        ("train.lr=abc", ["train.lr", "'abc'", "valid number"]),
        ("dataset.crop_size=16", ["dataset.crop_size", "16", "greater than or equal to 32"]),
        ("model.arch=vit-giant/8", ["model.arch", "vit-giant/8", "vit-tiny/16"]),
        ("train.mask_thres=[0.1, 0.2]", ["train.mask_thres", "three"]),
        ("train.margin_rate=[1.0, 0.5]", ["train.margin_rate", "low <= high"]),
        ("train.crf_kernel_size=4", ["train.crf_kernel_size", "odd"]),
        ("train.crf_value_low_thres=0.95", ["crf_value_low_thres", "below"]),
        ("dataset.max_obj_size=10", ["max_obj_size", "larger than dataset.min_obj_size"]),
        ("train.num_epochs=2.5", ["train.num_epochs", "2.5"]),
        ("train.use_amp=maybe", ["train.use_amp", "maybe"]),
    ],
)
def test_type_and_bound_errors_name_key_value_and_range(override, fragments):
    with pytest.raises(SpecError) as info:
        load_spec(None, [override])
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


def test_override_without_equals():
    with pytest.raises(SpecError, match="key.path=value"):
        parse_override("train.lr")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", None),
        ("- a\n- b\n", "mapping"),
        ("train: [\n", "not valid YAML"),
        ("train: !!python/object/apply:os.system ['echo hacked']\n", "unsupported YAML tag"),
        ("train: 5\n", "train must be a mapping"),
    ],
)
def test_bad_spec_files(tmp_path, text, fragment):
    path = write(tmp_path, text)
    if fragment is None:
        assert load_spec(path) == ExperimentSpec()
        return
    with pytest.raises(SpecError, match=fragment):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_suggest_key_spelling():
    assert suggest_key("train.warmup_epoch") == "train.warmup_epochs"
    assert suggest_key("zzzz.qqqq") is None
