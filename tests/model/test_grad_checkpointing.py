"""model.grad_checkpointing recomputes the ViT blocks in the backward pass: same gradients, training mode only."""

from __future__ import annotations

import torch

from mal.model.mal import build_masknet


def _gradients(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = build_masknet("vit-tiny/16", 32, mask_head_hidden_channel=16, mask_head_out_channel=16,
                        grad_checkpointing=checkpointing).train()
    crops = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = net(crops)
    out.square().mean().backward()
    return out.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def test_checkpointing_gives_the_same_outputs_and_gradients():
    out_plain, grads_plain = _gradients(False)
    out_ckpt, grads_ckpt = _gradients(True)
    assert torch.allclose(out_plain, out_ckpt)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name, grad in grads_plain.items():
        assert torch.allclose(grad, grads_ckpt[name], atol=1e-6), name


def test_checkpointing_is_on_in_training_only():
    net = build_masknet("vit-tiny/16", 32, grad_checkpointing=True)
    assert net.backbone.vit.grad_checkpointing
    net.eval()
    assert not net.backbone.vit.grad_checkpointing
    net.train()
    assert net.backbone.vit.grad_checkpointing
    assert not build_masknet("vit-tiny/16", 32).train().backbone.vit.grad_checkpointing
