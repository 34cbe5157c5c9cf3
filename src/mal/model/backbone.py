"""The ViT image encoder: [0, 1] crops in, a stride-p feature map out.

Built on timm's `VisionTransformer` (never downloads anything); pretrained MAE weights are mapped onto it by
`mal.model.pretrained` and read from disk by `mal.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.vision_transformer import VisionTransformer
from torch import nn


@dataclass(frozen=True)
class ViTArch:
    """The shape of one ViT variant (MAE layout: qkv bias, MLP ratio 4, LayerNorm eps 1e-6)."""

    name: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int


ARCHS: dict[str, ViTArch] = {
    arch.name: arch
    for arch in (
        ViTArch("vit-tiny/16", patch_size=16, embed_dim=192, depth=12, num_heads=3),
        ViTArch("vit-small/16", patch_size=16, embed_dim=384, depth=12, num_heads=6),
        ViTArch("vit-mae-base/16", patch_size=16, embed_dim=768, depth=12, num_heads=12),
        ViTArch("vit-mae-large/16", patch_size=16, embed_dim=1024, depth=24, num_heads=16),
        ViTArch("vit-mae-huge/14", patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    )
}


class ViTBackbone(nn.Module):
    """A ViT that maps B x 3 x S x S crops in [0, 1] to a B x C x S/p x S/p feature map.

    ImageNet normalisation lives inside the module (non-persistent buffers) so an exported ONNX graph takes raw
    [0, 1] crops and checkpoints carry only learned weights.
    """

    def __init__(self, arch: ViTArch, crop_size: int, drop_path_rate: float = 0.0, frozen_stages: int = -1,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        if crop_size <= 0 or crop_size % arch.patch_size != 0:
            raise ValueError(
                f"crop size {crop_size} must be a positive multiple of the patch size {arch.patch_size} of {arch.name}"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate {drop_path_rate} must be in [0, 1)")
        if not -1 <= frozen_stages <= arch.depth:
            raise ValueError(
                f"frozen_stages {frozen_stages} must be between -1 and the depth {arch.depth} of {arch.name}"
            )
        self.arch = arch
        self.crop_size = crop_size
        self.patch_size = arch.patch_size
        self.grid_size = crop_size // arch.patch_size
        self.out_channels = arch.embed_dim
        self.frozen_stages = frozen_stages
        self.grad_checkpointing = grad_checkpointing
        self.vit = VisionTransformer(
            img_size=crop_size,
            patch_size=arch.patch_size,
            embed_dim=arch.embed_dim,
            depth=arch.depth,
            num_heads=arch.num_heads,
            num_classes=0,
            global_pool="",
            drop_path_rate=drop_path_rate,
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()
        self.vit.set_grad_checkpointing(grad_checkpointing)  # a new module is in training mode

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.vit.patch_embed, *self.vit.blocks[: self.frozen_stages]]

    def _freeze(self) -> None:
        if self.frozen_stages < 0:
            return
        # Stage 0 is the tokeniser: patch projection plus the token/position embeddings added to its output.
        self.vit.cls_token.requires_grad_(False)
        self.vit.pos_embed.requires_grad_(False)
        for module in self._frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> ViTBackbone:
        super().train(mode)
        # Recomputing activations only pays while training; labeling and the ONNX trace run the plain blocks.
        self.vit.set_grad_checkpointing(self.grad_checkpointing and mode)
        # Frozen stages behave as at inference (no drop-path, no dropout) even while the rest trains.
        for module in self._frozen_modules():
            module.eval()
        return self

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (crops - self.pixel_mean.to(crops.dtype)) / self.pixel_std.to(crops.dtype)
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]
        batch, _, channels = tokens.shape
        return tokens.transpose(1, 2).reshape(batch, channels, self.grid_size, self.grid_size)


def build_backbone(arch: str, crop_size: int, drop_path_rate: float = 0.0, frozen_stages: int = -1,
                   grad_checkpointing: bool = False) -> ViTBackbone:
    """Build the named ViT with position embeddings sized for `crop_size` crops (random init, no download)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone arch {arch!r}; valid names are: {', '.join(ARCHS)}")
    return ViTBackbone(ARCHS[arch], crop_size, drop_path_rate=drop_path_rate, frozen_stages=frozen_stages,
                       grad_checkpointing=grad_checkpointing)
