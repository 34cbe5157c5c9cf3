"""Per-mask quality: an estimate of each label's IoU with the true mask, from what labeling already computed.

`score` (the mean probability inside the mask) hardly ranks masks: the network is about as confident on a
box-shaped mask of a fork as on a good mask of a car. This estimate combines cues that do follow the true IoU,
all taken from the crop, its box mask, the final probabilities and the boxes of the same image (no network
internals, so the PyTorch and ONNX Runtime backends get the same estimate, and no extra forward pass):

- how well the soft mask boundary follows colour edges (edge alignment, and the colour-affinity energy across it);
- how different the mask's colours are from the rest of the box and from the surroundings outside the box;
- how smooth the probabilities inside the box are, and how they fall from its centre and the middles of its sides
  to its corners (an object rarely fills the corners of its box; a box-shaped mask does);
- whether the mask reaches across the box (the MIL constraint: a true object touches every row and column);
- how much of the box looks like the object rather than like the surroundings (nearest colours);
- how much the box overlaps another box of the image (occluded objects have partial masks).

A logistic model maps the standardised cues to a value in [0, 1]; its constants were fitted once on the presets'
labels of coco128_dev and dsb2018_dev against the true IoU (docs/QUALITY.md, "Which masks to check first").
Cues that looked useful but were left out, with their Spearman correlation with IoU (natural images / nuclei):
flip agreement (+0.08 / -0.51, and it doubles the network cost), teacher-student agreement (+0.04 / +0.47, not
available from an exported model), the share of its box the mask fills (+0.05 / +0.16).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mal.data.coco_boxes import CocoBoxes

GRID = 16
"""Side of the box-frame grid the probabilities and colours are resampled to: one size for every box."""

FEATURES = (
    "score", "gradient", "centre", "corners", "side_middles", "contrast", "ring_contrast", "cover",
    "box_overlap", "edge_alignment", "boundary_energy", "colour_fill",
)

# Fitted by logistic regression of the true IoU (the target, in [0, 1]) on the standardised features, each dataset
# weighted equally, L2 0.01: the labels `benchmarks/quality.py` makes with the shipped presets, cpu-natural on
# coco128_dev (423 masks) and cpu-nuclei on dsb2018_dev (21,405 masks). Cross-validated by image, the fitted
# estimate ranks with Spearman 0.59 (coco128_dev) and 0.78 (dsb2018_dev); fitted on one dataset alone it gives
# 0.71 on nuclei (fitted on natural images) and 0.52 on natural images (fitted on nuclei). docs/QUALITY.md,
# "Which masks to check first", has the commands; benchmarks/quality_estimate_fit.py refits them (it reproduces
# these constants from those two work folders) when a preset changes.
_MEAN = np.array([0.8871, 0.1025, 0.9567, 0.306, 0.5784, 0.9254, 0.9579, 0.9766, 0.0735, 0.4095, -3.0085, 0.5556])
_SCALE = np.array([0.0438, 0.0206, 0.0571, 0.1399, 0.1175, 0.8222, 0.9013, 0.0434, 0.1307, 0.2381, 0.1723, 0.1002])
_WEIGHTS = np.array([-0.0846, -0.2014, 0.0926, -0.1915, 0.101, 0.172, 0.1354, 0.1171, -0.2343, 0.1663, 0.0239, 0.117])
_BIAS = 1.2282

# Colour affinity bandwidth (squared RGB distance, colours in [0, 1]) of the boundary energy.
_AFFINITY_BANDWIDTH = 0.1
_EPS = 1e-6


# ------------------------------------------------------------------------------------------------ box overlap
def largest_overlap(boxes_xyxy: np.ndarray, others_xyxy: np.ndarray, same: np.ndarray | None = None) -> np.ndarray:
    """For each box, the largest IoU with a box of `others` (N x 4 and M x 4 xyxy); `same[i]` is the index in
    `others` of box i itself (left out), or -1. 0 when there is no other box."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    others = np.asarray(others_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros(len(boxes))
    width = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    height = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_b = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, _EPS)
    if same is not None:
        own = np.asarray(same, dtype=np.int64).reshape(-1)
        valid = own >= 0
        iou[np.flatnonzero(valid), own[valid]] = 0.0
    return iou.max(axis=1)


def image_box_overlap(coco: CocoBoxes, rows: np.ndarray) -> np.ndarray:
    """For each annotation row, the largest IoU of its box with another box of its image (all of the image's
    boxes, wherever the labeling batches cut the image)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    result = np.zeros(len(rows))
    image_ids = coco.image_ids[rows]
    for image_id in np.unique(image_ids):
        where = np.flatnonzero(image_ids == image_id)
        image_rows = np.asarray(coco.boxes_by_image[int(image_id)], dtype=np.int64)
        position = {int(row): index for index, row in enumerate(image_rows.tolist())}
        same = np.asarray([position.get(int(row), -1) for row in rows[where]], dtype=np.int64)
        result[where] = largest_overlap(coco.boxes_xyxy[rows[where]], coco.boxes_xyxy[image_rows], same)
    return result


def batch_box_overlap(boxes_xyxy: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """`image_box_overlap` among the boxes at hand only (for batches that do not carry it)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    ids = np.asarray(image_ids).reshape(-1)
    result = np.zeros(len(boxes))
    for image_id in np.unique(ids):
        where = np.flatnonzero(ids == image_id)
        result[where] = largest_overlap(boxes[where], boxes[where], np.arange(len(where)))
    return result


# ------------------------------------------------------------------------------------------------ features
def _box_frame(maps: torch.Tensor, crop_boxes: torch.Tensor, boxes: torch.Tensor, size: int = GRID) -> torch.Tensor:
    """Resample N x C x h x w maps over each crop's region onto a size x size grid covering only its box."""
    crop_boxes = crop_boxes.to(maps.device, torch.float32)
    boxes = boxes.to(maps.device, torch.float32)
    steps = (torch.arange(size, device=maps.device, dtype=torch.float32) + 0.5) / size
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    crop_w = (crop_boxes[:, 2:3] - crop_boxes[:, 0:1]).clamp_min(_EPS)
    crop_h = (crop_boxes[:, 3:4] - crop_boxes[:, 1:2]).clamp_min(_EPS)
    grid_x = (xs - crop_boxes[:, 0:1]) / crop_w * 2 - 1
    grid_y = (ys - crop_boxes[:, 1:2]) / crop_h * 2 - 1
    grid = torch.stack([grid_x[:, None, :].expand(-1, size, -1), grid_y[:, :, None].expand(-1, -1, size)], dim=-1)
    return F.grid_sample(maps.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def _mean_abs_step(maps: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertical and horizontal neighbours of N x h x w maps."""
    vertical = (maps[:, 1:, :] - maps[:, :-1, :]).abs().mean((1, 2))
    horizontal = (maps[:, :, 1:] - maps[:, :, :-1]).abs().mean((1, 2))
    return 0.5 * (vertical + horizontal)


def _profile(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean probability at the box's centre (its middle half), its four corners and the middles of its sides.

    An object touches the middle of every side of its box but rarely fills the corners; a box-shaped mask does.
    """
    size = frame.shape[-1]
    quarter, band, corner = size // 4, max(size // 8, 1), max(size * 3 // 16, 1)
    index = torch.arange(size, device=frame.device)
    near_y = (index < corner) | (index >= size - corner)
    corners = near_y[:, None] & near_y[None, :]
    edge = (index < band) | (index >= size - band)
    sides = (edge[:, None] | edge[None, :]) & ~corners
    centre = frame[:, quarter : size - quarter, quarter : size - quarter].mean((1, 2))
    return centre, frame[:, corners].mean(1), frame[:, sides].mean(1)


def _colour_contrasts(colours: torch.Tensor, mask: torch.Tensor, ring_colours: torch.Tensor,
                      ring: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fisher ratio of the mask's colours against the rest of the box, and against the crop outside the box."""
    inside = mask[:, None]
    count_in = inside.sum((2, 3)).clamp_min(1)
    count_out = (1 - inside).sum((2, 3)).clamp_min(1)
    mean_in = (colours * inside).sum((2, 3)) / count_in
    mean_out = (colours * (1 - inside)).sum((2, 3)) / count_out
    var_in = ((colours - mean_in[..., None, None]) ** 2 * inside).sum((2, 3)) / count_in
    var_out = ((colours - mean_out[..., None, None]) ** 2 * (1 - inside)).sum((2, 3)) / count_out
    both = (inside.sum((1, 2, 3)) > 0) & ((1 - inside).sum((1, 2, 3)) > 0)
    contrast = ((mean_in - mean_out) ** 2).sum(1) / (var_in + var_out).sum(1).clamp_min(1e-4)
    contrast = torch.where(both, contrast, torch.zeros_like(contrast))
    ring_count = ring.sum((2, 3)).clamp_min(1)
    mean_ring = (ring_colours * ring).sum((2, 3)) / ring_count
    var_ring = ((ring_colours - mean_ring[..., None, None]) ** 2 * ring).sum((2, 3)) / ring_count
    ring_contrast = ((mean_in - mean_ring) ** 2).sum(1) / (var_in.sum(1) + var_ring.sum(1)).clamp_min(1e-4)
    return torch.log1p(contrast), torch.log1p(ring_contrast)


def _boundary_cues(crops: torch.Tensor, box_masks: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """At half the crop's resolution, inside the box: how much more colour changes across the soft mask boundary
    than on average (edge alignment), and the colour affinity summed across it per pixel (boundary energy)."""
    side = max(crops.shape[-1] // 2, 2)
    colours = F.interpolate(crops.float(), size=(side, side), mode="area")
    box = (F.interpolate(box_masks.float(), size=(side, side), mode="area") > 0.5).float()[:, 0]
    field = F.interpolate(probs[:, None].float(), size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    zero = torch.zeros(len(crops), device=crops.device)
    crossing, change, pairs, energy, distances = zero, zero, zero, zero, zero
    for dim in (1, 2):
        step = (colours.narrow(dim + 1, 1, side - 1) - colours.narrow(dim + 1, 0, side - 1)).pow(2).sum(1)
        distance = step.sqrt()
        jump = (field.narrow(dim, 1, side - 1) - field.narrow(dim, 0, side - 1)).abs()
        both_in = box.narrow(dim, 1, side - 1) * box.narrow(dim, 0, side - 1)
        crossing = crossing + (distance * jump * both_in).sum((1, 2))
        change = change + (jump * both_in).sum((1, 2))
        distances = distances + (distance * both_in).sum((1, 2))
        pairs = pairs + both_in.sum((1, 2))
        energy = energy + (torch.exp(-step / _AFFINITY_BANDWIDTH) * jump * both_in).sum((1, 2))
    average = distances / pairs.clamp_min(1)
    alignment = (crossing / change.clamp_min(1e-4)) / average.clamp_min(1e-4)
    return torch.log(alignment + 1e-3), torch.log(energy / pairs.clamp_min(1) + 1e-4)


def _colour_fill(box_colours: torch.Tensor, crops: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
    """Share of the box whose nearest colour among the box's centre is closer than among the crop outside the box:
    how much of the box looks like the object rather than like its surroundings."""
    count = len(crops)
    side = max(crops.shape[-1] // 4, 2)
    around = F.interpolate(crops.float(), size=(side, side), mode="area").flatten(2).transpose(1, 2)
    outside = F.interpolate(box_masks.float(), size=(side, side), mode="area").flatten(1) < 0.5
    quarter = GRID // 4
    centre = box_colours[:, :, quarter : GRID - quarter, quarter : GRID - quarter].flatten(2).transpose(1, 2)
    pixels = box_colours.flatten(2).transpose(1, 2)
    to_outside = torch.cdist(pixels, around).masked_fill(~outside[:, None, :], float("inf")).amin(2)
    to_centre = torch.cdist(pixels, centre).amin(2)
    return (to_centre < to_outside).float().mean(1).reshape(count)


def instance_features(crops: torch.Tensor, box_masks: torch.Tensor, probs: torch.Tensor, crop_boxes: torch.Tensor,
                      boxes: torch.Tensor, thresholds: np.ndarray, box_overlap: np.ndarray) -> torch.Tensor:
    """N x len(FEATURES) cues of N labeled crops.

    crops: N x 3 x S x S in [0, 1]; box_masks: N x 1 x S x S (1 inside the box); probs: N x h x w final
    foreground probabilities (after any test-time refinement: what the mask is cut from); crop_boxes and boxes:
    N x 4 xyxy image pixels; thresholds: each mask's cut; box_overlap: each box's largest IoU with another box of
    its image (`image_box_overlap`).
    """
    count = len(crops)
    device = crops.device
    frame = _box_frame(probs[:, None].to(device), crop_boxes, boxes)[:, 0]
    cut = torch.as_tensor(np.asarray(thresholds, dtype=np.float32).reshape(-1), device=device)
    mask = (frame > cut[:, None, None]).float()
    area = mask.sum((1, 2))
    score = torch.where(area > 0, (frame * mask).sum((1, 2)) / area.clamp_min(1), torch.zeros_like(area))
    centre, corners, side_middles = _profile(frame)
    cover = torch.minimum(mask.amax(2).mean(1), mask.amax(1).mean(1))
    box_colours = _box_frame(crops, crop_boxes, boxes)
    ring = 1 - box_masks.float()
    contrast, ring_contrast = _colour_contrasts(box_colours, mask, crops.float(), ring)
    alignment, energy = _boundary_cues(crops, box_masks.to(device), probs.to(device))
    overlap = torch.as_tensor(np.asarray(box_overlap, dtype=np.float32).reshape(-1), device=device)
    columns = {
        "score": score,
        "gradient": _mean_abs_step(frame),
        "centre": centre,
        "corners": corners,
        "side_middles": side_middles,
        "contrast": contrast,
        "ring_contrast": ring_contrast,
        "cover": cover,
        "box_overlap": overlap,
        "edge_alignment": alignment,
        "boundary_energy": energy,
        "colour_fill": _colour_fill(box_colours, crops, box_masks.to(device)),
    }
    return torch.stack([columns[name].reshape(count).float() for name in FEATURES], dim=1)


def quality_from_features(features: np.ndarray | torch.Tensor) -> np.ndarray:
    """The fitted logistic model: N x len(FEATURES) cues -> N estimates of the mask's IoU, in [0, 1]."""
    values = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                        dtype=np.float64).reshape(-1, len(FEATURES))
    logits = _BIAS + ((values - _MEAN) / _SCALE) @ _WEIGHTS
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))


def estimate_quality(crops: torch.Tensor, box_masks: torch.Tensor, probs: torch.Tensor, crop_boxes: torch.Tensor,
                     boxes: torch.Tensor, thresholds: np.ndarray, box_overlap: np.ndarray) -> np.ndarray:
    """Estimated IoU with the true mask, in [0, 1], of each of N labeled crops (see `instance_features`)."""
    if len(crops) == 0:
        return np.zeros(0)
    with torch.inference_mode():
        features = instance_features(crops, box_masks, probs, crop_boxes, boxes, thresholds, box_overlap)
    return quality_from_features(features)
