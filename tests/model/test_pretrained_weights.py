"""Pretrained backbone loading: MAE / timm / safetensors files written here, pos-embed resizing, every error path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from mal.errors import CheckpointError
from mal.model import ViTArch, ViTBackbone, build_backbone, build_masknet, map_backbone_state_dict
from mal.weights import load_pretrained_backbone


class NotAWeight:
    """A custom class: pickling it needs code, which weights_only loading must refuse."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _vit_state(backbone: ViTBackbone) -> dict[str, torch.Tensor]:
    """The backbone's weights under plain timm/MAE names (no `vit.` prefix)."""
    return {key: value.clone() for key, value in backbone.vit.state_dict().items()}


def _expected_pos_embed(source: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Class slot kept, the grid resized bicubically (independent of the code under test)."""
    channels = source.shape[-1]
    grid = source[:, 1:].reshape(1, old, old, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([source[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, channels)], dim=1)


def _assert_blocks_equal(backbone: ViTBackbone, source: dict[str, torch.Tensor]) -> None:
    for key, value in backbone.vit.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(value, source[key]), key


def test_mae_checkpoint_loads_with_pos_embed_resized_to_the_crop_grid(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _vit_state(build_backbone("vit-tiny/16", 64))  # 4x4 grid
    checkpoint = {
        "model": {
            **source,
            "mask_token": torch.zeros(1, 1, 192),
            "decoder_embed.weight": torch.zeros(128, 192),
            "decoder_pos_embed": torch.zeros(1, 17, 128),
        },
        "epoch": 799,
    }
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save(checkpoint, path)
    target = build_backbone("vit-tiny/16", 96)  # 6x6 grid
    report = load_pretrained_backbone(target, path)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.skipped) == ["decoder_embed.weight", "decoder_pos_embed", "mask_token"]
    assert len(report.loaded) == len(source)
    assert any("4x4 to a 6x6" in note for note in report.notes)
    _assert_blocks_equal(target, source)
    torch.testing.assert_close(target.vit.pos_embed.data, _expected_pos_embed(source["pos_embed"], 4, 6))
    assert torch.equal(target.vit.pos_embed[:, 0], source["pos_embed"][:, 0])


def test_same_grid_load_reproduces_the_source_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source_model = build_backbone("vit-tiny/16", 64).eval()
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.backbone.{k}": v for k, v in _vit_state(source_model).items()}}, path)
    target = build_backbone("vit-tiny/16", 64).eval()
    report = load_pretrained_backbone(target, path)
    assert report.missing == [] and report.notes == []
    crops = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(crops), source_model(crops), rtol=0, atol=0)


def test_timm_state_dict_in_safetensors_with_a_head_and_another_grid(tmp_path: Path) -> None:
    torch.manual_seed(0)
    timm_model = VisionTransformer(img_size=32, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=10)
    source = {key: value.contiguous() for key, value in timm_model.state_dict().items()}
    path = tmp_path / "vit_tiny_timm.safetensors"
    save_file(source, str(path))
    target = build_backbone("vit-tiny/16", 64)
    report = load_pretrained_backbone(target, path)
    assert sorted(report.skipped) == ["head.bias", "head.weight"]
    assert report.missing == [] and report.unexpected == []
    _assert_blocks_equal(target, source)
    torch.testing.assert_close(target.vit.pos_embed.data, _expected_pos_embed(source["pos_embed"], 2, 4))


@pytest.mark.parametrize("prefix", ["backbone.", "module.", "encoder.", "module.backbone."])
def test_prefixed_state_dicts_map_onto_the_backbone(prefix: str) -> None:
    torch.manual_seed(0)
    source = _vit_state(build_backbone("vit-tiny/16", 32))
    target = build_backbone("vit-tiny/16", 32)
    mapped, report = map_backbone_state_dict({f"{prefix}{k}": v for k, v in source.items()}, target)
    assert report.missing == [] and report.unexpected == []
    assert mapped.keys() == target.state_dict().keys()
    assert torch.equal(mapped["vit.blocks.3.attn.qkv.weight"], source["blocks.3.attn.qkv.weight"])


def test_a_whole_masknet_state_dict_loads_its_backbone_and_reports_the_heads() -> None:
    torch.manual_seed(0)
    net = build_masknet("vit-tiny/16", 32, mask_head_hidden_channel=8, mask_head_out_channel=8)
    target = build_backbone("vit-tiny/16", 32)
    state = {f"student.{k}": v for k, v in net.state_dict().items()}
    mapped, report = map_backbone_state_dict(state, target)
    assert report.missing == []
    assert report.unexpected and all(".instance_head." in k or ".mask_head." in k for k in report.unexpected)
    assert torch.equal(mapped["vit.norm.weight"], net.backbone.vit.norm.weight)


def test_patch_kernels_are_resampled_when_only_the_patch_size_differs() -> None:
    torch.manual_seed(0)
    source = _vit_state(ViTBackbone(ViTArch("mini/16", 16, 32, 1, 2), 32))
    target = ViTBackbone(ViTArch("mini/8", 8, 32, 1, 2), 32)
    mapped, report = map_backbone_state_dict(source, target)
    assert mapped["vit.patch_embed.proj.weight"].shape == (32, 3, 8, 8)
    assert report.missing == [] and report.mismatched == []
    assert any("16px to 8px" in note for note in report.notes)


def test_pos_embed_without_a_class_slot_gets_a_zero_slot() -> None:
    torch.manual_seed(0)
    source = _vit_state(build_backbone("vit-tiny/16", 32))
    source["pos_embed"] = source["pos_embed"][:, 1:]  # timm no_embed_class layout: 2x2 grid only
    target = build_backbone("vit-tiny/16", 32)
    mapped, report = map_backbone_state_dict(source, target)
    assert torch.equal(mapped["vit.pos_embed"][:, 0], torch.zeros(1, 192))
    assert torch.equal(mapped["vit.pos_embed"][:, 1:], source["pos_embed"])
    assert any("class-token slot" in note for note in report.notes)


def _assert_one_sentence_naming(error: pytest.ExceptionInfo[CheckpointError], path: Path) -> None:
    message = str(error.value)
    assert str(path) in message and "\n" not in message and message.endswith(".")


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match="does not exist") as error:
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), path)
    _assert_one_sentence_naming(error, path)


def test_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pth"
    torch.save(_vit_state(build_backbone("vit-tiny/16", 32)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable or truncated") as error:
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), path)
    _assert_one_sentence_naming(error, path)


def test_pickle_needing_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "with_code.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 192)}, "extra": NotAWeight()}, path)
    with pytest.raises(CheckpointError, match="need code to load") as error:
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), path)
    _assert_one_sentence_naming(error, path)


def test_wrong_architecture_names_the_arch_and_width(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save({"model": _vit_state(build_backbone("vit-small/16", 32))}, path)
    with pytest.raises(CheckpointError, match=r"vit-tiny/16 backbone \(embedding width 192\)") as error:
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), path)
    _assert_one_sentence_naming(error, path)


def test_file_without_a_state_dict_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="does not contain a state dict") as error:
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), path)
    _assert_one_sentence_naming(error, path)


def test_corrupt_safetensors_and_unknown_suffix_are_checkpoint_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as error:
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), corrupt)
    _assert_one_sentence_naming(error, corrupt)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unsupported extension .bin"):
        load_pretrained_backbone(build_backbone("vit-tiny/16", 32), other)
