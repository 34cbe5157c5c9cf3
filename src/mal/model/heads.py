"""The two heads on the ViT feature map: one instance vector K per crop and pixel features V."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceHead(nn.Module):
    """Global average pool -> Linear(C, hidden) -> ReLU -> Linear(hidden, out): the crop's instance vector K."""

    def __init__(self, in_channels: int, out_channels: int = 256, hidden_channels: int = 256) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, out_channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """B x C x h x w -> B x out."""
        return self.mlp(features.mean(dim=(2, 3)))


def _conv3x3_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class MaskHead(nn.Module):
    """Pixel features V at four times the backbone's resolution (stride p/4, i.e. crop/4 for p = 16).

    A learned 2x transposed-conv neck takes the stride-p map to stride p/2, then `num_convs` 3x3 convs with
    `hidden_channels` and ReLU, with a `scale_ratio` bilinear up-sampling before the last conv. The last conv
    has no ReLU so pixel features can take either sign, leaving the logit's sign free of K's.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 256,
        out_channels: int = 256,
        num_convs: int = 4,
        scale_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"mask head num_convs {num_convs} must be at least 1")
        if scale_ratio <= 0:
            raise ValueError(f"mask scale ratio {scale_ratio} must be positive")
        self.out_channels = out_channels
        self.scale_ratio = scale_ratio
        self.neck = nn.Sequential(
            nn.ConvTranspose2d(in_channels, hidden_channels, kernel_size=2, stride=2), nn.ReLU(inplace=True)
        )
        self.convs = nn.Sequential(*(_conv3x3_relu(hidden_channels, hidden_channels) for _ in range(num_convs - 1)))
        self.last_conv = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """B x C x h x w -> B x out x floor(2h * scale_ratio) x floor(2w * scale_ratio)."""
        x = self.convs(self.neck(features))
        # scale_factor rather than a computed size keeps the graph traceable for ONNX export.
        x = F.interpolate(x, scale_factor=self.scale_ratio, mode="bilinear", align_corners=False)
        return self.last_conv(x)
