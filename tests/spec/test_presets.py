"""Presets as a product: `mal presets` lists them, `-e` takes a preset's name and may be repeated (later files win,
then overrides), an unknown name is one error listing the presets, and `mal train` on a CPU with TAO's GPU settings
and no weights names the preset that fits, once, and goes on."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

import mal.cli
from mal.dotted import deep_merge
from mal.errors import SpecError
from mal.presets import cpu_preset_hint, find_preset, list_presets
from mal.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
DATA_YAML = "dataset:\n  train_ann_path: data/annotations.json\n  train_img_dir: data/images\ntrain:\n  num_epochs: 3\n"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = mal.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mal_presets_lists_each_preset_with_its_description_and_data(capsys):
    code, out, err = run_cli(capsys, "presets")
    assert code == 0 and err == ""
    presets = list_presets()
    shipped = {"cpu-natural", "cpu-natural-pretrain", "cpu-nuclei", "demo"}
    assert {p.name for p in presets} >= shipped
    for preset in presets:
        # The description is the file's first comment line, the data it fits its `# Fits:` line.
        first = preset.path.read_text().splitlines()[0].lstrip("# ")
        assert preset.description == first and preset.fits, preset.name
        assert f"{preset.name}  " in out and preset.description in out and f"fits: {preset.fits}" in out
    assert "microscopy" in next(p.fits for p in presets if p.name == "cpu-nuclei")
    assert "-e cpu-natural -e my_data.yaml" in out


def test_mal_presets_name_prints_the_file_and_an_unknown_name_is_one_error(capsys):
    code, out, _ = run_cli(capsys, "presets", "cpu_nuclei")
    assert code == 0 and out == (ROOT / "src/mal/presets/cpu_nuclei.yaml").read_text()
    code, out, err = run_cli(capsys, "presets", "cpu-giant")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cpu-giant" in err
    assert "cpu-natural, cpu-natural-pretrain, cpu-nuclei" in err


def test_presets_are_package_data_and_exist_once():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "presets/*.yaml" in config["tool"]["setuptools"]["package-data"]["mal"]
    assert all(p.path.parent == ROOT / "src/mal/presets" for p in list_presets())
    assert not (ROOT / "specs").exists(), "the presets live in src/mal/presets only"


@pytest.mark.parametrize("name", ["cpu-natural", "cpu_natural", "cpu_natural.yaml", "CPU-Natural"])
def test_a_preset_is_found_by_either_spelling(name):
    assert find_preset(name) == ROOT / "src/mal/presets/cpu_natural.yaml"


def test_preset_and_data_file_compose_later_wins_then_overrides(tmp_path):
    """`-e cpu-nuclei -e data.yaml` as a user types it: the merged spec is what --print-spec shows."""
    (tmp_path / "data.yaml").write_text(DATA_YAML)
    result = subprocess.run(
        [sys.executable, "-m", "mal", "train", "-e", "cpu-nuclei", "-e", "data.yaml", "train.lr=2e-6",
         "--print-spec"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert merged["dataset"]["train_ann_path"] == "data/annotations.json"  # from data.yaml
    assert merged["dataset"]["crop_size"] == 64 and merged["dataset"]["min_obj_size"] == 400  # from the preset
    assert merged["model"]["mask_head_hidden_channel"] == 64 and merged["train"]["loss_crf_weight"] == 2.0
    assert merged["train"]["num_epochs"] == 3  # data.yaml, later, wins over the preset's 1
    assert merged["train"]["lr"] == 2e-6  # the override wins over both
    assert merged["inference"]["crf_refine_iter"] == 10


def test_the_order_of_the_files_decides(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("dataset:\n  crop_size: 128\n  train_ann_path: a.json\ntrain:\n  num_epochs: 3\n")
    assert load_spec(["cpu-nuclei", data]).dataset.crop_size == 128
    last = load_spec([data, "cpu-nuclei"])
    assert last.dataset.crop_size == 64 and last.dataset.train_ann_path == "a.json"
    assert last.train.num_epochs == 1


def test_merge_replaces_lists_and_an_empty_section_changes_nothing():
    base = {"train": {"mask_thres": [0.1, 0.2, 0.3], "lr": 1e-5}, "model": {"arch": "vit-tiny/16"}}
    update = {"train": {"mask_thres": [0.4]}, "model": None}
    assert deep_merge(base, update) == {"train": {"mask_thres": [0.4], "lr": 1e-5}, "model": {"arch": "vit-tiny/16"}}
    assert base["train"]["mask_thres"] == [0.1, 0.2, 0.3]  # inputs untouched


def test_unknown_key_names_the_file_that_holds_it(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("train:\n  lrr: 1e-5\n")
    with pytest.raises(SpecError, match=r"mine\.yaml: unknown key train\.lrr"):
        load_spec(["cpu-natural", bad])


def test_unknown_preset_that_is_not_a_file_is_one_error_listing_the_presets(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.yaml").write_text(DATA_YAML)
    code, out, err = run_cli(capsys, "train", "-e", "cpu-natrual", "-e", "data.yaml", "--print-spec")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "cpu-natrual" in lines[0] and "does not exist and is not a shipped preset" in lines[0]
    assert all(preset.name in lines[0] for preset in list_presets())
    assert not (tmp_path / "results").exists()


def test_a_file_of_the_presets_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu-natural").write_text("train:\n  num_epochs: 7\n")
    assert load_spec("cpu-natural").train.num_epochs == 7


# ------------------------------------------------------------------------------------ the CPU preset hint


@pytest.mark.parametrize(
    ("arch", "crop", "gpu", "weights", "expected"),
    [
        ("vit-mae-base/16", 512, False, False, True),  # TAO's defaults on a CPU from random weights
        ("vit-small/16", 224, False, False, True),  # the README's spec on a CPU
        ("vit-mae-base/16", 512, True, False, False),
        ("vit-mae-base/16", 512, False, True, False),
        ("vit-tiny/16", 96, False, False, False),  # a CPU preset's settings
    ],
)
def test_cpu_preset_hint_only_for_gpu_settings_on_a_cpu_without_weights(arch, crop, gpu, weights, expected):
    hint = cpu_preset_hint(arch, crop, has_gpu=gpu, has_weights=weights, spec_args=["spec.yaml"])
    assert (hint is not None) == expected
    if hint:
        assert "-e spec.yaml -e cpu-natural" in hint and "cpu-nuclei" in hint and "\n" not in hint


def _train_without_running(monkeypatch) -> list:
    ran: list = []
    monkeypatch.setattr(mal.cli, "_resolve", lambda target: lambda spec: ran.append(spec) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return ran


def test_mal_train_says_once_which_preset_fits_and_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "data.yaml").write_text(DATA_YAML)
    ran = _train_without_running(monkeypatch)
    code, _, err = run_cli(capsys, "train", "-e", "data.yaml")
    assert code == 0 and len(ran) == 1  # it went on
    hints = [line for line in err.splitlines() if "which" in line or "preset" in line]
    assert len(hints) == 1 and hints[0].startswith("mal train: note: ") and "-e data.yaml -e cpu-natural" in hints[0]
    # With a preset's settings, and in the extra processes of a DDP run, nothing is said.
    code, _, err = run_cli(capsys, "train", "-e", "data.yaml", "-e", "cpu-natural")
    assert code == 0 and err == ""
    monkeypatch.setenv("LOCAL_RANK", "1")
    code, _, err = run_cli(capsys, "train", "-e", "data.yaml")
    assert code == 0 and err == "" and len(ran) == 3
