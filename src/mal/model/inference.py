"""The network as it labels: test-time options (teacher/student/average, flip) folded into one module.

Validation, `mal inference` and the ONNX export all run this module, so the three agree by construction.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = 1e-6


class InferenceNet(nn.Module):
    """Crops B x 3 x S x S in [0, 1] -> mask logits B x 1 x S/4 x S/4 of the averaged probabilities."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        use_teacher: bool = True,
        use_mixed: bool = False,
        use_flip: bool = False,
    ) -> None:
        super().__init__()
        if use_mixed:
            self.nets = nn.ModuleList([student, teacher])
        else:
            self.nets = nn.ModuleList([teacher if use_teacher else student])
        self.use_flip = use_flip

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        probs = []
        for net in self.nets:
            probs.append(torch.sigmoid(net(crops)))
            if self.use_flip:
                probs.append(torch.sigmoid(net(crops.flip(-1))).flip(-1))
        mean = torch.stack(probs).mean(0) if len(probs) > 1 else probs[0]
        return torch.logit(mean.clamp(_EPS, 1.0 - _EPS))
