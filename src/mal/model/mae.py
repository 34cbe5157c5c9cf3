"""Masked-autoencoder pretraining of the ViT backbone (He et al., 2022), in pure torch.

The encoder is the `ViTBackbone`'s own timm `VisionTransformer`, so the weights it learns carry timm/MAE key names
and load into `mal train` through `train.pretrained_model_path` unchanged. A random `mask_ratio` of the patches is
hidden; the encoder sees only the visible ones, a light decoder (a few transformer blocks on a narrower width)
fills in mask tokens and predicts every patch's pixels; the loss is the mean squared error on the hidden patches,
each patch normalised by its own mean and variance (`norm_pix_loss`, MAE's better-performing target).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mal.model.backbone import ViTBackbone


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid * grid) x dim, for the decoder (as in MAE)."""
    if dim % 4:
        raise ValueError(f"decoder width {dim} must be a multiple of 4 for a 2-D sine-cosine embedding")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for axis in (cols, rows):
        angles = axis.reshape(-1, 1) * frequencies.reshape(1, -1)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class MaskedAutoencoder(nn.Module):
    """A ViTBackbone's encoder plus an MAE decoder: crops B x 3 x S x S in [0, 1] -> (loss, pred, mask).

    `pred` holds B x N x (p * p * 3) patch predictions and `mask` B x N (1 = hidden, the patches the loss scores).
    """

    def __init__(
        self,
        backbone: ViTBackbone,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio {mask_ratio} must be in [0, 1)")
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder width {decoder_dim} must be divisible by its {decoder_heads} heads")
        self.backbone = backbone
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        patch, grid, width = backbone.patch_size, backbone.grid_size, backbone.out_channels
        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(decoder_dim, grid).unsqueeze(0), persistent=False)
        self.decoder_blocks = nn.Sequential(
            *(Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth))
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch * patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------------------------------------ helpers
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S -> B x N x (p * p * 3), patches in the encoder's row-major token order."""
        batch, channels = images.shape[:2]
        patch, grid = self.backbone.patch_size, self.backbone.grid_size
        x = images.reshape(batch, channels, grid, patch, grid, patch)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid * grid, patch * patch * channels)

    def random_masking(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random (1 - mask_ratio) of each sample's tokens: (kept tokens, mask B x N, restore order)."""
        batch, count, width = tokens.shape
        keep = max(1, round(count * (1.0 - self.mask_ratio)))
        shuffle = torch.rand(batch, count, device=tokens.device).argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        kept = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, width))
        mask = torch.ones(batch, count, device=tokens.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, restore), restore

    # ------------------------------------------------------------------------------------------------ passes
    def encode(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        vit = self.backbone.vit
        x = (crops - self.backbone.pixel_mean.to(crops.dtype)) / self.backbone.pixel_std.to(crops.dtype)
        tokens = vit.patch_embed(x) + vit.pos_embed[:, vit.num_prefix_tokens :]
        kept, mask, restore = self.random_masking(tokens)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(kept.shape[0], -1, -1)
        latent = vit.norm(vit.blocks(vit.norm_pre(torch.cat([cls, kept], dim=1))))
        return latent, mask, restore

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        batch, count = restore.shape
        visible = x[:, 1:]
        filler = self.mask_token.expand(batch, count - visible.shape[1], -1)
        tokens = torch.cat([visible, filler], dim=1)
        tokens = torch.gather(tokens, 1, restore[:, :, None].expand(-1, -1, tokens.shape[-1]))
        x = torch.cat([x[:, :1], tokens + self.decoder_pos_embed], dim=1)
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))[:, 1:]

    def reconstruction_loss(self, crops: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = self.patchify(crops)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = (pred - target).square().mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, restore = self.encode(crops)
        pred = self.decode(latent, restore)
        return self.reconstruction_loss(crops, pred, mask), pred, mask

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under timm/MAE key names (what `train.pretrained_model_path` reads)."""
        return {key: value.detach().clone() for key, value in self.backbone.vit.state_dict().items()}
