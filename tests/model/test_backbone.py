"""The ViT backbone and the MaskNet built on it: shapes, arch table, normalisation, frozen stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mal.model import ARCHS, InstanceHead, MaskHead, MaskNet, ViTArch, ViTBackbone, build_backbone, build_masknet

MINI_16 = ViTArch("mini/16", patch_size=16, embed_dim=32, depth=3, num_heads=2)
MINI_14 = ViTArch("mini/14", patch_size=14, embed_dim=32, depth=1, num_heads=2)


def _small_masknet(backbone: ViTBackbone) -> MaskNet:
    return MaskNet(
        backbone,
        InstanceHead(backbone.out_channels, out_channels=16, hidden_channels=16),
        MaskHead(backbone.out_channels, hidden_channels=16, out_channels=16, num_convs=2),
    )


@pytest.mark.parametrize("arch", ["vit-tiny/16", "vit-small/16"])
@pytest.mark.parametrize("crop_size", [64, 96, 128])
def test_masknet_output_is_crop_over_four(arch: str, crop_size: int) -> None:
    torch.manual_seed(0)
    net = build_masknet(arch, crop_size, mask_head_hidden_channel=32, mask_head_out_channel=32).eval()
    crops = torch.rand(2, 3, crop_size, crop_size)
    with torch.no_grad():
        features = net.backbone(crops)
        logits = net(crops)
    assert features.shape == (2, ARCHS[arch].embed_dim, crop_size // 16, crop_size // 16)
    assert net.backbone.out_channels == ARCHS[arch].embed_dim
    assert logits.shape == (2, 1, crop_size // 4, crop_size // 4)
    assert torch.isfinite(logits).all()


def test_default_masknet_heads_have_tao_widths() -> None:
    net = build_masknet("vit-tiny/16", 64)
    assert net.instance_head.out_channels == 256 and net.mask_head.out_channels == 256
    assert len(net.mask_head.convs) == 3  # 4 convs: three hidden plus the last one
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("crop_size", [112, 98])
def test_patch_14_is_interpolated_to_crop_over_four(crop_size: int) -> None:
    torch.manual_seed(0)
    net = _small_masknet(ViTBackbone(MINI_14, crop_size)).eval()
    crops = torch.rand(1, 3, crop_size, crop_size)
    assert net.backbone(crops).shape == (1, 32, crop_size // 14, crop_size // 14)
    assert net(crops).shape == (1, 1, crop_size // 4, crop_size // 4)


def test_arch_table_matches_the_published_variants() -> None:
    shapes = {name: (a.embed_dim, a.depth, a.num_heads, a.patch_size) for name, a in ARCHS.items()}
    assert shapes == {
        "vit-tiny/16": (192, 12, 3, 16),
        "vit-small/16": (384, 12, 6, 16),
        "vit-mae-base/16": (768, 12, 12, 16),
        "vit-mae-large/16": (1024, 24, 16, 16),
        "vit-mae-huge/14": (1280, 32, 16, 14),
    }


def test_huge_builds_with_its_real_shapes_on_the_meta_device() -> None:
    with torch.device("meta"):
        backbone = build_backbone("vit-mae-huge/14", 224)
    assert backbone.out_channels == 1280 and len(backbone.vit.blocks) == 32
    assert backbone.vit.pos_embed.shape == (1, 1 + 16 * 16, 1280)
    assert backbone.vit.patch_embed.proj.weight.shape == (1280, 3, 14, 14)
    assert 600e6 < sum(p.numel() for p in backbone.parameters()) < 660e6


def test_crop_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        build_backbone("vit-tiny/16", 100)
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        build_backbone("vit-mae-huge/14", 128)


def test_unknown_arch_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="vit-tiny/16.*vit-mae-huge/14") as info:
        build_backbone("vit-base/16", 64)
    assert "'vit-base/16'" in str(info.value)


def test_backbone_normalises_raw_crops_with_imagenet_statistics() -> None:
    torch.manual_seed(0)
    backbone = ViTBackbone(MINI_16, 32).eval()
    crops = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = backbone.vit.forward_features((crops - mean) / std)[:, 1:]
        expected = tokens.transpose(1, 2).reshape(2, 32, 2, 2)
        torch.testing.assert_close(backbone(crops), expected)
    assert "pixel_mean" not in backbone.state_dict()  # constants, not weights


@pytest.mark.parametrize("frozen_stages", [0, 2])
def test_frozen_stages_get_no_gradient_and_stay_in_eval_mode(frozen_stages: int) -> None:
    torch.manual_seed(0)
    backbone = ViTBackbone(MINI_16, 32, drop_path_rate=0.5, frozen_stages=frozen_stages).train()
    backbone(torch.rand(2, 3, 32, 32)).square().mean().backward()
    frozen = [backbone.vit.patch_embed, *backbone.vit.blocks[:frozen_stages]]
    trained = list(backbone.vit.blocks[frozen_stages:])
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    for module in trained:
        assert module.training
        assert all(p.requires_grad and p.grad is not None for p in module.parameters())
    assert backbone.vit.pos_embed.grad is None and backbone.vit.cls_token.grad is None


def test_no_frozen_stages_trains_everything() -> None:
    backbone = ViTBackbone(MINI_16, 32).train()
    backbone(torch.rand(1, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_frozen_stages_beyond_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="frozen_stages 4"):
        ViTBackbone(MINI_16, 32, frozen_stages=4)


def test_masknet_rejects_heads_of_different_width() -> None:
    backbone = ViTBackbone(MINI_16, 32)
    with pytest.raises(ValueError, match="instance head width 8 must equal mask head width 16"):
        MaskNet(backbone, InstanceHead(32, out_channels=8), MaskHead(32, hidden_channels=8, out_channels=16))


def test_masknet_exports_to_onnx_taking_raw_crops(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = _small_masknet(ViTBackbone(MINI_16, 32)).eval()
    path = tmp_path / "masknet.onnx"
    torch.onnx.export(
        net,
        (torch.rand(2, 3, 32, 32),),
        str(path),
        input_names=["crops"],
        output_names=["logits"],
        dynamic_axes={"crops": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    crops = torch.rand(3, 3, 32, 32)
    (logits,) = onnxruntime.InferenceSession(str(path)).run(None, {"crops": crops.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), net(crops), rtol=1e-4, atol=1e-5)
