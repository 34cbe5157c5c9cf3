"""MAL losses on hand-made cases."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mal.model import LossConfig, crf_loss, dice_distance, mal_losses, mean_field_refine, mil_projection_loss, ramp


def _box(batch: int, size: int, top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, top:bottom, left:right] = 1.0
    return mask


def test_dice_distance_on_known_tensors() -> None:
    a = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    b = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # identical -> 0; disjoint -> 1; 1 - 2 * 0.5 / (1 + 1) = 0.5
    torch.testing.assert_close(dice_distance(a, b, eps=0.0), torch.tensor([0.0, 1.0, 0.5]))
    assert dice_distance(a.view(3, 1, 2, 2), b.view(3, 1, 2, 2)).shape == (3,)
    # eps keeps two empty masks finite
    assert dice_distance(torch.zeros(1, 4), torch.zeros(1, 4)).item() == pytest.approx(1.0)


def test_mil_loss_is_zero_for_a_mask_that_touches_every_box_side_from_inside() -> None:
    box = _box(1, 32, 8, 4, 24, 28)
    diamond = torch.zeros(1, 1, 32, 32)
    diamond[:, :, 8:24, 15:17] = 1.0  # vertical bar spans all rows of the box
    diamond[:, :, 15:17, 4:28] = 1.0  # horizontal bar spans all its columns
    assert mil_projection_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
    assert mil_projection_loss(diamond, box).item() == pytest.approx(0.0, abs=1e-6)


def test_mil_loss_penalises_leaking_outside_the_box_more_than_staying_inside() -> None:
    box = _box(1, 32, 8, 8, 24, 24)
    inside = 0.9 * box
    leaking = inside.clone()
    leaking[:, :, 8:24, 24:32] = 0.9  # spills to the right of the box
    shrunken = _box(1, 32, 10, 10, 22, 22) * 0.9  # a smaller mask, still inside
    loss_inside, loss_leak, loss_shrunk = (mil_projection_loss(p, box).item() for p in (inside, leaking, shrunken))
    assert loss_inside < loss_leak
    assert loss_inside < loss_shrunk


def test_mil_loss_resizes_the_box_mask_and_is_per_sample() -> None:
    probs = torch.stack([_box(1, 8, 2, 2, 6, 6)[0], torch.zeros(1, 8, 8)])
    box_full = _box(2, 32, 8, 8, 24, 24)  # the same box at 4x the resolution
    loss = mil_projection_loss(probs, box_full)
    assert loss.shape == (2,)
    assert loss[0].item() == pytest.approx(0.0, abs=1e-5)
    assert loss[1].item() == pytest.approx(2.0, abs=1e-4)


def _two_colour_scene(size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A red square on blue, the box around it with a margin, and the object mask."""
    image = torch.zeros(1, 3, size, size)
    image[:, 2] = 1.0
    obj = _box(1, size, 8, 10, 22, 24)
    image[:, 0] = obj[:, 0]
    image[:, 2] = 1.0 - obj[:, 0]
    box = _box(1, size, 5, 6, 26, 28)
    return image, box, obj


def test_mean_field_makes_a_noisy_field_follow_the_colour_edge() -> None:
    torch.manual_seed(0)
    image, box, obj = _two_colour_scene()
    q0 = (0.5 + 0.15 * (2 * obj - 1) + 0.2 * torch.randn_like(obj)).clamp(0.0, 1.0)
    noisy_errors = ((q0 > 0.5) != (obj > 0.5)).sum().item()
    assert noisy_errors > 100  # the start is far from the object mask
    refined = mean_field_refine(image, q0, box, kernel_size=3, zeta=0.1, num_iter=100, low=0.1, high=0.9)
    assert refined.shape == q0.shape
    assert torch.equal(refined > 0.5, obj > 0.5)
    # sharper: the field moved from around 0.5 to the clamp limits on both sides of the edge
    assert refined[obj > 0.5].mean() > 0.85 and refined[obj < 0.5].mean() < 0.15
    assert refined.min() >= 0.1 - 1e-6 and refined.max() <= 0.9 + 1e-6
    assert torch.allclose(refined[box < 0.5], torch.tensor(0.1))  # no foreground outside the box


def test_one_mean_field_step_matches_the_hand_computed_update() -> None:
    # 3x3 crop: the left column differs by 0.1 in red, so its affinity to the centre is exp(-0.01 / 0.02).
    image = torch.zeros(1, 3, 3, 3)
    image[:, 0, :, 0] = 0.1
    q0 = torch.full((1, 1, 3, 3), 0.4)
    q0[:, :, :, 0] = 0.8
    box = torch.ones(1, 1, 3, 3)
    refined = mean_field_refine(image, q0, box, kernel_size=3, zeta=0.1, num_iter=1, low=0.1, high=0.9)
    # q_fg(centre) = prod q_j^k_j / (prod q_j^k_j + prod (1 - q_j)^k_j) over the 8 neighbours
    k_left = torch.exp(torch.tensor(-0.5))
    fg = 0.8 ** (3 * k_left) * 0.4**5
    bg = 0.2 ** (3 * k_left) * 0.6**5
    assert refined[0, 0, 1, 1].item() == pytest.approx((fg / (fg + bg)).item(), rel=1e-5)


def test_mean_field_never_puts_foreground_outside_the_box() -> None:
    image = torch.zeros(1, 3, 16, 16)  # one colour: nothing but the box limits propagation
    q0 = torch.full((1, 1, 16, 16), 0.9)
    box = _box(1, 16, 4, 4, 12, 12)
    refined = mean_field_refine(image, q0, box)
    assert torch.allclose(refined[box < 0.5], torch.tensor(0.1))
    assert refined.min() >= 0.1 - 1e-6 and refined.max() <= 0.9 + 1e-6


def test_crf_loss_rewards_a_student_that_follows_the_object() -> None:
    # 64 px crops, logits at 16 px: the object is rows 4-12, cols 5-11 there; the box is larger.
    image = torch.zeros(2, 3, 64, 64)
    image[:, 2] = 1.0
    image[:, :, 16:48, 20:44] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    box = _box(2, 64, 8, 8, 56, 60)
    on_object = 6.0 * (2 * _box(1, 16, 4, 5, 12, 11) - 1)
    whole_box = 6.0 * (2 * _box(1, 16, 2, 2, 14, 15) - 1)
    student = torch.cat([on_object, whole_box])
    teacher = torch.cat([on_object, on_object])
    loss = crf_loss(student, teacher, image, box, num_iter=20)
    assert loss.shape == (2,)
    assert loss[0].item() < 0.01
    assert loss[1].item() > 0.2


def test_crf_loss_gradient_reaches_the_student_only_and_size_ratio_works() -> None:
    torch.manual_seed(0)
    student = torch.randn(3, 1, 8, 8, requires_grad=True)
    teacher = torch.randn(3, 1, 8, 8, requires_grad=True)
    image = torch.rand(3, 3, 32, 32)
    box = _box(3, 32, 4, 4, 28, 20)
    for ratio in (1.0, 2.0):
        loss = crf_loss(student, teacher, image, box, num_iter=10, size_ratio=ratio)
        assert loss.shape == (3,) and torch.isfinite(loss).all()
        loss.sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_ramp_is_a_linear_warm_up_from_zero() -> None:
    assert ramp(0, 1000, 4.0) == 0.0
    assert ramp(250, 1000, 4.0) == pytest.approx(1.0)
    assert ramp(1000, 1000, 4.0) == 4.0
    assert ramp(50_000, 1000, 4.0) == 4.0
    assert ramp(3, 0, 0.5) == 0.5


def test_loss_config_has_the_tao_defaults() -> None:
    defaults = dataclasses.asdict(LossConfig())
    assert defaults == {
        "loss_mil_weight": 4.0,
        "loss_mil_step": 1000,
        "loss_crf_weight": 0.5,
        "loss_crf_step": 4000,
        "crf_kernel_size": 3,
        "crf_zeta": 0.1,
        "crf_num_iter": 100,
        "crf_value_high_thres": 0.9,
        "crf_value_low_thres": 0.1,
        "crf_size_ratio": 1.0,
    }
    with pytest.raises(ValueError, match="crf_kernel_size 4"):
        LossConfig(crf_kernel_size=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LossConfig().crf_zeta = 1.0  # type: ignore[misc]


def test_mal_losses_combine_the_ramped_terms() -> None:
    torch.manual_seed(0)
    student = torch.randn(4, 1, 16, 16, requires_grad=True)
    teacher = torch.randn(4, 1, 16, 16)
    image = torch.rand(4, 3, 64, 64)
    box = _box(4, 64, 10, 6, 50, 60)
    out = mal_losses(student, teacher, image, box, step=500)
    assert out["weight_mil"] == pytest.approx(2.0) and out["weight_crf"] == pytest.approx(0.0625)
    expected_mil = mil_projection_loss(torch.sigmoid(student), box).mean()
    torch.testing.assert_close(out["raw_mil"], expected_mil.detach())
    torch.testing.assert_close(out["loss_mil"], 2.0 * expected_mil)
    torch.testing.assert_close(out["loss"], out["loss_mil"] + out["loss_crf"])
    torch.testing.assert_close(out["loss_crf"], 0.0625 * out["raw_crf"])
    assert out["loss"].ndim == 0
    out["loss"].backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    at_start = mal_losses(student, teacher, image, box, step=0)
    assert at_start["loss"].item() == 0.0 and at_start["raw_mil"].item() > 0.0


def test_the_mask_loss_learns_only_where_the_given_mask_is_sure():
    """A 16x16 target with a vertical edge at column 8: logits that disagree only on the outline columns (7, 8) cost
    the same as perfect ones; logits that disagree inside cost more; an unused crop adds nothing."""
    from mal.model.losses import mask_target_loss

    target = torch.zeros(2, 1, 16, 16)
    target[:, :, :, 8:] = 1.0
    perfect = (target * 2 - 1) * 8.0
    wrong_on_outline = perfect.clone()
    wrong_on_outline[:, :, :, 7:9] *= -1
    wrong_inside = perfect.clone()
    wrong_inside[:, :, :, 12:] *= -1
    used = torch.tensor([True, True])
    base = mask_target_loss(perfect, target, used)
    assert base < 1e-3
    assert torch.isclose(mask_target_loss(wrong_on_outline, target, used), base)
    assert mask_target_loss(wrong_inside, target, used) > 1.0
    # The target at crop resolution is resized to the logits' (here 4x finer target, same edge).
    fine = torch.nn.functional.interpolate(target, scale_factor=4, mode="nearest")
    assert torch.isclose(mask_target_loss(wrong_on_outline, fine, used), base)
    logits = wrong_inside.clone().requires_grad_(True)
    loss = mask_target_loss(logits, target, torch.tensor([False, False]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and logits.grad.abs().sum() == 0
