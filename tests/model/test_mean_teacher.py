"""Student/teacher: exact copy at start, exact EMA over parameters and buffers, gradients only to the student."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from mal.model import (
    InstanceHead,
    LossConfig,
    MaskHead,
    MaskNet,
    MeanTeacher,
    ViTArch,
    ViTBackbone,
    mal_losses,
    mil_projection_loss,
)

MINI = ViTArch("mini/16", patch_size=16, embed_dim=32, depth=2, num_heads=2)


def _mini_masknet(crop_size: int = 32, drop_path_rate: float = 0.0) -> MaskNet:
    backbone = ViTBackbone(MINI, crop_size, drop_path_rate=drop_path_rate)
    return MaskNet(
        backbone,
        InstanceHead(32, out_channels=16, hidden_channels=16),
        MaskHead(32, hidden_channels=16, out_channels=16, num_convs=2),
    )


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.register_buffer("running", torch.tensor([2.0]))
        self.register_buffer("count", torch.tensor(3))


def test_teacher_starts_as_an_exact_copy_without_gradients() -> None:
    torch.manual_seed(0)
    pair = MeanTeacher(_mini_masknet(drop_path_rate=0.2))
    student_state, teacher_state = pair.student.state_dict(), pair.teacher.state_dict()
    assert student_state.keys() == teacher_state.keys()
    for key, value in student_state.items():
        assert torch.equal(value, teacher_state[key]), key
        assert value.data_ptr() != teacher_state[key].data_ptr(), key
    assert all(not p.requires_grad for p in pair.teacher.parameters())
    pair.train()
    assert pair.student.training and not pair.teacher.training
    crops = torch.rand(2, 3, 32, 32)
    pair.eval()
    with torch.no_grad():
        torch.testing.assert_close(pair.student(crops), pair.teacher(crops), rtol=0, atol=0)


def test_ema_is_exact_on_a_hand_computed_case_including_buffers() -> None:
    pair = MeanTeacher(_Scaled())
    with torch.no_grad():
        pair.student.weight.copy_(torch.tensor([3.0, 2.0]))
        pair.student.running.fill_(6.0)
        pair.student.count.fill_(7)
    pair.update_teacher(0.75)
    # 0.75 * teacher + 0.25 * student
    torch.testing.assert_close(pair.teacher.weight, torch.tensor([1.5, -1.0]))
    torch.testing.assert_close(pair.teacher.running, torch.tensor([3.0]))
    assert pair.teacher.count.item() == 7  # integer counters are copied, not averaged
    pair.update_teacher(0.5)
    torch.testing.assert_close(pair.teacher.weight, torch.tensor([2.25, 0.5]))
    torch.testing.assert_close(pair.teacher.running, torch.tensor([4.5]))
    pair.update_teacher(1.0)
    torch.testing.assert_close(pair.teacher.weight, torch.tensor([2.25, 0.5]))
    pair.update_teacher(0.0)
    assert torch.equal(pair.teacher.weight, pair.student.weight)


def test_ema_leaves_the_teacher_unchanged_when_student_equals_it() -> None:
    torch.manual_seed(0)
    pair = MeanTeacher(_mini_masknet())
    before = {k: v.clone() for k, v in pair.teacher.state_dict().items()}
    pair.update_teacher(0.996)
    for key, value in pair.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_losses_send_gradients_to_the_student_only() -> None:
    torch.manual_seed(0)
    pair = MeanTeacher(_mini_masknet())
    crops = torch.rand(2, 3, 32, 32)
    box = torch.zeros(2, 1, 32, 32)
    box[:, :, 8:24, 4:28] = 1.0
    with torch.no_grad():
        teacher_logits = pair.teacher(crops)
    cfg = LossConfig(crf_num_iter=5)
    losses = mal_losses(pair.student(crops), teacher_logits, crops, box, step=10_000, cfg=cfg)
    losses["loss"].backward()
    assert all(p.grad is not None for p in pair.student.parameters())
    assert any(p.grad.abs().sum() > 0 for p in pair.student.parameters())
    assert all(p.grad is None for p in pair.teacher.parameters())


def test_a_few_steps_of_mil_loss_reduce_it_on_one_crop() -> None:
    torch.manual_seed(0)
    net = _mini_masknet()
    crop = torch.rand(1, 3, 32, 32)
    box = torch.zeros(1, 1, 32, 32)
    box[:, :, 8:20, 12:28] = 1.0
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    history = []
    for _ in range(20):
        loss = mil_projection_loss(torch.sigmoid(net(crop)), box).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]
    assert all(later < earlier for earlier, later in itertools.pairwise(history))
