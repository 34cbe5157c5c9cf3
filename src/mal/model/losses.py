"""MAL's box-supervised losses: the MIL box-projection loss and the mean-field (CRF) self-training loss.

Everything is vectorised over the batch and computed at the logits' resolution (crop/4); box masks and images
are resized to it. Per-sample functions return a tensor of shape (B,); `mal_losses` reduces over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


@dataclass(frozen=True)
class LossConfig:
    """Loss settings under their TAO names and defaults."""

    loss_mil_weight: float = 4.0
    loss_mil_step: int = 1000
    loss_crf_weight: float = 0.5
    loss_crf_step: int = 4000
    crf_kernel_size: int = 3
    crf_zeta: float = 0.1
    crf_num_iter: int = 100
    crf_value_high_thres: float = 0.9
    crf_value_low_thres: float = 0.1
    crf_size_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.crf_kernel_size < 3 or self.crf_kernel_size % 2 == 0:
            raise ValueError(f"crf_kernel_size {self.crf_kernel_size} must be an odd number of at least 3")
        if not 0.0 < self.crf_value_low_thres < 0.5 < self.crf_value_high_thres < 1.0:
            raise ValueError(
                f"CRF clamp range [{self.crf_value_low_thres}, {self.crf_value_high_thres}] must satisfy "
                "0 < low < 0.5 < high < 1"
            )
        if self.crf_zeta <= 0 or self.crf_size_ratio <= 0:
            raise ValueError(f"crf_zeta {self.crf_zeta} and crf_size_ratio {self.crf_size_ratio} must be positive")


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize B x C x H x W to `size`: area averaging when shrinking (no aliasing), bilinear when growing."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def dice_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - 2 sum(a b) / (sum a^2 + sum b^2 + eps) per sample (all dims but the first are summed)."""
    a, b = a.flatten(1), b.flatten(1)
    return 1.0 - 2.0 * (a * b).sum(1) / (a.square().sum(1) + b.square().sum(1) + eps)


def mil_projection_loss(probs: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
    """Dice of the max-over-rows projections plus dice of the max-over-columns projections, per sample.

    probs: B x 1 x H x W foreground probabilities; box_mask: B x 1 x h x w (resized to H x W).
    """
    box_mask = resize_to(box_mask.to(probs.dtype), tuple(probs.shape[-2:]))
    over_rows = dice_distance(probs.amax(dim=-2), box_mask.amax(dim=-2))
    over_columns = dice_distance(probs.amax(dim=-1), box_mask.amax(dim=-1))
    return over_rows + over_columns


def colour_affinity(image: torch.Tensor, kernel_size: int = 3, zeta: float = 0.1) -> torch.Tensor:
    """k_ij = exp(-sum_c (I_i - I_j)^2 / (2 zeta^2)) for the window around each pixel: B x k^2 x H*W.

    The centre and neighbours outside the image get 0, so they never vote.
    """
    batch, channels, height, width = image.shape
    window = kernel_size * kernel_size
    pad = kernel_size // 2
    neighbours = F.unfold(image, kernel_size, padding=pad).view(batch, channels, window, height * width)
    squared = (neighbours - image.view(batch, channels, 1, height * width)).square().sum(1)
    affinity = torch.exp(-squared / (2.0 * zeta * zeta))
    inside = F.unfold(image.new_ones(1, 1, height, width), kernel_size, padding=pad)
    inside[:, window // 2] = 0.0
    return affinity * inside


@torch.no_grad()
def mean_field_refine(
    image: torch.Tensor,
    q0: torch.Tensor,
    box_mask: torch.Tensor,
    kernel_size: int = 3,
    zeta: float = 0.1,
    num_iter: int = 100,
    low: float = 0.1,
    high: float = 0.9,
) -> torch.Tensor:
    """Two-label mean-field over a colour-affinity CRF; returns the refined foreground field B x 1 x H x W.

    Each update sets q_l(i) proportional to exp(sum_j k_ij log q_l(j)) for l in {fg, bg}, zeroes the foreground
    outside the box, renormalises and clamps to [low, high]. For two labels the renormalised update is a sigmoid
    of sum_j k_ij logit(q_j) (plus log box), so one unfold per iteration suffices. `image` is B x C x H x W in
    whatever colour space zeta was chosen for; q0 and box_mask are resized to it.
    """
    batch, _, height, width = image.shape
    size = (height, width)
    affinity = colour_affinity(image.float(), kernel_size, zeta)
    box = resize_to(box_mask.float(), size)
    log_box = box.clamp_min(0.0).log().view(batch, 1, height * width)  # -inf outside: foreground impossible
    q = (resize_to(q0.float(), size) * box).clamp(low, high)
    pad = kernel_size // 2
    for _ in range(num_iter):
        neighbour_logits = F.unfold(torch.logit(q), kernel_size, padding=pad)
        message = (neighbour_logits * affinity).sum(1, keepdim=True)
        q = torch.sigmoid(message + log_box).clamp(low, high).view(batch, 1, height, width)
    return q


def normalise_image(crops: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB crops -> ImageNet-normalised, the colour space in which crf_zeta = 0.1 was tuned."""
    mean = crops.new_tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = crops.new_tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (crops - mean) / std


def crf_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    image: torch.Tensor,
    box_mask: torch.Tensor,
    kernel_size: int = 3,
    zeta: float = 0.1,
    num_iter: int = 100,
    low: float = 0.1,
    high: float = 0.9,
    size_ratio: float = 1.0,
) -> torch.Tensor:
    """Dice between sigmoid(student) and the mean-field-refined pseudo mask, per sample.

    image: the [0, 1] RGB crops B x 3 x S x S the networks saw; the refinement runs on their ImageNet-normalised
    version at the logits' resolution times `size_ratio`. Gradients reach the student only.
    """
    height, width = student_logits.shape[-2:]
    size = (max(1, round(height * size_ratio)), max(1, round(width * size_ratio)))
    student = resize_to(student_logits.float(), size)
    box = resize_to(box_mask.float(), size)
    with torch.no_grad():
        teacher = resize_to(teacher_logits.float(), size)
        q0 = 0.5 * (torch.sigmoid(student) + torch.sigmoid(teacher)) * box
        colours = resize_to(normalise_image(image.float()), size)
        refined = mean_field_refine(colours, q0, box, kernel_size, zeta, num_iter, low, high)
        target = (refined > 0.5).float()
    return dice_distance(torch.sigmoid(student), target)


def ramp(step: int, ramp_steps: int, weight: float) -> float:
    """Linear warm-up of a loss weight: 0 at step 0, `weight` from `ramp_steps` on."""
    if ramp_steps <= 0:
        return float(weight)
    return float(weight) * min(max(step, 0) / ramp_steps, 1.0)


def mal_losses(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    image: torch.Tensor,
    box_mask: torch.Tensor,
    step: int,
    cfg: LossConfig | None = None,
) -> dict[str, torch.Tensor | float]:
    """MAL's training loss for a batch of crops.

    Returns `loss` (scalar to back-propagate) = `loss_mil` + `loss_crf`, each the batch mean already multiplied
    by its ramped weight (as TAO logs them); `raw_mil` / `raw_crf` the unweighted batch means (detached); and
    `weight_mil` / `weight_crf`, the ramped weights as floats.
    """
    cfg = cfg or LossConfig()
    # Losses run in float32 even under AMP: exp, log and sums over many pixels are fragile in half precision.
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        student_logits = student_logits.float()
        box = resize_to(box_mask.float(), tuple(student_logits.shape[-2:]))
        raw_mil = mil_projection_loss(torch.sigmoid(student_logits), box).mean()
        raw_crf = crf_loss(
            student_logits,
            teacher_logits.detach(),
            image,
            box_mask,
            kernel_size=cfg.crf_kernel_size,
            zeta=cfg.crf_zeta,
            num_iter=cfg.crf_num_iter,
            low=cfg.crf_value_low_thres,
            high=cfg.crf_value_high_thres,
            size_ratio=cfg.crf_size_ratio,
        ).mean()
    weight_mil = ramp(step, cfg.loss_mil_step, cfg.loss_mil_weight)
    weight_crf = ramp(step, cfg.loss_crf_step, cfg.loss_crf_weight)
    loss_mil = weight_mil * raw_mil
    loss_crf = weight_crf * raw_crf
    return {
        "loss": loss_mil + loss_crf,
        "loss_mil": loss_mil,
        "loss_crf": loss_crf,
        "raw_mil": raw_mil.detach(),
        "raw_crf": raw_crf.detach(),
        "weight_mil": weight_mil,
        "weight_crf": weight_crf,
    }


def mask_target_loss(logits: torch.Tensor, target: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against given masks (B x 1 x S x S in [0, 1], e.g. a first round's labels cropped like
    the images) on the pixels they are sure of: at the logits' resolution, pixels whose 3 x 3 neighbourhood is not
    (almost) all inside or all outside, which is the outline, are left out, and so are crops where `used` (B) is
    False. 0 when no pixel counts."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        resized = resize_to(target.float(), tuple(logits.shape[-2:]))
        local = F.avg_pool2d(resized, 3, stride=1, padding=1, count_include_pad=False)
        sure = ((local > 0.9) | (local < 0.1)) & used.to(logits.device).bool()[:, None, None, None]
        if not bool(sure.any()):
            return logits.sum() * 0.0
        per_pixel = F.binary_cross_entropy_with_logits(logits, (resized > 0.5).float(), reduction="none")
        return (per_pixel * sure).sum() / sure.sum()
