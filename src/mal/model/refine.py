"""Test-time refinement: the mean-field CRF of the training loss, run once more on each predicted mask.

Training already pulls the network towards mean-field-refined masks; at test time the same refinement, started
from the network's probabilities and run at a finer resolution on the crop's colours, snaps the mask boundary to
colour edges that the coarse (crop/4) output blurs. It runs after the network, so the PyTorch and ONNX Runtime
backends share it and the exported ONNX graph stays the bare network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mal.model.losses import mean_field_refine, normalise_image, resize_to

# Wider than the training clamp (0.1/0.9): the refinement should be able to turn a confident pixel around only
# with strong colour evidence, and a confident start should stay confident.
_LOW, _HIGH = 0.01, 0.99


@dataclass(frozen=True)
class CrfRefiner:
    """Mean-field refinement of foreground probabilities (the spec's inference.crf_refine_* keys)."""

    num_iter: int = 10
    size_ratio: float = 2.0
    kernel_size: int = 5
    zeta: float = 0.1

    def __post_init__(self) -> None:
        if self.num_iter < 1:
            raise ValueError(f"crf_refine_iter {self.num_iter} must be at least 1")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"crf_refine_kernel_size {self.kernel_size} must be an odd number of at least 3")
        if self.size_ratio <= 0 or self.zeta <= 0:
            raise ValueError(f"crf_refine_size_ratio {self.size_ratio} and crf_refine_zeta {self.zeta} must be > 0")

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor, crops: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        """probs B x 1 x h x w, crops B x 3 x S x S in [0, 1], box_mask B x 1 x S x S -> refined B x 1 x h x w.

        The refinement runs at `size_ratio` x (h, w), capped at the crop size, and comes back to (h, w).
        """
        out_size = tuple(probs.shape[-2:])
        size = tuple(min(max(1, round(side * self.size_ratio)), crop_side)
                     for side, crop_side in zip(out_size, crops.shape[-2:]))
        colours = resize_to(normalise_image(crops.float()), size)
        refined = mean_field_refine(colours, probs.float(), box_mask.float(), self.kernel_size, self.zeta,
                                    self.num_iter, _LOW, _HIGH)
        return resize_to(refined, out_size).to(probs.dtype)
