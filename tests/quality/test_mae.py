"""The masked autoencoder: masking, patch order, loss, and weights that keep timm/MAE key names."""

from __future__ import annotations

import pytest
import torch

from mal.model.backbone import build_backbone
from mal.model.mae import MaskedAutoencoder, sincos_pos_embed


def tiny_mae(mask_ratio: float = 0.75) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(
        build_backbone("vit-tiny/16", 64), mask_ratio=mask_ratio, decoder_dim=32, decoder_depth=1, decoder_heads=2
    )


def test_masking_hides_the_requested_fraction_of_patches_per_sample():
    mae = tiny_mae(0.75)
    loss, pred, mask = mae(torch.rand(3, 3, 64, 64))
    assert pred.shape == (3, 16, 16 * 16 * 3)
    assert mask.shape == (3, 16)
    assert mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_patchify_follows_the_encoder_token_order():
    mae = tiny_mae()
    image = torch.zeros(1, 3, 64, 64)
    image[:, :, 16:32, 48:64] = 1.0  # second patch row, fourth column: token 1 * 4 + 3
    patches = mae.patchify(image)
    assert patches.shape == (1, 16, 768)
    assert torch.nonzero(patches.sum(-1)[0]).flatten().tolist() == [7]


def test_loss_counts_only_hidden_patches():
    mae = tiny_mae()
    crops = torch.rand(2, 3, 64, 64)
    target = mae.patchify(crops)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    mask = torch.zeros(2, 16)
    mask[:, :4] = 1
    pred = target.clone()
    pred[:, 4:] += 5.0  # wrong everywhere the loss must not look
    assert mae.reconstruction_loss(crops, pred, mask).item() == pytest.approx(0.0, abs=1e-6)
    pred[:, :4] += 1.0
    assert mae.reconstruction_loss(crops, pred, mask).item() == pytest.approx(1.0, rel=1e-5)


def test_a_few_steps_lower_the_reconstruction_loss_and_only_the_encoder_is_exported():
    mae = tiny_mae()
    crops = torch.rand(4, 3, 64, 64)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    torch.manual_seed(1)
    first = mae(crops)[0].item()
    for _ in range(25):
        loss = mae(crops)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.manual_seed(1)
    assert mae(crops)[0].item() < 0.9 * first
    weights = mae.encoder_state_dict()
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight"} <= set(
        weights
    )
    assert not any(key.startswith(("decoder", "mask_token")) for key in weights)


def test_sincos_embedding_is_distinct_per_position_and_needs_width_divisible_by_four():
    table = sincos_pos_embed(16, 4)
    assert table.shape == (16, 16)
    assert torch.cdist(table, table).add(torch.eye(16)).min() > 0
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed(18, 4)
