"""Map foreign ViT state dicts (official MAE, timm, prefixed wrappers) onto a `ViTBackbone`.

Pure: a state dict in, a state dict plus a report out. Reading files is `mal.weights`' job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from mal.model.backbone import ViTBackbone

# Containers that wrap the weights: MAE saves {"model": sd}, Lightning {"state_dict": sd}.
_WRAPPER_KEYS = ("state_dict", "model", "module")
# Prefixes that wrappers (DDP, Lightning modules, our MaskNet, encoder-decoder models) put before the ViT keys.
_KEY_PREFIXES = ("module.", "model.", "student.", "backbone.", "encoder.", "vit.")
# Keys that belong to parts a backbone never has: the MAE decoder, its mask token, classifier heads.
_IRRELEVANT_PREFIXES = ("decoder", "mask_token", "head.", "head_drop.", "fc_norm.")


@dataclass
class LoadReport:
    """What `map_backbone_state_dict` did, key by key (names are the backbone's, or the checkpoint's)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} backbone tensors loaded, {len(self.missing)} missing, "
            f"{len(self.mismatched)} with mismatched shapes, {len(self.unexpected)} unexpected, "
            f"{len(self.skipped)} skipped (decoder/head)"
        )


def unwrap_state_dict(obj: object) -> Mapping[str, object] | None:
    """Descend through wrapper containers to the mapping that holds tensors; None if there is none."""
    while isinstance(obj, Mapping):
        if any(isinstance(value, torch.Tensor) for value in obj.values()):
            return obj
        inner = next((obj[key] for key in _WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            return None
        obj = inner
    return None


def _strip_prefixes(key: str, targets: Mapping[str, torch.Tensor]) -> str:
    while key not in targets:
        prefix = next((p for p in _KEY_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            break
        key = key[len(prefix) :]
    return key


def _square_side(tokens: int) -> int | None:
    side = math.isqrt(tokens)
    return side if side > 0 and side * side == tokens else None


def _fit_pos_embed(
    source: torch.Tensor, target: torch.Tensor, num_prefix: int, report: LoadReport
) -> torch.Tensor | None:
    """Resize a (1, prefix + n*n, C) position embedding to the target grid, keeping the class-token slot apart."""
    if source.ndim != 3 or source.shape[-1] != target.shape[-1]:
        return None
    target_side = _square_side(target.shape[1] - num_prefix)
    if (source_side := _square_side(source.shape[1] - num_prefix)) is not None:
        source_prefix = num_prefix
    elif (source_side := _square_side(source.shape[1])) is not None:
        source_prefix = 0
    else:
        return None
    if target_side is None:
        return None
    # Plain bicubic when growing (as MAE fine-tuning does); antialiasing only matters when shrinking the grid.
    resized = resample_abs_pos_embed(
        source.float(),
        new_size=[target_side, target_side],
        old_size=[source_side, source_side],
        num_prefix_tokens=source_prefix,
        interpolation="bicubic",
        antialias=target_side < source_side,
    )
    if source_side != target_side:
        report.notes.append(
            f"pos_embed resized from a {source_side}x{source_side} to a {target_side}x{target_side} grid"
        )
    if source_prefix < num_prefix:
        # The checkpoint had no class-token slot (timm no_embed_class layout); the class token's own
        # embedding already carries its position, so a zero offset is the neutral choice.
        resized = torch.cat([resized.new_zeros(1, num_prefix - source_prefix, resized.shape[-1]), resized], dim=1)
        report.notes.append("pos_embed had no class-token slot; that slot was set to zero")
    return resized.to(target.dtype)


def _fit_patch_embed(source: torch.Tensor, target: torch.Tensor, report: LoadReport) -> torch.Tensor | None:
    """Resample a patch-projection kernel to another patch size (FlexiViT pseudo-inverse) when only that differs."""
    if source.ndim != 4 or source.shape[:2] != target.shape[:2] or source.shape[-1] != source.shape[-2]:
        return None
    resized = resample_patch_embed(source.float(), new_size=list(target.shape[-2:]))
    report.notes.append(f"patch_embed.proj.weight resampled from {source.shape[-1]}px to {target.shape[-1]}px patches")
    return resized.to(target.dtype)


def map_backbone_state_dict(
    state_dict: Mapping[str, object], backbone: ViTBackbone
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map a MAE / timm / prefixed ViT state dict onto `backbone`.

    Returns the state dict to pass to `backbone.load_state_dict(mapped, strict=False)` (keys are the backbone's
    own, `vit.`-prefixed) and a `LoadReport`. Position embeddings are resized to the crop grid; patch kernels are
    resampled when only the patch size differs; any other shape mismatch is reported, not loaded.
    """
    report = LoadReport()
    weights = unwrap_state_dict(state_dict)
    if weights is None:
        report.notes.append("no tensors found in the checkpoint")
        report.missing = [f"vit.{key}" for key in backbone.vit.state_dict()]
        return {}, report
    targets = backbone.vit.state_dict()
    num_prefix = backbone.vit.num_prefix_tokens
    mapped: dict[str, torch.Tensor] = {}
    for source_key, value in weights.items():
        key = _strip_prefixes(source_key, targets)
        if key.startswith(_IRRELEVANT_PREFIXES):
            report.skipped.append(source_key)
            continue
        if not isinstance(value, torch.Tensor) or key not in targets or f"vit.{key}" in mapped:
            report.unexpected.append(source_key)
            continue
        target = targets[key]
        tensor: torch.Tensor | None = value
        if value.shape != target.shape:
            if key == "pos_embed":
                tensor = _fit_pos_embed(value, target, num_prefix, report)
            elif key == "patch_embed.proj.weight":
                tensor = _fit_patch_embed(value, target, report)
            else:
                tensor = None
        if tensor is None:
            report.mismatched.append(f"{source_key}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        mapped[f"vit.{key}"] = tensor.detach().to(target.dtype)
        report.loaded.append(f"vit.{key}")
    report.missing = [f"vit.{key}" for key in targets if f"vit.{key}" not in mapped]
    return mapped, report
