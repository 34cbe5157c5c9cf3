"""Pretrained weights and crop size are checked before training: a missing file, weights of another arch and a crop
size off the patch grid are found by `mal train --print-spec` and `mal dataset check` (exit 2, one line, nothing
written); a timm model name is read from the local Hugging Face cache, never downloaded."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

import mal.cli
from mal.errors import CheckpointError
from mal.model import ViTArch, ViTBackbone, build_backbone
from mal.weights import check_pretrained, find_in_hf_cache, hf_hub_cache, load_pretrained_backbone, resolve_pretrained
from support.specs import write_tiny_spec

TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k"
REPO_FOLDER = f"models--timm--{TIMM_NAME}"


@pytest.fixture(scope="module")
def data(synthetic_coco: Callable[..., Path]) -> Path:
    return synthetic_coco(num_images=4, seed=3)


@pytest.fixture
def spec(data: Path, tmp_path: Path) -> Path:
    return write_tiny_spec(tmp_path / "spec.yaml", data / "annotations.json", data / "images", tmp_path / "results")


def _vit_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {key: value.clone() for key, value in build_backbone(arch, 32).vit.state_dict().items()}


def _timm_state() -> dict[str, torch.Tensor]:
    """What timm's hub file for a ViT-Tiny holds: the ViT at 224 px with its classifier head."""
    torch.manual_seed(1)
    model = VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=10)
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def write_hf_cache(hub: Path, state: dict[str, torch.Tensor]) -> Path:
    """The file as huggingface_hub stores it: the bytes in blobs/<sha256>, a snapshot link named model.safetensors,
    refs/main holding the snapshot's commit."""
    repo = hub / REPO_FOLDER
    (repo / "blobs").mkdir(parents=True)
    staging = hub / "staging.safetensors"
    save_file(state, str(staging))
    blob = repo / "blobs" / hashlib.sha256(staging.read_bytes()).hexdigest()
    staging.rename(blob)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot / "model.safetensors"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = mal.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def assert_found_before_training(capsys, spec: Path, overrides: list[str], *words: str) -> None:
    """--print-spec and `mal dataset check`: exit 2, one stderr line naming the culprit, nothing printed or written."""
    for argv in (["train", "-e", str(spec), *overrides, "--print-spec"],
                 ["dataset", "check", "-e", str(spec), *overrides]):
        code, out, err = cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert len(err) == 1 and "error:" in err[0] and "internal error" not in err[0], err
        for word in words:
            assert word in err[0], (word, err[0])
        assert out == "", out  # no half-printed spec, no dataset tables before the error
    assert not (spec.parent / "results").exists()


def test_missing_weights_file(capsys, spec, tmp_path):
    missing = tmp_path / "mae_pretrain_vit_base.pth"
    assert_found_before_training(capsys, spec, [f"train.pretrained_model_path={missing}"],
                                 str(missing), "does not exist", "remove it to train from random weights")


def test_weights_of_another_arch_name_the_arch_that_fits(capsys, spec, tmp_path):
    small = tmp_path / "small.pth"
    torch.save({"model": _vit_state("vit-small/16")}, small)
    assert_found_before_training(capsys, spec, [f"train.pretrained_model_path={small}"],
                                 str(small), "vit-tiny/16", "embedding width 384", "set model.arch=vit-small/16")
    # The same file with the arch it fits passes both checks.
    code, _, err = cli(capsys, "train", "-e", str(spec), f"train.pretrained_model_path={small}",
                       "model.arch=vit-small/16", "--print-spec")
    assert code == 0, err
    code, _, err = cli(capsys, "dataset", "check", "-e", str(spec), f"train.pretrained_model_path={small}",
                       "model.arch=vit-small/16")
    assert code == 0, err


def test_weights_with_fewer_blocks_do_not_fit(tmp_path):
    """Same width, 6 blocks instead of 12: every tensor has a place, but half the backbone would stay random."""
    shallow = {key: value for key, value in _vit_state("vit-tiny/16").items()
               if not key.startswith("blocks.") or int(key.split(".")[1]) < 6}
    path = tmp_path / "six_blocks.safetensors"
    save_file({key: value.contiguous() for key, value in shallow.items()}, str(path))
    with pytest.raises(CheckpointError, match="embedding width 192 and 6 blocks") as error:
        check_pretrained(path, "vit-tiny/16", 32)
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="6 blocks"):
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), path)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["dataset.crop_size=72"], ["dataset.crop_size = 72", "multiple of 16", "vit-tiny/16", "use 64 or 80"]),
        (["model.arch=vit-mae-huge/14", "dataset.crop_size=64"], ["multiple of 14", "use 56 or 70"]),
        (["dataset.crop_size=16"], ["dataset.crop_size", "greater than or equal to 32"]),
    ],
)
def test_crop_size_off_the_patch_grid(capsys, spec, overrides, words):
    assert_found_before_training(capsys, spec, overrides, *words)


@pytest.mark.parametrize(
    ("value", "words"),
    [("https://example.com/w.pth", ["URL", "download the file"]), ("weights/model.bin", [".bin", "timm model name"])],
)
def test_values_that_cannot_be_weights_fail_when_the_spec_is_read(capsys, spec, value, words):
    assert_found_before_training(capsys, spec, [f"train.pretrained_model_path={value}"],
                                 "train.pretrained_model_path", *words)


def test_hf_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hf_hub_cache() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_hub_cache() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_hub_cache() == tmp_path / "hub"


def test_timm_name_is_read_from_the_local_cache(capsys, spec, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    state = _timm_state()
    cached = write_hf_cache(tmp_path / "hf" / "hub", state)
    assert resolve_pretrained(TIMM_NAME) == cached
    assert resolve_pretrained(f"timm/{TIMM_NAME}") == cached
    # What mal train does with the name: the backbone gets the cached tensors (the head is skipped).
    backbone = build_backbone("vit-tiny/16", 32)
    report = load_pretrained_backbone(backbone, TIMM_NAME)
    assert report.missing == [] and report.mismatched == [] and sorted(report.skipped) == ["head.bias", "head.weight"]
    assert torch.equal(backbone.vit.blocks[11].mlp.fc2.weight, state["blocks.11.mlp.fc2.weight"])
    code, _, err = cli(capsys, "train", "-e", str(spec), f"train.pretrained_model_path={TIMM_NAME}", "--print-spec")
    assert code == 0, err
    code, _, err = cli(capsys, "dataset", "check", "-e", str(spec), f"train.pretrained_model_path={TIMM_NAME}")
    assert code == 0, err


def test_a_snapshot_without_refs_is_still_found(tmp_path):
    cached = write_hf_cache(tmp_path / "hub", _timm_state())
    (tmp_path / "hub" / REPO_FOLDER / "refs" / "main").unlink()
    assert find_in_hf_cache(f"timm/{TIMM_NAME}", "model.safetensors", tmp_path / "hub") == cached


def test_timm_name_not_in_the_cache_is_one_line_and_nothing_is_downloaded(capsys, spec, monkeypatch, tmp_path):
    hf_home = tmp_path / "empty_hf"
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even where downloads are allowed, mal does not start one

    def no_network(*args, **kwargs):
        raise AssertionError("mal tried to open a network connection")

    monkeypatch.setattr("socket.socket.connect", no_network)
    assert_found_before_training(
        capsys, spec, [f"train.pretrained_model_path={TIMM_NAME}"],
        TIMM_NAME, str(hf_home / "hub"), "nothing is downloaded", REPO_FOLDER,
        f"timm.create_model('{TIMM_NAME}', pretrained=True)",
    )
    assert not hf_home.exists()


def test_timm_name_of_another_arch_is_found_before_the_cache_is_searched(capsys, spec):
    assert_found_before_training(capsys, spec, ["train.pretrained_model_path=vit_base_patch16_224.mae"],
                                 "vit_base_patch16_224.mae", "model.arch = vit-mae-base/16", "not vit-tiny/16")


@pytest.mark.parametrize(
    ("value", "words"),
    [("vit_nonexistent_model", ["neither an existing file nor a timm model name"]),
     ("vit_tiny_patch16_224.no_such_tag", ["no_such_tag", "timm.list_pretrained"])],
)
def test_a_name_timm_does_not_know(capsys, spec, value, words):
    assert_found_before_training(capsys, spec, [f"train.pretrained_model_path={value}"], value, *words)


def test_meta_device_check_matches_a_real_load(tmp_path):
    """check_pretrained compares shapes on a meta-device backbone; a real backbone accepts what it accepts."""
    path = tmp_path / "mini.pth"
    torch.save(_vit_state("vit-tiny/16"), path)
    assert check_pretrained(path, "vit-tiny/16", 96) == path
    target = ViTBackbone(ViTArch("vit-tiny/16", 16, 192, 12, 3), 96)
    assert load_pretrained_backbone(target, path).mismatched == []
