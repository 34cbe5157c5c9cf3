"""The MAL network and its losses: pure torch + timm, no Lightning, no file I/O, plain arguments only."""

from mal.model.backbone import ARCHS, ViTArch, ViTBackbone, build_backbone
from mal.model.heads import InstanceHead, MaskHead
from mal.model.losses import (
    LossConfig,
    crf_loss,
    dice_distance,
    mal_losses,
    mean_field_refine,
    mil_projection_loss,
    ramp,
)
from mal.model.mal import MaskNet, MeanTeacher, build_masknet
from mal.model.pretrained import LoadReport, map_backbone_state_dict

__all__ = [
    "ARCHS",
    "InstanceHead",
    "LoadReport",
    "LossConfig",
    "MaskHead",
    "MaskNet",
    "MeanTeacher",
    "ViTArch",
    "ViTBackbone",
    "build_backbone",
    "build_masknet",
    "crf_loss",
    "dice_distance",
    "mal_losses",
    "map_backbone_state_dict",
    "mean_field_refine",
    "mil_projection_loss",
    "ramp",
]
