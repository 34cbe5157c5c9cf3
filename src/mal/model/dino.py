"""Self-distillation pretraining of the ViT backbone without labels (DINO, Caron et al., 2021), in pure torch.

A student (the `ViTBackbone` that `mal train` will load) and a teacher, its exponential moving average, each see a
different augmented view of every crop. Both map their [CLS] token through a small head to a distribution over
`prototypes` outputs; the student learns to predict the teacher's distribution of the other view. The teacher's
outputs are centred (a running mean is subtracted) and sharpened (a low temperature), which is what keeps the two
from collapsing to one output. Only the student's encoder weights are kept, under timm key names, so
`train.pretrained_model_path` reads them as it reads MAE's.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from mal.model.backbone import ViTBackbone


class ProjectionHead(nn.Module):
    """[CLS] features -> MLP -> L2-normalised bottleneck -> cosine scores against unit-norm prototypes."""

    def __init__(self, width: int, prototypes: int, hidden: int = 256, bottleneck: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) / math.sqrt(bottleneck))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(features), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class ViewAugment:
    """One random view per crop: a resized crop of 35-100 % of its area, a flip, colour jitter and grayscale (the
    changes DINO's global views use, without blur and solarisation, which cost too much on a CPU)."""

    def __init__(self, size: int) -> None:
        self.resized = v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True)
        self.colour = v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)
        self.gray = v2.RandomGrayscale(p=0.2)

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        views = torch.empty_like(crops)
        for index, crop in enumerate(crops):
            view = self.resized(crop)
            if torch.rand(()) < 0.5:
                view = view.flip(-1)
            views[index] = self.gray(self.colour(view))
        return views


class SelfDistillation(nn.Module):
    """Student + EMA teacher with projection heads: crops B x 3 x S x S in [0, 1] -> (loss,)."""

    def __init__(
        self,
        backbone: ViTBackbone,
        *,
        prototypes: int = 1024,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if not 0.0 < teacher_temperature < student_temperature:
            raise ValueError(
                f"the teacher's temperature {teacher_temperature} must be positive and below the student's "
                f"{student_temperature} (the teacher sharpens)"
            )
        self.backbone = backbone
        self.head = ProjectionHead(backbone.out_channels, prototypes)
        self.teacher = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, prototypes), persistent=False)
        self.augment = ViewAugment(backbone.crop_size)

    @staticmethod
    def cls_features(backbone: ViTBackbone, crops: torch.Tensor) -> torch.Tensor:
        x = (crops - backbone.pixel_mean.to(crops.dtype)) / backbone.pixel_std.to(crops.dtype)
        return backbone.vit.forward_features(x)[:, 0]

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor]:
        views = torch.cat([self.augment(crops), self.augment(crops)])
        student = self.head(self.cls_features(self.backbone, views)) / self.student_temperature
        with torch.no_grad():
            teacher_scores = self.teacher_head(self.cls_features(self.teacher, views))
            teacher = F.softmax((teacher_scores - self.center) / self.teacher_temperature, dim=-1)
        first, second = student.chunk(2)
        teacher_first, teacher_second = teacher.chunk(2)
        # Each view's student output predicts the teacher's output of the other view.
        loss = 0.5 * (
            -(teacher_second * F.log_softmax(first, dim=-1)).sum(-1).mean()
            - (teacher_first * F.log_softmax(second, dim=-1)).sum(-1).mean()
        )
        if self.training:
            with torch.no_grad():
                self.center.mul_(self.center_momentum).add_(teacher_scores.mean(0, keepdim=True),
                                                            alpha=1 - self.center_momentum)  # fmt: skip
        return (loss,)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher = momentum x teacher + (1 - momentum) x student, for the encoder and the head."""
        for student, teacher in ((self.backbone, self.teacher), (self.head, self.teacher_head)):
            for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
                t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The student encoder's weights under timm key names (what `train.pretrained_model_path` reads)."""
        return {key: value.detach().clone() for key, value in self.backbone.vit.state_dict().items()}


def teacher_momentum(step: int, total_steps: int, start: float = 0.996) -> float:
    """DINO's schedule: from `start` at step 0 to 1 at the last step along a half cosine."""
    if total_steps <= 1:
        return start
    return 1.0 - (1.0 - start) * (math.cos(math.pi * step / (total_steps - 1)) + 1) / 2
