"""The MAL network (backbone + instance head + mask head) and its mean teacher."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from mal.model.backbone import ViTBackbone, build_backbone
from mal.model.heads import InstanceHead, MaskHead

OUTPUT_STRIDE = 4


class MaskNet(nn.Module):
    """Crops B x 3 x S x S in [0, 1] -> mask logits B x 1 x S/4 x S/4.

    The logit at each pixel is the dot product of the crop's instance vector K with the pixel feature V there.
    """

    def __init__(self, backbone: ViTBackbone, instance_head: InstanceHead, mask_head: MaskHead) -> None:
        super().__init__()
        if instance_head.out_channels != mask_head.out_channels:
            raise ValueError(
                f"instance head width {instance_head.out_channels} must equal mask head width "
                f"{mask_head.out_channels} for their dot product"
            )
        self.backbone = backbone
        self.instance_head = instance_head
        self.mask_head = mask_head
        # Sizes are fixed by the crop size (the backbone accepts only that), so they are plain ints here: no
        # shape arithmetic on tensors in forward, which keeps ONNX tracing exact.
        self.output_size = backbone.crop_size // OUTPUT_STRIDE
        self._head_size = math.floor(2 * backbone.grid_size * mask_head.scale_ratio)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        features = self.backbone(crops)
        instance = self.instance_head(features)
        pixels = self.mask_head(features)
        logits = torch.einsum("bc,bchw->bhw", instance, pixels).unsqueeze(1)
        if self._head_size != self.output_size:
            # Patch sizes other than 16 (e.g. 14) land on another grid; the dot product is linear, so resizing
            # the 1-channel logits equals resizing the pixel features first, and is far cheaper.
            logits = F.interpolate(
                logits, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False
            )
        return logits


def build_masknet(
    arch: str,
    crop_size: int,
    *,
    mask_head_num_convs: int = 4,
    mask_head_hidden_channel: int = 256,
    mask_head_out_channel: int = 256,
    mask_scale_ratio: float = 2.0,
    drop_path_rate: float = 0.0,
    frozen_stages: int = -1,
    grad_checkpointing: bool = False,
) -> MaskNet:
    """Build a randomly initialised MaskNet for `arch` (a name in `mal.model.ARCHS`) and `crop_size` crops."""
    backbone = build_backbone(arch, crop_size, drop_path_rate=drop_path_rate, frozen_stages=frozen_stages,
                              grad_checkpointing=grad_checkpointing)
    instance_head = InstanceHead(backbone.out_channels, out_channels=mask_head_out_channel)
    mask_head = MaskHead(
        backbone.out_channels,
        hidden_channels=mask_head_hidden_channel,
        out_channels=mask_head_out_channel,
        num_convs=mask_head_num_convs,
        scale_ratio=mask_scale_ratio,
    )
    return MaskNet(backbone, instance_head, mask_head)


class MeanTeacher(nn.Module):
    """A student and its EMA teacher; the teacher starts as an exact copy and never receives gradients."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> MeanTeacher:
        super().train(mode)
        self.teacher.eval()  # the teacher always predicts deterministically (no dropout, no drop-path)
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s for every parameter and floating buffer, in place."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"teacher momentum {momentum} must be in [0, 1]")
        teacher_params = list(self.teacher.parameters())
        student_params = list(self.student.parameters())
        # lerp computes t + (1 - m)(s - t): the same average, and exact where teacher and student already agree.
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        float_pairs = []
        for teacher_buffer, student_buffer in zip(self.teacher.buffers(), self.student.buffers()):
            if teacher_buffer.is_floating_point():
                float_pairs.append((teacher_buffer, student_buffer))
            else:
                teacher_buffer.copy_(student_buffer)  # counters cannot be averaged
        if float_pairs:
            teachers, students = zip(*float_pairs)
            torch._foreach_lerp_(list(teachers), list(students), 1.0 - momentum)
