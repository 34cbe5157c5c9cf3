"""Box expansion, crop-and-resize, box masks and the training augmentation."""

from __future__ import annotations

import torch

from mal.data.augment import TrainAugment, gaussian_blur_each
from mal.data.crops import box_masks, crop_and_resize, expand_boxes

BOXES = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 100.0], [5.5, 6.5, 7.0, 9.0]])


def extents(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[:, 2:] - boxes[:, :2]


def test_test_margin_gives_exactly_1_3x_centred():
    crops = expand_boxes(BOXES, (0.6, 0.6))
    torch.testing.assert_close(extents(crops), 1.3 * extents(BOXES))
    torch.testing.assert_close(crops[:, :2] + crops[:, 2:], BOXES[:, :2] + BOXES[:, 2:])  # same centre
    torch.testing.assert_close(expand_boxes(BOXES, (0.0, 0.0)), BOXES)


def test_random_margins_stay_within_1_to_1_6x_and_contain_the_box():
    boxes = BOXES.repeat(2000, 1)
    crops = expand_boxes(boxes, (0.0, 1.2), generator=torch.Generator().manual_seed(0))
    ratio = extents(crops) / extents(boxes)
    assert ratio.min() >= 1.0 and ratio.max() <= 1.6
    assert ratio.min() < 1.02 and ratio.max() > 1.58  # the whole range is used
    assert (crops[:, :2] <= boxes[:, :2]).all() and (crops[:, 2:] >= boxes[:, 2:]).all()
    left_share = (boxes[:, 0] - crops[:, 0]) / (crops[:, 2] - crops[:, 0] - extents(boxes)[:, 0]).clamp_min(1e-6)
    assert left_share.min() < 0.05 and left_share.max() > 0.95  # the gate splits the margin unevenly
    again = expand_boxes(boxes, (0.0, 1.2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(crops, again)


def test_crop_of_the_whole_image_at_its_size_is_the_image():
    image = torch.rand(3, 16, 16)
    crop = crop_and_resize(image, torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 16)
    torch.testing.assert_close(crop[0], image)


def test_uint8_images_are_scaled_and_resized_crops_keep_content():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    image[0, 9:21, 9:31] = 255  # a red rectangle one pixel larger than the crop on every side
    crop = crop_and_resize(image, torch.tensor([[10.0, 10.0, 30.0, 20.0]]), 8)
    torch.testing.assert_close(crop[0, 0], torch.ones(8, 8))
    assert crop[0, 1:].abs().max() == 0
    shifted = crop_and_resize(image, torch.tensor([[30.0, 10.0, 40.0, 20.0]]), 8)
    assert shifted[0, 0, :, 2:].max() == 0  # beyond the rectangle's right edge


def test_outside_the_image_is_zero_padded():
    image = torch.ones(3, 32, 32)
    crop = crop_and_resize(image, torch.tensor([[-32.0, -16.0, 32.0, 48.0]]), 64)[0]
    assert crop[:, :, :30].abs().max() == 0  # left of the image
    assert crop[:, :14, :].abs().max() == 0 and crop[:, 50:, :].abs().max() == 0  # above and below
    torch.testing.assert_close(crop[:, 18:46, 34:], torch.ones(3, 28, 30))


def test_batched_images_with_box_lists():
    images = torch.stack([torch.zeros(3, 10, 10), torch.ones(3, 10, 10)])
    crops = crop_and_resize(images, [torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([[2.0, 2.0, 8.0, 8.0]] * 2)], 4)
    assert crops.shape == (3, 3, 4, 4)
    assert crops[0].max() == 0 and crops[1:].min() == 1


def test_box_mask_marks_the_box_inside_its_crop():
    mask = box_masks(torch.tensor([[10.0, 10.0, 20.0, 30.0]]), torch.tensor([[0.0, 0.0, 40.0, 40.0]]), 40)
    assert mask.shape == (1, 1, 40, 40)
    expected = torch.zeros(40, 40)
    expected[10:30, 10:20] = 1
    torch.testing.assert_close(mask[0, 0], expected)
    centred = box_masks(BOXES, expand_boxes(BOXES, (0.6, 0.6)), 26)
    # 1.3x crop of 26 px: the box covers the middle 20 pixels on each axis.
    expected = torch.zeros(26, 26)
    expected[3:23, 3:23] = 1
    for index in range(len(BOXES)):
        torch.testing.assert_close(centred[index, 0], expected)


def test_flip_keeps_both_views_and_the_mask_aligned():
    size = 24
    boxes = torch.tensor([[2.0, 4.0, 10.0, 20.0]]).repeat(32, 1)
    masks = box_masks(boxes, torch.tensor([[0.0, 0.0, 24.0, 24.0]]).repeat(32, 1), size)
    crops = masks.repeat(1, 3, 1, 1)  # the image shows exactly its box
    out = TrainAugment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)(crops, masks, seed=3)
    flipped = out["flipped"]
    assert 0 < flipped.sum() < 32
    torch.testing.assert_close(out["image"][:, :1], out["box_mask"])
    torch.testing.assert_close(out["image_aug"][:, :1], out["box_mask"])
    torch.testing.assert_close(out["box_mask"][flipped], masks[flipped].flip(-1))
    torch.testing.assert_close(out["box_mask"][~flipped], masks[~flipped])


def test_student_view_alone_gets_colour_changes_and_is_repeatable():
    torch.manual_seed(0)
    crops = torch.rand(64, 3, 16, 16)
    masks = torch.ones(64, 1, 16, 16)
    augment = TrainAugment()
    out = augment(crops, masks, seed=11)
    flipped = out["flipped"][:, None, None, None]
    torch.testing.assert_close(out["image"], torch.where(flipped, crops.flip(-1), crops))  # teacher: flip only
    changed = (out["image_aug"] - out["image"]).abs().flatten(1).amax(1) > 1e-4
    assert 0.4 < changed.float().mean() < 1.0
    assert out["image_aug"].min() >= 0 and out["image_aug"].max() <= 1
    again = augment(crops, masks, seed=11)
    torch.testing.assert_close(out["image_aug"], again["image_aug"])
    assert not torch.equal(augment(crops, masks, seed=12)["image_aug"], out["image_aug"])


def test_blur_uses_each_crops_sigma_and_keeps_constants():
    constant = torch.full((2, 3, 20, 20), 0.25)
    torch.testing.assert_close(gaussian_blur_each(constant, torch.tensor([0.5, 2.0])), constant)
    impulse = torch.zeros(2, 3, 21, 21)
    impulse[:, :, 10, 10] = 1
    blurred = gaussian_blur_each(impulse, torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(blurred.sum(dim=(2, 3)), torch.ones(2, 3))
    assert blurred[0, 0, 10, 10] > 2 * blurred[1, 0, 10, 10]
